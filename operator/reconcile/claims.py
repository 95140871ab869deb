"""Ownership of a webhook is not taken from status alone (issue 19).

``status`` is writable by anyone who may patch ``blooiowebhooks/status`` (a restore tool,
``kubectl edit --subresource=status``, a tenant whose role has a wildcard on
``blooio.com``). Every field of it that names something at Blooio the resource may act
on (``webhookId``, ``adoptedWebhookId``, ``pending`` with its ``oldWebhookId``,
``abandoned``, ``rotating``) is therefore covered by a *seal*, ``status.claim``: an
HMAC-SHA256, under a key only the operator holds, over the resource's uid and those
fields. The operator writes the seal with every change of them (``WebhookContext.
save_status``) and verifies it whenever it loads a status. A status it did not seal:

* makes no call to Blooio for the resource (``Stalled=True/ClaimUnverified``, once),
  unless ``blooio.com/adopt-webhook-id`` names the webhook: adoption checks that no
  other resource holds it and then seals it, as for any adoption;
* holds no claim in the registry (so it blocks nobody, and nobody's recovery or
  adoption yields to it);
* lets deletion finish without touching Blooio.

Copying another resource's ``status`` (seal included) does not help: the uid is sealed
too. The key comes from ``BLOOIO_CLAIM_KEY``, else from a Secret the operator keeps in its
own namespace (created at first start, shared by every replica), else it is derived
from the default API key (with a warning: rotating that key then unseals every claim).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from blooio_operator.kube import KubeClient
from blooio_operator.models import reasons
from blooio_operator.models.reasons import ANNOTATION_ADOPT
from blooio_operator.models.resource import WebhookStatus
from blooio_operator.reconcile.errors import PermanentFailure
from blooio_operator.settings import Settings

if TYPE_CHECKING:
    from blooio_operator.reconcile.context import WebhookContext

log = logging.getLogger("blooio_operator.reconcile")

SEAL_VERSION = "v1"
# Status fields (by alias) that name something at Blooio the resource may act on.
SEALED_FIELDS = ("webhookId", "adoptedWebhookId", "pending", "abandoned", "rotating", "keyId")


class ClaimSeal:
    """Seals claims with the current key and verifies them with it or the previous one
    (a key rotation: a claim sealed with the previous key is resealed with the current
    one on its next write). No key: sealing is off and every status is trusted, as
    before issue 19."""

    def __init__(self, key: bytes | None, previous: bytes | None = None) -> None:
        self._key = key
        self._keys = [k for k in (key, previous) if k is not None]

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def seal(self, uid: str, status: WebhookStatus | Mapping[str, Any]) -> str | None:
        """The seal for ``status`` (the model, or its JSON form as the API server holds
        it) of the resource ``uid``; None when nothing is claimed."""
        return self._seal(self._key, uid, status)

    def verify(self, uid: str, status: WebhookStatus | Mapping[str, Any]) -> bool:
        """True when the operator sealed exactly these claims for this resource."""
        if self._key is None:
            return True
        dumped = status.dump() if isinstance(status, WebhookStatus) else status
        claim = dumped.get("claim")
        for key in self._keys:
            expected = self._seal(key, uid, dumped)
            if expected is None:
                return True  # nothing claimed, nothing to trust
            if isinstance(claim, str) and hmac.compare_digest(expected, claim):
                return True
        return False

    def current(self, uid: str, status: Mapping[str, Any]) -> bool:
        """Sealed with the current key (not only the previous one)."""
        claim = status.get("claim")
        expected = self.seal(uid, status)
        return expected is None or (isinstance(claim, str) and hmac.compare_digest(expected, claim))

    @staticmethod
    def _seal(key: bytes | None, uid: str, status: WebhookStatus | Mapping[str, Any]) -> str | None:
        claimed = claimed_fields(status)
        if not claimed or key is None:
            return None
        message = json.dumps([uid, claimed], sort_keys=True, separators=(",", ":"))
        digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
        return f"{SEAL_VERSION}:" + base64.urlsafe_b64encode(digest[:24]).decode()


def claimed_fields(status: WebhookStatus | Mapping[str, Any]) -> dict[str, Any]:
    dumped = status.dump() if isinstance(status, WebhookStatus) else status
    return {k: dumped[k] for k in SEALED_FIELDS if dumped.get(k) not in (None, [], {})}


def unverified_message(webhook_id: str | None) -> str:
    named = f"webhook {webhook_id}" if webhook_id else "a webhook"
    return (
        f"status names {named} (or an intent) that the operator did not record for this "
        "resource (status written by someone else, or restored into a new object); nothing "
        f"is done at Blooio for it. To take the webhook over, set {ANNOTATION_ADOPT}: "
        f"{webhook_id or 'wh_...'}; adoption checks that no other resource holds it."
    )


def derive_key(material: str, purpose: str = "blooio-operator claim seal") -> bytes:
    """A seal key derived from a secret the operator already holds (the fallback)."""
    return hashlib.sha256(f"{purpose}\n{material}".encode()).digest()


def assert_verified(ctx: WebhookContext) -> None:
    """Refuse every call to Blooio for a status the operator did not seal, unless an
    adoption is asked for (which starts from a clean claim, ``forget_unverified``)."""
    if ctx.claim_verified or ctx.annotations.get(ANNOTATION_ADOPT):
        return
    raise PermanentFailure(reasons.CLAIM_UNVERIFIED, unverified_message(ctx.status.webhook_id))


def forget_unverified(ctx: WebhookContext) -> None:
    """Drop every claim of a status the operator did not seal; what is recorded from now
    on is the operator's own (and sealed)."""
    if ctx.claim_verified:
        return
    st = ctx.status
    st.webhook_id = st.adopted_webhook_id = st.key_id = None
    st.pending = st.rotating = None
    st.abandoned = None
    st.applied = None
    ctx.claim_verified = True


