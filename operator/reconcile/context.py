"""What one reconciliation works with: the resource, its status, and its collaborators.

``Deps`` are built once at startup and shared; ``WebhookContext`` is built per handler
call. Status changes are made on ``ctx.status`` and written with ``save_status``, which
patches only the fields that changed (nothing at all when nothing did).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Container, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import SecretStr

from blooio_operator.blooio import BlooioClient, ClientPool
from blooio_operator.kube import KubeClient, OwnerRef
from blooio_operator.kube.client import SecretView
from blooio_operator.metrics import Metrics
from blooio_operator.models.resource import (
    Dropped,
    WebhookSpec,
    WebhookStatus,
    rfc3339_seconds,
)
from blooio_operator.reconcile import claims, credentials
from blooio_operator.reconcile.claims import ClaimSeal
from blooio_operator.reconcile.crash import CrashPoints
from blooio_operator.reconcile.credentials import key_id
from blooio_operator.reconcile.episodes import Backoff
from blooio_operator.reconcile.snapshots import SnapshotCache
from blooio_operator.settings import Settings


class EventSink(Protocol):
    """Where Kubernetes Events go (kopf's poster in production, a list in unit tests)."""

    def normal(self, reason: str, message: str) -> None: ...

    def warning(self, reason: str, message: str) -> None: ...


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> float | None:
    """Seconds since the epoch of any RFC 3339 time (fraction, offset, lowercase ``t``/``z``);
    None for anything else, including a time out of range. Never raises: status values
    may have been written by anyone. Times the operator writes stay ``now_iso()``'s form.
    """
    return rfc3339_seconds(value)


def ms_to_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return None  # not a time Blooio could have meant


log = logging.getLogger("blooio_operator.reconcile")
_REPORTED: OrderedDict[tuple[str, str, str], None] = OrderedDict()
_REPORTED_MAX = 4096  # (resource, field, value) triples remembered; oldest forgotten first


def report_dropped(namespace: str, name: str, uid: str, dropped: list[Dropped]) -> None:
    """One WARNING line per resource, status field and value the operator cannot use
    (not one per event: the value stays in status until something rewrites it)."""
    for item in dropped:
        key = (uid, item.path, item.value)
        if key in _REPORTED:
            _REPORTED.move_to_end(key)
            continue
        _REPORTED[key] = None
        if len(_REPORTED) > _REPORTED_MAX:
            _REPORTED.popitem(last=False)
        log.warning(
            "%s/%s: status%s %s is ignored (%s)",
            namespace,
            name,
            f".{item.path}" if item.path else "",
            item.value,
            item.why,
        )


def merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    Nested objects are diffed key by key, so a key that disappeared from a nested object
    (e.g. ``applied.channelId``) is sent as ``null`` instead of being kept by the merge.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_diff(before, value)
            if nested:
                patch[key] = nested
        elif before != value:
            patch[key] = value
    patch.update({key: None for key in old if key not in new})
    return patch


@dataclass
class Deps:
    settings: Settings
    kube: KubeClient
    clients: ClientPool
    snapshots: SnapshotCache
    metrics: Metrics
    crash: CrashPoints
    clock: Callable[[], float] = time.time  # wall clock; tests let time pass with it
    backoff: Backoff = field(default_factory=Backoff)  # attempts per resource (episodes)
    seal: ClaimSeal = field(default_factory=lambda: ClaimSeal(None))  # status.claim


@dataclass
class WebhookContext:
    deps: Deps = field(repr=False)
    namespace: str
    name: str
    uid: str
    generation: int | None
    annotations: dict[str, str]
    spec: WebhookSpec
    status: WebhookStatus
    events: EventSink
    attempt: int = 0
    deleting: bool = False  # metadata.deletionTimestamp is set
    claimed_ids: Container[str] = frozenset()
    # Reserve a webhook id for this resource before acting on it (recovery, adoption):
    # False when another resource holds or reserved it meanwhile (handlers' registry).
    reserve: Callable[[str], bool] = field(default=lambda _webhook_id: True, repr=False)
    claim_verified: bool = True  # status.claim is the operator's seal (reconcile.claims)
    # kopf's patch for this handler call (its ``status`` part): a ``save_status(last=True)``
    # goes there, and kopf sends it with its own bookkeeping in one request on return.
    status_sink: MutableMapping[str, Any] | None = None
    writes: int = 0  # status patches made through this context
    secret_fresh: bool = False  # the Secret was written in this reconcile
    # The Secret as create() checked it: its bytes never go into a repr.
    secret_view: SecretView | None = field(default=None, repr=False)
    secret_view_known: bool = False
    _saved: dict[str, Any] = field(default_factory=dict)
    _key_id: str | None = None

    @classmethod
    def build(
        cls,
        deps: Deps,
        *,
        body: dict[str, Any],
        events: EventSink,
        attempt: int = 0,
        claimed_ids: Container[str] = frozenset(),
        status_sink: MutableMapping[str, Any] | None = None,
        reserve: Callable[[str], bool] | None = None,
    ) -> WebhookContext:
        meta = body.get("metadata", {})
        ctx = cls(
            deps=deps,
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=None,
            annotations={},
            spec=WebhookSpec.model_validate(body.get("spec") or {}),
            status=WebhookStatus(),
            events=events,
            attempt=attempt,
            claimed_ids=claimed_ids,
            status_sink=status_sink,
        )
        if reserve is not None:
            ctx.reserve = reserve
        ctx._load(body)
        return ctx

    def _load(self, body: dict[str, Any]) -> None:
        meta = body.get("metadata", {})
        self.generation = meta.get("generation")
        self.annotations = dict(meta.get("annotations") or {})
        self.deleting = bool(meta.get("deletionTimestamp"))
        self.spec = WebhookSpec.model_validate(body.get("spec") or {})
        # Whatever in status cannot be used is dropped (and reported once), never raised:
        # status is written by restores and tenants too, and one bad value must not wedge
        # the object.
        dropped: list[Dropped] = []
        self.status = WebhookStatus.model_validate(
            body.get("status") or {}, context={"now": self.deps.clock(), "dropped": dropped}
        )
        report_dropped(self.namespace, self.name, self.uid, dropped)
        self.claim_verified = self.deps.seal.verify(self.uid, self.status)
        self._saved = self._status_fields()

    async def reread(self) -> bool:
        """Replace what this context knows with the resource as the API server has it now.

        False when the resource is gone (or was replaced by a namesake). Only for callers
        that act on a body they did not just receive from a watch event (the periodic
        check); nothing made on the old copy may be pending a save.
        """
        body = await self.kube.read_webhook_resource(self.namespace, self.name)
        if body is None or body.get("metadata", {}).get("uid") != self.uid:
            return False
        self._load(body)
        return True

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    @property
    def kube(self) -> KubeClient:
        return self.deps.kube

    @property
    def owner(self) -> OwnerRef:
        return OwnerRef(self.name, self.uid)

    @property
    def secret_name(self) -> str:
        return self.spec.secret_name(self.name)

    @property
    def key_id(self) -> str | None:
        return self._key_id

    def crash(self, point: str) -> None:
        self.deps.crash(point)

    async def blooio(self) -> BlooioClient:
        """The client for this resource's API key (credentialsRef, else the default).

        The key is checked first (``credentials``: opt-in label, shape, namespace
        allow-list), and so is the webhook (not one another resource holds), so nothing is
        sent to Blooio for a resource that may not act.
        """
        value = await credentials.resolve_key(self)
        if not self.deleting:
            credentials.assert_holds_webhook(self)
            claims.assert_verified(self)
        self._key_id = key_id(value)
        return self.deps.clients.get(SecretStr(value))

    # --- status ------------------------------------------------------------------

    def _status_fields(self) -> dict[str, Any]:
        if self.claim_verified:  # keep the seal current; never bless what we did not seal
            self.status.claim = self.deps.seal.seal(self.uid, self.status)
        return self.status.dump()

    async def save_status(self, *, last: bool = False) -> bool:
        """Patch the fields of ``status`` that changed since the last save.

        ``last``: nothing follows this write in the handler, so with a ``status_sink`` it
        is handed to kopf, which sends it together with its last-handled configuration
        in one ``/status`` patch right after the handler returns (one write and one watch
        event fewer). Should that patch fail for good, the object keeps its recorded
        intent and no diff-base, and is reconciled again on the next event.
        """
        current = self._status_fields()
        patch = merge_diff(self._saved, current)
        if not patch:
            return False
        if last and self.status_sink is not None:
            self.status_sink.update(patch)  # top-level status fields: kopf uses only "kopf"
        else:
            await self.kube.patch_status(self.namespace, self.name, patch)
        self._saved = current
        self.writes += 1
        return True
