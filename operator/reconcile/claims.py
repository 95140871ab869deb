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
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from blooio_operator.kube import KubeClient, KubeError, KubeForbidden
from blooio_operator.models import reasons
from blooio_operator.models.reasons import ANNOTATION_ADOPT
from blooio_operator.models.resource import WebhookStatus
from blooio_operator.reconcile.errors import PermanentFailure
from blooio_operator.settings import Settings

if TYPE_CHECKING:
    from blooio_operator.reconcile.context import WebhookContext

log = logging.getLogger("blooio_operator.reconcile")
CLAIM_KEY_SECRET = "blooio-operator-claim-key"
CLAIM_KEY_FIELD = "key"

SEAL_VERSION = "v1"
# Status fields (by alias) that name something at Blooio the resource may act on.
SEALED_FIELDS = ("webhookId", "adoptedWebhookId", "pending", "abandoned", "rotating", "keyId")


class ClaimSeal:
    """Seals and verifies claims with one operator-held key (``None``: sealing is off and
    every status is trusted, as before issue 19)."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def seal(self, uid: str, status: WebhookStatus | Mapping[str, Any]) -> str | None:
        """The seal for ``status`` (the model, or its JSON form as the API server holds
        it) of the resource ``uid``; None when nothing is claimed."""
        claimed = claimed_fields(status)
        if not claimed or self._key is None:
            return None
        message = json.dumps([uid, claimed], sort_keys=True, separators=(",", ":"))
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()
        return f"{SEAL_VERSION}:" + base64.urlsafe_b64encode(digest[:24]).decode()

    def verify(self, uid: str, status: WebhookStatus | Mapping[str, Any]) -> bool:
        """True when the operator sealed exactly these claims for this resource."""
        if self._key is None:
            return True
        expected = self.seal(uid, status)
        if expected is None:
            return True  # nothing claimed, nothing to trust
        dumped = status.dump() if isinstance(status, WebhookStatus) else status
        claim = dumped.get("claim")
        return isinstance(claim, str) and hmac.compare_digest(expected, claim)


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
    """The operator's seal key: ``BLOOIO_CLAIM_KEY``; else the Secret it keeps in its own
    namespace (created at first start, shared by every replica); else derived from the
    default API key (rotating that key then unseals every claim); else sealing is off."""
    served = await kube.served_status_fields()
    if served is not None and "claim" not in served:
        # The API server would prune status.claim: every claim would look forged.
        log.warning(
            "the installed BlooioWebhook CRD has no status.claim (it is older than the "
            "operator): claims are not sealed; apply deploy/crds and restart the operator"
        )
        return ClaimSeal(None)
    if settings.claim_key is not None:
        return ClaimSeal(derive_key(settings.claim_key.get_secret_value()))
    namespace, name = settings.claim_key_namespace(), CLAIM_KEY_SECRET
    try:
        view = await kube.read_secret(namespace, name)
        if view is None:
            try:
                await kube.write_secret(
                    namespace,
                    name,
                    data={CLAIM_KEY_FIELD: secrets.token_hex(32)},
                    labels={reasons.LABEL_MANAGED_BY: reasons.MANAGED_BY},
                    annotations={},
                    owner=None,
                    exists=False,
                )
            except KubeError as exc:
                if exc.status != 409:  # another replica created it first: read theirs
                    raise
            view = await kube.read_secret(namespace, name)
        value = view.data.get(CLAIM_KEY_FIELD) if view is not None else None
        if value:
            return ClaimSeal(derive_key(value.decode()))
    except KubeForbidden as exc:  # anything else (the API server away) is retried
        log.warning("cannot keep the claim key in Secret %s/%s: %s", namespace, name, exc)
    if settings.api_key is not None:
        log.warning(
            "claims are sealed with a key derived from the default API key (set "
            "BLOOIO_CLAIM_KEY): rotating that key makes every resource ClaimUnverified"
        )
        return ClaimSeal(derive_key(settings.api_key.get_secret_value()))
    log.warning("claims are not sealed (no BLOOIO_CLAIM_KEY, no Secret, no default key)")
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
        elif "claim" not in status and named[webhook_id] == 1:
            claim = seal.seal(uid, status)
            await kube.patch_status(r["namespace"], r["name"], {"claim": claim})
            held[uid] = webhook_id
            log.info("%s/%s: sealed the claim on %s", r["namespace"], r["name"], webhook_id)
    return held