async def load_seal(settings: Settings, kube: KubeClient) -> ClaimSeal:
    """The seal's key, from configuration only (never from a call that may fail for a
    moment: a restarting API server answers 403 until its RBAC caches are warm, and a
    fallback to another key then would unseal the whole fleet): ``BLOOIO_CLAIM_KEY``,
    else derived from the default API key, else sealing is off.
    ``BLOOIO_CLAIM_KEY_PREVIOUS`` still verifies during a rotation of the key."""
    served = await kube.served_status_fields()
    if served is not None and "claim" not in served:
        # The API server would prune status.claim: every claim would look forged.
        log.warning(
            "the installed BlooioWebhook CRD has no status.claim (it is older than the "
            "operator): claims are not sealed; apply deploy/crds and restart the operator"
        )
        return ClaimSeal(None)
    previous = (
        derive_key(settings.claim_key_previous.get_secret_value())
        if settings.claim_key_previous is not None
        else None
    )
    if settings.claim_key is not None:
        return ClaimSeal(derive_key(settings.claim_key.get_secret_value()), previous)
    if settings.api_key is not None:
        log.info(
            "claims are sealed with a key derived from the default API key (set "
            "BLOOIO_CLAIM_KEY before rotating that key; docs/operations.md)"
        )
        return ClaimSeal(derive_key(settings.api_key.get_secret_value()), previous)
    log.warning("claims are not sealed: no BLOOIO_CLAIM_KEY and no default API key")
    return ClaimSeal(None)


async def seal_legacy(
    kube: KubeClient, seal: ClaimSeal, records: list[dict[str, Any]]
) -> dict[str, str]:
    """Seal, once, the claims of resources written before claims were sealed (trust on
    first use): a status with no ``claim`` at all whose webhook no other resource names.
    Returns uid -> webhook id of every claim that is the operator's own afterwards."""
    if not seal.enabled:
        return {r["uid"]: str(r["status"]["webhookId"]) for r in records}
    named: dict[str, int] = {}
    for r in records:
        named[str(r["status"]["webhookId"])] = named.get(str(r["status"]["webhookId"]), 0) + 1
    held: dict[str, str] = {}
    for r in records:
        uid, status, webhook_id = r["uid"], r["status"], str(r["status"]["webhookId"])
        if seal.verify(uid, status):
            held[uid] = webhook_id
            if not seal.current(uid, status):  # a key rotation: reseal with the new key
                await kube.patch_status(
                    r["namespace"], r["name"], {"claim": seal.seal(uid, status)}
                )
        elif "claim" not in status and named[webhook_id] == 1:
            claim = seal.seal(uid, status)
            await kube.patch_status(r["namespace"], r["name"], {"claim": claim})
            held[uid] = webhook_id
            log.info("%s/%s: sealed the claim on %s", r["namespace"], r["name"], webhook_id)
    return held
