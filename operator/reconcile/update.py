"""Changing the webhook in place (url, eventTypes, suspend) and replacing it when its
channel changes (create the new one, switch the Secret, then delete the old one).
"""

from __future__ import annotations

from blooio_operator.blooio import BlooioClient, NotFound, UpdateWebhookRequest
from blooio_operator.models import reasons
from blooio_operator.reconcile import create as creating
from blooio_operator.reconcile import episodes, secrets
from blooio_operator.reconcile.context import WebhookContext, now_iso
from blooio_operator.reconcile.remote import confirm_gone


async def update_remote(ctx: WebhookContext, client: BlooioClient) -> None:
    """PATCH url / eventTypes / status when they differ from what was applied."""
    st, spec = ctx.status, ctx.spec
    assert st.webhook_id is not None
    applied = st.applied
    url_changed = applied is None or applied.url != spec.url
    events_changed = applied is None or set(applied.event_types) != set(spec.event_types)
    status_changed = st.remote_status != spec.desired_remote_status
    if not (url_changed or events_changed or status_changed):
        return
    changes = UpdateWebhookRequest(
        url=spec.url if url_changed else None,
        event_types=list(spec.event_types) if events_changed else None,
        status=spec.desired_remote_status if status_changed else None,
    )
    try:
        webhook = await client.update_webhook(st.webhook_id, changes)
    except NotFound:
        if not await confirm_gone(ctx, client, st.webhook_id):
            raise
        await creating.recreate_missing(ctx, client)
        return
    await creating.install(ctx, webhook, None)
    if url_changed or events_changed:
        ctx.events.normal(
            reasons.UPDATED, f"Updated webhook {webhook.id} (url/eventTypes) to match the spec."
        )
    if status_changed:
        if spec.suspend:
            ctx.events.normal(reasons.SUSPENDED, f"Webhook {webhook.id} disabled at Blooio.")
        else:
            ctx.events.normal(reasons.RESUMED, f"Webhook {webhook.id} active again at Blooio.")


async def replace(ctx: WebhookContext, client: BlooioClient) -> None:
    """channelId/channelType changed: create the new webhook, switch, then delete the old."""
    await secrets.assert_secret_writable(ctx)
    spec, st = ctx.spec, ctx.status
    old = st.webhook_id
    st.pending = creating.intent(ctx, "replace")
    st.conditions = episodes.mark_progress(
        st,
        reasons.UPDATING,
        f"Replacing webhook {old} (channel changed).",
        generation=ctx.generation,
        now=now_iso(),
    )
    await ctx.save_status()
    webhook, secret = await creating.post_create(ctx, client)
    ctx.crash("after-replace-create")
    await creating.install(ctx, webhook, secret)
    if webhook.status != spec.desired_remote_status:
        await update_remote(ctx, client)  # POST cannot set a status (see create)
    await finish_replace(ctx, client, old)


async def finish_replace(ctx: WebhookContext, client: BlooioClient, old: str | None) -> None:
    ctx.crash("before-replace-delete")
    if old:
        try:
            await client.delete_webhook(old)
        except NotFound:
            pass
    ctx.status.pending = None
    await ctx.save_status()
    ctx.events.normal(
        reasons.REPLACED,
        f"Replaced webhook {old} with {ctx.status.webhook_id} (channel changed); "
        "the Secret holds the new signing secret.",
    )
