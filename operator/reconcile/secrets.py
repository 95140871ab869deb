"""The Secret that carries the signing secret: writing it, restoring it, moving it, and
rotating the signing secret into it.
"""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from blooio_operator.blooio import ApiStatusError, BlooioClient, NotFound, Webhook
from blooio_operator.kube import OwnerRef
from blooio_operator.kube.client import OWNER_UID_ANNOTATION, SecretView
from blooio_operator.models import reasons
from blooio_operator.models.resource import Rotation
from blooio_operator.reconcile import create as creating
from blooio_operator.reconcile.context import WebhookContext, now_iso
from blooio_operator.reconcile.errors import CredentialsFailure
from blooio_operator.reconcile.remote import confirm_gone, recorded_webhook, wait_until_settled

# Annotation values recorded in status as acted on (blooio.com/rotate-secret) are kept
# whole up to this length and as their digest beyond it: the CRD bounds the status field,
# and the annotation may be up to 256 KiB.
MAX_TOKEN_LENGTH = 200


def annotation_token(value: str) -> str:
    """What status records of an annotation value: the value, or ``sha256:<hex>`` of it."""
    if len(value) <= MAX_TOKEN_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode(errors="replace")).hexdigest()


SECRET_KEY = "signing-secret"
ID_KEY = "webhook-id"
URL_KEY = "webhook-url"


async def ensure_rotation(ctx: WebhookContext, client: BlooioClient) -> None:
    value = ctx.annotations.get(reasons.ANNOTATION_ROTATE)
    token = annotation_token(value) if value else None
    if not token or token == ctx.status.rotate_token:
        return
    await rotate_into_secret(ctx, client, reason="annotation")
    ctx.status.rotate_token = token
    await ctx.save_status()
    ctx.events.normal(
        reasons.SECRET_ROTATED,
        f"Rotated the signing secret of {ctx.status.webhook_id} ({reasons.ANNOTATION_ROTATE}).",
    )


async def fresh_secret(ctx: WebhookContext, client: BlooioClient, webhook_id: str) -> SecretStr:
    """Rotate ``webhook_id``'s signing secret, crash-safely, and return the new one.

    Each rotate mints a secret, and one whose answer never reached us (a crash, a timeout,
    a 5xx) may still commit at Blooio after a later one, leaving the Secret stale for
    good. So the rotation is recorded (``status.rotating``) before it is sent, and cleared
    once its secret is in the Secret; found recorded, no new rotation is sent until the
    earlier one can no longer commit (``remote.settled_at``).
    """
    st = ctx.status
    earlier = st.rotating
    if earlier is not None and earlier.webhook_id == webhook_id:
        wait_until_settled(ctx, [earlier.started_at], f"An earlier rotation of {webhook_id}")
    st.rotating = Rotation(webhook_id=webhook_id, started_at=now_iso())
    await ctx.save_status()
    try:
        rotated = await client.rotate_secret(webhook_id)
    except ApiStatusError as exc:
        if 400 <= exc.status < 500:
            st.rotating = None  # Blooio answered: nothing was rotated
        raise
    ctx.crash("after-rotate")
    return rotated.signing_secret


async def rotate_into_secret(ctx: WebhookContext, client: BlooioClient, *, reason: str) -> None:
    st = ctx.status
    assert st.webhook_id is not None
    await assert_secret_writable(ctx)
    try:
        secret = await fresh_secret(ctx, client, st.webhook_id)
    except NotFound:
        if not await confirm_gone(ctx, client, st.webhook_id):
            raise
        await creating.recreate_missing(ctx, client)
        return
    await write_secret(ctx, recorded_webhook(ctx), secret)
    st.rotating = None
    st.secret_rotated_at = now_iso()
    st.secret_name = ctx.secret_name
    ctx.deps.metrics.rotations.labels(reason).inc()


MAX_LABEL_VALUE = 63


def label_value(text: str) -> str:
    """``text`` as a label value: itself when it fits, else a prefix and a hash of it.

    Resource names may be 238 characters long, label values only 63.
    """
    if len(text) <= MAX_LABEL_VALUE:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[: MAX_LABEL_VALUE - 11].rstrip('-._')}-{digest}"


def secret_labels(ctx: WebhookContext) -> dict[str, str]:
    return {
        **ctx.spec.secret.labels,
        reasons.LABEL_MANAGED_BY: reasons.MANAGED_BY,
        reasons.LABEL_WEBHOOK: label_value(ctx.name),
    }


