"""The webhook at Blooio as this resource sees it: its channel, the copy status records,
patching it to the spec, and the one place that decides whether it is gone.
"""

from __future__ import annotations

from blooio_operator.blooio import BlooioClient, NotFound, UpdateWebhookRequest, Webhook
from blooio_operator.models import reasons
from blooio_operator.models.resource import Applied, Pending
from blooio_operator.reconcile.context import WebhookContext, parse_iso
from blooio_operator.reconcile.errors import CredentialsFailure, TransientFailure
from blooio_operator.settings import Settings


def settled_at(settings: Settings, started_at: str | None) -> float:
    """When a request sent at ``started_at`` can no longer commit at Blooio (as far as
    the operator can tell): the start (recorded to the second), two client timeouts
    (one for the request, one for a Blooio that holds it), and the recovery delay.

    Blooio may hold a request longer still; what each caller does then is its own
    second line (``status.abandoned`` for creates).
    """
    start = parse_iso(started_at) or 0.0
    return start + 1.0 + 2 * settings.http_timeout_seconds + settings.recovery_delay_seconds


def wait_until_settled(ctx: WebhookContext, started: list[str | None], what: str) -> None:
    """Raise a short ``TransientFailure`` while a request sent at any of ``started`` could
    still commit at Blooio (see ``settled_at``); return once none can."""
    if not started:
        return
    wait = max(settled_at(ctx.settings, s) for s in started) - ctx.deps.clock()
    if wait > 0:
        raise TransientFailure(
            reasons.SETTLING,
            f"{what} got no answer; looking again in {wait:.0f} s, once it can no longer "
            "take effect at Blooio.",
            delay=wait + 0.5,
        )


def channel_of(obj: Applied | Pending | Webhook) -> tuple[str | None, str | None]:
    return obj.channel_id, obj.channel_type


def applied_matches(ctx: WebhookContext) -> bool:
    applied, spec = ctx.status.applied, ctx.spec
    return (
        applied is not None
        and applied.url == spec.url
        and set(applied.event_types) == set(spec.event_types)
        and channel_of(applied) == (spec.channel_id, spec.channel_type)
    )


def remote_matches(ctx: WebhookContext, remote: Webhook) -> bool:
    spec = ctx.spec
    return (
        remote.url == spec.url
        and set(remote.event_types) == set(spec.event_types)
        and remote.status == spec.desired_remote_status
    )


def recorded_webhook(ctx: WebhookContext) -> Webhook:
    """The webhook as status records it (what the Secret's id/url keys describe)."""
    st = ctx.status
    assert st.webhook_id is not None
    applied = st.applied
    return Webhook(
        id=st.webhook_id,
        url=applied.url if applied else ctx.spec.url,
        event_types=list(applied.event_types if applied else ctx.spec.event_types),
        status=st.remote_status or "active",
        channel_id=applied.channel_id if applied else None,
        channel_type=applied.channel_type if applied else None,
        created_at=None,
    )


async def patch_to_spec(ctx: WebhookContext, client: BlooioClient, webhook: Webhook) -> Webhook:
    spec = ctx.spec
    changes = UpdateWebhookRequest(
        url=spec.url if webhook.url != spec.url else None,
        event_types=(
            list(spec.event_types) if set(webhook.event_types) != set(spec.event_types) else None
        ),
        status=spec.desired_remote_status if webhook.status != spec.desired_remote_status else None,
    )
    if changes.url is None and changes.event_types is None and changes.status is None:
        return webhook
    return await client.update_webhook(webhook.id, changes)


async def fetch_or_gone(
    ctx: WebhookContext, client: BlooioClient, webhook_id: str
) -> Webhook | None:
    """The webhook as Blooio has it now, or None when it is really gone.

    The one place that decides that a webhook is gone. A 404 from PATCH or rotate, or a
    list that misses it, is not enough to create a replacement: the key may have changed
    under the webhook (``credentialsRef`` switched to a key of another account, which sees
    someone else's webhook as 404), or the answer may be a blip. Gone means: the key is the
    one the webhook was created with, and a fresh GET says 404.
    """
    recorded = ctx.status.key_id
    if recorded and ctx.key_id and recorded != ctx.key_id:
        raise CredentialsFailure(
            reasons.CREDENTIALS_CHANGED,
            f"Webhook {webhook_id} was created with another API key than the one this "
            "resource now uses, and that key cannot see it. Restore the previous "
            f"credentials, or set {reasons.ANNOTATION_ADOPT} to a webhook visible with the "
            "new key (the old one then stays at Blooio; delete it there).",
            delay=ctx.settings.credentials_retry_seconds,
        )
    try:
        return await client.get_webhook(webhook_id)
    except NotFound:
        return None


async def confirm_gone(ctx: WebhookContext, client: BlooioClient, webhook_id: str) -> bool:
    """After a 404 from a call on ``webhook_id``: is it really gone? (See ``fetch_or_gone``.)"""
    return await fetch_or_gone(ctx, client, webhook_id) is None


async def check_key(ctx: WebhookContext, client: BlooioClient) -> None:
    """The resource now uses another API key than its webhook was made with: can it see it?

    Same account: record the new key and carry on. Another account: Stalled, because
    every later call would 404 and nothing may be recreated on a guess.
    """
    st = ctx.status
    if not st.webhook_id or not st.key_id or not ctx.key_id or st.key_id == ctx.key_id:
        return
    try:
        await client.get_webhook(st.webhook_id)
    except NotFound:
        await fetch_or_gone(ctx, client, st.webhook_id)  # raises: the key cannot see it
    st.key_id = ctx.key_id
