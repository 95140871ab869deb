"""What the operator knows of every BlooioWebhook without asking: its slim body (for the
periodic sweep) and the webhook id it holds (so no resource acts on another's webhook).

kopf's indexes would do this, but they cannot be used at scale: on start, each object's
worker indexes its object and then waits until *every* object is indexed. With a worker
limit that is a deadlock as soon as there are more objects than workers
(nolar/kopf#1243); without one, the wait is a ``ToggleSet`` every worker re-checks on
every change, which at 10,000 objects kept a restarted operator from handling anything
for minutes. This registry is fed by a kopf event handler (every watch event, no waiting)
and seeded once at start-up with a list of the webhook ids every BlooioWebhook holds, so
claims are complete before the first handler runs, whatever the order of events.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from blooio_operator.models import reasons
from blooio_operator.models.resource import WebhookStatus
from blooio_operator.reconcile.secrets import annotation_token

# How long a reservation (a recovery or adoption about to record a webhook id) holds
# before the status that records it must have arrived.
RESERVATION_SECONDS = 300.0


class Registry:
    def __init__(self) -> None:
        # Whether a body's status is the operator's own (reconcile.claims); a claim from a
        # status it did not seal holds nothing. Set once the seal key is known.
        self.verify: Callable[[str, Mapping[str, Any]], bool] = lambda _uid, _status: True
        self._reserved: dict[str, tuple[str, float]] = {}  # webhook id -> (uid, until)
        self._bodies: dict[str, dict[str, Any]] = {}
        self._observed: dict[str, float] = {}  # uid -> monotonic time of its last event
        self._held: dict[str, str] = {}  # uid -> webhook id
        self._holders: defaultdict[str, set[str]] = defaultdict(set)  # webhook id -> uids

    # --- feeding -------------------------------------------------------------------------

    def seed_claims(self, held: Mapping[str, str]) -> None:
        """Webhook ids held at start-up (uid -> id); events seen since take precedence."""
        for uid, webhook_id in held.items():
            if uid not in self._bodies:
                self._hold(uid, webhook_id)

    def observe(self, body: Mapping[str, Any]) -> None:
        """A watch event's body (ADDED / MODIFIED, or the initial listing)."""
        uid = body["metadata"]["uid"]
        self._bodies[uid] = slim_body(body)
        self._observed[uid] = time.monotonic()
        status = body.get("status") or {}
        webhook_id = status.get("webhookId") if isinstance(status, Mapping) else None
        if webhook_id and self.verify(uid, status):
            self._hold(uid, str(webhook_id))
            self._reserved.pop(str(webhook_id), None)
        else:
            self._release(uid)

    def forget(self, uid: str) -> None:
        """The object is gone (DELETED event, or a re-read found nothing)."""
        self._bodies.pop(uid, None)
        self._observed.pop(uid, None)
        self._release(uid)
        for webhook_id, (holder, _) in list(self._reserved.items()):
            if holder == uid:
                del self._reserved[webhook_id]

    # --- reading ---------------------------------------------------------------------------

    def unconfirmed(self, since: float) -> set[str]:
        """uids that no event has shown since ``since`` (monotonic): what a re-list that
        started then did not hold, and claims seeded at start-up that no event confirmed."""
        seeded_only = set(self._held) - set(self._bodies)
        return seeded_only | {uid for uid, at in self._observed.items() if at < since}

    def observed_since(self, uid: str, since: float) -> bool:
        return self._observed.get(uid, float("-inf")) >= since

    def body(self, uid: str) -> dict[str, Any] | None:
        return self._bodies.get(uid)

    def uids(self) -> list[str]:
        return list(self._bodies)

    def holders(self, webhook_id: str) -> frozenset[str]:
        held = set(self._holders.get(webhook_id, ()))
        reserved = self._reserved.get(webhook_id)
        if reserved is not None and reserved[1] > time.monotonic():
            held.add(reserved[0])
        return frozenset(held)

    def reserve(self, uid: str, webhook_id: str) -> bool:
        """Claim ``webhook_id`` for ``uid`` before its status records it (check and set,
        with no await in between): False when another resource holds or reserved it."""
        if self.holders(webhook_id) - {uid}:
            return False
        self._reserved[webhook_id] = (uid, time.monotonic() + RESERVATION_SECONDS)
        return True

    def claimed_by_others(self, uid: str) -> ClaimedIds:
        return ClaimedIds(self, uid)

    def __len__(self) -> int:
        return len(self._bodies)

    # --- internals -------------------------------------------------------------------------

    def _hold(self, uid: str, webhook_id: str) -> None:
        if self._held.get(uid) == webhook_id:
            return
        self._release(uid)
        self._held[uid] = webhook_id
        self._holders[webhook_id].add(uid)

    def _release(self, uid: str) -> None:
        old = self._held.pop(uid, None)
        if old is None:
            return
        holders = self._holders.get(old)
        if holders is not None:
            holders.discard(uid)
            if not holders:
                del self._holders[old]


class ClaimedIds:
    """Webhook ids recorded by *other* BlooioWebhooks (a ``Container``), looked up lazily."""

    def __init__(self, registry: Registry, uid: str) -> None:
        self._registry = registry
        self._uid = uid

    def __contains__(self, webhook_id: object) -> bool:
        if not isinstance(webhook_id, str):
            return False
        return any(u != self._uid for u in self._registry.holders(webhook_id))


# What the sweeps read of a resource's annotations and status; anything else a tenant (or
# kubectl's last-applied-configuration) put there is not kept.
_ANNOTATIONS = (
    reasons.ANNOTATION_ROTATE,
    reasons.ANNOTATION_ADOPT,
    reasons.ANNOTATION_SKIP_REMOTE_DELETE,
    reasons.ANNOTATION_REPLAY_SINCE,
)
_STATUS = frozenset(field.alias or name for name, field in WebhookStatus.model_fields.items())


def _bounded(value: Any) -> Any:
    """Long strings kept as their digest (``secrets.annotation_token``): a long rotate
    token and the status that acted on it still compare equal, and neither is held whole."""
    return annotation_token(value) if isinstance(value, str) else value


def slim_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a periodic check needs of a resource, bounded whatever tenants write into it.

    No managedFields, no kopf bookkeeping, only the annotations the operator reads, only
    the status fields it knows, and the spec without the Secret's labels and annotations
    (which only a write needs, and every write is made on a body read again). Memory per
    resource is a few KiB, not whatever the object holds (up to 1.5 MiB in etcd).
    """
    meta = body["metadata"]
    keep = ("namespace", "name", "uid", "generation", "deletionTimestamp")
    annotations = meta.get("annotations") or {}
    raw_status = body.get("status")
    status = raw_status if isinstance(raw_status, Mapping) else {}
    spec = dict(body.get("spec") or {})
    secret = spec.get("secret")
    if isinstance(secret, Mapping):
        spec["secret"] = {k: v for k, v in secret.items() if k not in ("labels", "annotations")}
    slim = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {
            **{k: meta[k] for k in keep if k in meta},
            "annotations": {k: _bounded(annotations[k]) for k in _ANNOTATIONS if k in annotations},
        },
        "spec": spec,
        "status": {k: _bounded(v) for k, v in status.items() if k in _STATUS},
    }
    return copy.deepcopy(slim)
