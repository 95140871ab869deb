"""Adopting an existing webhook (annotation ``blooio.com/adopt-webhook-id``)."""

from __future__ import annotations

import re

from blooio_operator.blooio import BlooioClient, NotFound
from blooio_operator.models import reasons
from blooio_operator.reconcile import create as creating
from blooio_operator.reconcile import secrets
from blooio_operator.reconcile.context import WebhookContext, now_iso
from blooio_operator.reconcile.errors import PermanentFailure
from blooio_operator.reconcile.remote import channel_of, patch_to_spec

# A webhook id as Blooio makes them (wh_ and an opaque token); anything else is refused
# before it goes into a URL (a 64 KB value made httpx raise InvalidURL, retried forever).
WEBHOOK_ID = re.compile(r"wh_[A-Za-z0-9_-]{1,128}")


async def adopt(ctx: WebhookContext, client: BlooioClient, webhook_id: str) -> None:
    if not WEBHOOK_ID.fullmatch(webhook_id):
        raise PermanentFailure(
            reasons.ADOPTION_FAILED,
            f"{reasons.ANNOTATION_ADOPT}: {webhook_id[:64]!r} is not a webhook id (wh_...); "
            "nothing was sent to Blooio.",
        )
    if webhook_id in ctx.claimed_ids or not ctx.reserve(webhook_id):
        # Checked before any call: with a shared key, anyone could otherwise take over
        # (PATCH, rotate, later delete) a webhook another team's resource holds.
        raise PermanentFailure(
            reasons.ADOPTION_FAILED,
            f"{reasons.ANNOTATION_ADOPT}: webhook {webhook_id} is held by another "
            "BlooioWebhook, and a webhook can belong to one resource only. Nothing was "
            "changed at Blooio; remove the annotation.",
        )
    await secrets.assert_secret_writable(ctx)
    try:
        webhook = await client.get_webhook(webhook_id)
    except NotFound:
        raise PermanentFailure(
            reasons.ADOPTION_FAILED,
            f"{reasons.ANNOTATION_ADOPT}: webhook {webhook_id} does not exist at Blooio "
            "for this API key.",
        ) from None
    if channel_of(webhook) != (ctx.spec.channel_id, ctx.spec.channel_type):
        raise PermanentFailure(
            reasons.ADOPTION_FAILED,
            f"Webhook {webhook_id} has channel {webhook.channel_id}/{webhook.channel_type}, "
            "the spec asks for another; channels cannot be changed in place.",
        )
    webhook = await patch_to_spec(ctx, client, webhook)
    rotated = await client.rotate_secret(webhook.id)
    ctx.crash("after-rotate")
    previous = ctx.status.webhook_id
    await creating.install(ctx, webhook, rotated.signing_secret, clear_pending=True)
    # After install: recorded earlier, a failed Secret write would mark the adoption done.
    ctx.status.adopted_webhook_id = webhook_id
    ctx.status.secret_rotated_at = now_iso()
    ctx.deps.metrics.rotations.labels("adoption").inc()
    note = f" (previously {previous}, left untouched at Blooio)" if previous else ""
    ctx.events.normal(
        reasons.ADOPTED, f"Adopted webhook {webhook_id}{note}; rotated its signing secret."
    )
