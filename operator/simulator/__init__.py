"""The Blooio simulator: a stateful, fault-injectable stand-in for the V4 webhooks API.

Used by the tests, by ``blooio-operator dev`` and by users testing their receivers.
It deliberately imports nothing from the client (``blooio_operator.blooio``) or the
models: two independent implementations, each held against the provider's OpenAPI
file, catch each other's mistakes.

Modules: :mod:`.server` (``Simulator``, HTTP handlers, admin API), :mod:`.state`
(records, ids, cursors), :mod:`.validation` (422 rules, event catalogue),
:mod:`.faults` (fault injection), :mod:`.signing` (``X-Blooio-Signature``),
:mod:`.admin` (sync admin client), :mod:`.cli` (process entry point),
:mod:`.openapi` (conformance helpers; needs the dev dependencies).
"""

from .admin import SimulatorAdmin, SimulatorAdminError
from .faults import ENDPOINTS, FaultConfigError, FaultRule, Faults
from .server import ApiError, CallLog, Simulator
from .signing import SIGNATURE_HEADER, sign, verify
from .state import DeliveryRecord, SimulatorState, WebhookRecord, api_key_fingerprint

__all__ = [
    "ENDPOINTS",
    "SIGNATURE_HEADER",
    "ApiError",
    "CallLog",
    "DeliveryRecord",
    "FaultConfigError",
    "FaultRule",
    "Faults",
    "Simulator",
    "SimulatorAdmin",
    "SimulatorAdminError",
    "SimulatorState",
    "WebhookRecord",
    "api_key_fingerprint",
    "sign",
    "verify",
]
