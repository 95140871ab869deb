"""The Blooio V4 webhooks API client: models, errors, retries, per-key limits.

The public surface is the one in docs/CONTRACTS.md; `KeyLimiter`, `UnexpectedResponse`,
`WebhookStatus`, `OnResponse`, `error_from_response`, `parse_retry_after` and
`key_fingerprint` are additions. Nothing here knows
about Kubernetes or kopf; the reconcile layer maps these errors to retry semantics.
"""

from .client import BlooioClient, OnResponse, key_fingerprint
from .errors import (
    ApiConnectionError,
    ApiStatusError,
    ApiTimeout,
    BadRequest,
    BlooioError,
    Conflict,
    CreateOutcomeUnknown,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    ValidationFailed,
    error_from_response,
)
from .limiter import KeyLimiter
from .models import (
    CreateWebhookRequest,
    ReplayResult,
    RotatedSecret,
    UpdateWebhookRequest,
    Webhook,
    WebhookDelivery,
    WebhookStatus,
    WebhookWithSecret,
)
from .pool import ClientPool
from .retry import RetryPolicy, backoff_delay, parse_retry_after

__all__ = [
    "ApiConnectionError",
    "ApiStatusError",
    "ApiTimeout",
    "BadRequest",
    "BlooioClient",
    "BlooioError",
    "ClientPool",
    "Conflict",
    "CreateOutcomeUnknown",
    "CreateWebhookRequest",
    "Forbidden",
    "KeyLimiter",
    "NotFound",
    "OnResponse",
    "RateLimited",
    "ReplayResult",
    "RetryPolicy",
    "RotatedSecret",
    "ServerError",
    "Unauthorized",
    "UnexpectedResponse",
    "UpdateWebhookRequest",
    "ValidationFailed",
    "Webhook",
    "WebhookDelivery",
    "WebhookStatus",
    "WebhookWithSecret",
    "backoff_delay",
    "error_from_response",
    "key_fingerprint",
    "parse_retry_after",
]