def secret_annotations(ctx: WebhookContext) -> dict[str, str]:
    return {**ctx.spec.secret.annotations, OWNER_UID_ANNOTATION: ctx.uid}


def secret_owner(ctx: WebhookContext) -> OwnerRef | None:
    """No ownerReference under deletionPolicy Orphan: foreground deletion (Argo CD's
    default) has the garbage collector delete dependents before any finalizer runs."""
    return None if ctx.spec.deletion_policy == "Orphan" else ctx.owner


async def assert_secret_writable(ctx: WebhookContext) -> SecretView | None:
    view = await ctx.kube.read_secret(ctx.namespace, ctx.secret_name)
    if view is not None and not view.owned_by(ctx.uid):
        raise CredentialsFailure(
            reasons.SECRET_CONFLICT,
            f"Secret {ctx.namespace}/{ctx.secret_name} exists and is not owned by this "
            "BlooioWebhook; the operator will not overwrite it. Delete it or set "
            "spec.secret.name to another name.",
            delay=ctx.settings.credentials_retry_seconds,
        )
    return view


async def write_secret(ctx: WebhookContext, webhook: Webhook, secret: SecretStr) -> None:
    if ctx.secret_view_known:
        # Checked moments ago by create(); saves a GET on the hot path.
        view, ctx.secret_view_known = ctx.secret_view, False
    else:
        view = await assert_secret_writable(ctx)
    await ctx.kube.write_secret(
        ctx.namespace,
        ctx.secret_name,
        data={
            SECRET_KEY: secret.get_secret_value(),
            ID_KEY: webhook.id,
            URL_KEY: webhook.url,
        },
        labels=secret_labels(ctx),
        annotations=secret_annotations(ctx),
        owner=secret_owner(ctx),
        exists=view is not None,
    )


async def ensure_secret(ctx: WebhookContext, client: BlooioClient) -> None:
    """The Secret exists, is ours, and holds the current webhook's data and metadata."""
    st = ctx.status
    if ctx.secret_fresh and st.secret_name == ctx.secret_name:
        return  # written moments ago in this reconcile, from a fresh signing secret
    view = await assert_secret_writable(ctx)
    if st.secret_name and st.secret_name != ctx.secret_name:
        await move_secret(ctx, client, st.secret_name)
        return
    if view is None or not view.data.get(SECRET_KEY):
        await rotate_into_secret(ctx, client, reason="restore")
        await ctx.save_status()
        ctx.events.normal(
            reasons.SECRET_RESTORED,
            f"Secret {ctx.secret_name} was missing or empty; rotated the signing secret of "
            f"{st.webhook_id} and rewrote it.",
        )
        return
    if view.data.get(ID_KEY, b"").decode() != st.webhook_id:
        await rotate_into_secret(ctx, client, reason="restore")
        ctx.events.normal(
            reasons.SECRET_RESTORED,
            f"Secret {ctx.secret_name} referred to another webhook; rotated and rewrote it.",
        )
        return
    labels_ok = all(view.labels.get(k) == v for k, v in secret_labels(ctx).items())
    annotations_ok = all(view.annotations.get(k) == v for k, v in secret_annotations(ctx).items())
    url_ok = view.data.get(URL_KEY, b"").decode() == ctx.spec.url
    owner_ok = (ctx.uid in view.owner_uids) == (secret_owner(ctx) is not None)
    if labels_ok and annotations_ok and url_ok and owner_ok:
        return
    await write_secret(ctx, recorded_webhook(ctx), SecretStr(view.data[SECRET_KEY].decode()))


async def move_secret(ctx: WebhookContext, client: BlooioClient, old_name: str) -> None:
    """spec.secret.name changed: copy the current secret to the new name (or rotate)."""
    old = await ctx.kube.read_secret(ctx.namespace, old_name)
    st = ctx.status
    if (
        old is not None
        and old.owned_by(ctx.uid)
        and old.data.get(SECRET_KEY)
        and (old.data.get(ID_KEY, b"").decode() == st.webhook_id)
    ):
        await write_secret(ctx, recorded_webhook(ctx), SecretStr(old.data[SECRET_KEY].decode()))
    else:
        await rotate_into_secret(ctx, client, reason="restore")
    st.secret_name = ctx.secret_name
    await ctx.save_status()
    if old is not None and old.owned_by(ctx.uid):
        await ctx.kube.delete_secret(ctx.namespace, old_name)
