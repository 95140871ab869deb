"""Creating the webhook, crash-safely: the recorded intent, the POST, installing the
result, recovering an interrupted create, and recreating a webhook that is gone.

Every create is preceded by an intent in ``status.pending``; after a crash the intent is
matched against Blooio's list (on everything it recorded) before anything is created
again, so an interruption at any instant never leaves a duplicate.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import SecretStr

from blooio_operator.blooio import (
    ApiStatusError,
    BlooioClient,
    CreateWebhookRequest,
    NotFound,
    RateLimited,
    Webhook,
)
from blooio_operator.models import reasons
from blooio_operator.models.resource import Applied, Pending
from blooio_operator.reconcile import episodes, secrets
from blooio_operator.reconcile import update as updating
from blooio_operator.reconcile.context import WebhookContext, ms_to_iso, now_iso, parse_iso
from blooio_operator.reconcile.errors import PermanentFailure, TransientFailure
from blooio_operator.reconcile.remote import channel_of, settled_at, wait_until_settled

log = logging.getLogger("blooio_operator.reconcile")

# A recovered webhook must have been created no earlier than this before the intent
# (clock skew between Blooio and the cluster).
RECOVERY_SKEW_SECONDS = 120.0
# How long a create whose outcome was unknown, and for which recovery found nothing, is
# watched for a late commit at Blooio (deleted as a duplicate by the drift check).
ABANDONED_WATCH_SECONDS = 3600.0
MAX_ABANDONED = 5


def create_request(ctx: WebhookContext) -> CreateWebhookRequest:
    spec = ctx.spec
    return CreateWebhookRequest(
        url=spec.url,
        event_types=list(spec.event_types),
        channel_id=spec.channel_id,
        channel_type=spec.channel_type,
    )


async def post_create(ctx: WebhookContext, client: BlooioClient) -> tuple[Webhook, SecretStr]:
    """POST /webhooks once. Definitive 4xx clear the intent; anything else keeps it."""
    try:
        created = await client.create_webhook(create_request(ctx))
    except ApiStatusError as exc:
        if 400 <= exc.status < 500:
            ctx.status.pending = None  # Blooio answered: nothing was created
            if isinstance(exc, RateLimited):
                raise
        raise
    return created, created.signing_secret


def intent(ctx: WebhookContext, operation: Literal["create", "replace"]) -> Pending:
    """What is about to be created, recorded in full so recovery can match on all of it."""
    spec = ctx.spec
    return Pending(
        operation=operation,
        started_at=now_iso(),
        url=spec.url,
        event_types=sorted(set(spec.event_types)),
        channel_id=spec.channel_id,
        channel_type=spec.channel_type,
        old_webhook_id=ctx.status.webhook_id if operation == "replace" else None,
    )


async def create(ctx: WebhookContext, client: BlooioClient, *, event_reason: str = "") -> None:
    """Create the webhook with the intent recorded first (crash-safe)."""
    ctx.secret_view = await secrets.assert_secret_writable(ctx)
    ctx.secret_view_known = True
    st = ctx.status
    st.pending = intent(ctx, "create")
    st.conditions = episodes.mark_progress(
        st,
        reasons.CREATING,
        "Creating the webhook at Blooio.",
        generation=ctx.generation,
        now=now_iso(),
    )
    await ctx.save_status()
    ctx.crash("before-create")
    webhook, secret = await post_create(ctx, client)
    ctx.crash("after-create")
    reason = event_reason or reasons.CREATED
    # No separate status write here: the caller's final write records the id, the
    # cleared intent and Ready together. A crash before it is recovered from the Secret.
    await install(ctx, webhook, secret, clear_pending=True, save=False)
    ctx.events.normal(reason, f"Created webhook {webhook.id} for {webhook.url}.")
    if webhook.status != ctx.spec.desired_remote_status:
        # POST /webhooks cannot set a status: a suspended resource is disabled right after.
        await updating.update_remote(ctx, client)


async def install(
    ctx: WebhookContext,
    webhook: Webhook,
    secret: SecretStr | None,
    *,
    clear_pending: bool = False,
    save: bool = True,
) -> None:
    """Write the Secret (when we hold a fresh signing secret), then record the webhook.

    ``clear_pending`` drops the recorded intent in the same status write that records
    the webhook id, so there is no instant with both or neither.
    """
    st = ctx.status
    rotate = ctx.annotations.get(reasons.ANNOTATION_ROTATE)
    if secret is not None:
        await secrets.write_secret(ctx, webhook, secret)
        st.rotating = None  # a fresh secret is in the Secret: no rotation left unanswered
        ctx.secret_fresh = True
        ctx.crash("after-secret")
        if rotate:
            # A fresh secret satisfies any pending rotation.
            st.rotate_token = secrets.annotation_token(rotate)
    # Only now: had the Secret write failed, record_failure would have saved "no intent,
    # no id" and the retry would create a duplicate.
    if clear_pending:
        st.pending = None
    st.webhook_id = webhook.id
    st.key_id = ctx.key_id or st.key_id
    st.remote_status = webhook.status
    st.created_at = ms_to_iso(webhook.created_at) or st.created_at or now_iso()
    st.applied = Applied(
        url=webhook.url,
        event_types=list(webhook.event_types),
        channel_id=webhook.channel_id,
        channel_type=webhook.channel_type,
    )
    st.secret_name = ctx.secret_name
    st.last_synced_at = now_iso()
    if save:
        await ctx.save_status()


async def list_now(
    ctx: WebhookContext, client: BlooioClient, intents: list[Pending]
) -> list[Webhook]:
    """Every webhook of this resource's key, listed late enough to show what ``intents``
    could have created (shared per key: one list serves every resource that needs it).

    A list is late enough once it started after each intent's POST could no longer be
    waiting for an answer (its start plus the client timeout plus the recovery delay), or
    started now. Later commits still (a request Blooio held longer than the client waited)
    are what ``status.abandoned`` watches for.
    """
    assert ctx.key_id is not None
    settings = ctx.settings
    settled = max(settled_at(settings, i.started_at) for i in intents) if intents else 0.0
    after = min(ctx.deps.clock(), settled)
    snapshot = await ctx.deps.snapshots.fresh(ctx.key_id, client, after=after)
    return list(snapshot.webhooks.values())


def candidates(ctx: WebhookContext, hooks: list[Webhook], pending: Pending) -> list[Webhook]:
    started = parse_iso(pending.started_at) or 0.0
    out = []
    for hook in hooks:
        if hook.url != pending.url or channel_of(hook) != channel_of(pending):
            continue
        if pending.event_types is not None and set(hook.event_types) != set(pending.event_types):
            continue
        if hook.id in ctx.claimed_ids or hook.id == pending.old_webhook_id:
            continue
        if hook.created_at is not None and hook.created_at / 1000 < started - RECOVERY_SKEW_SECONDS:
            continue
        out.append(hook)
    return out


async def recover_pending(ctx: WebhookContext, client: BlooioClient) -> None:
    """An intent without a recorded result: find what Blooio has before doing anything."""
    st = ctx.status
    pending = st.pending
    assert pending is not None
    if pending.operation == "replace" and st.webhook_id and st.webhook_id != pending.old_webhook_id:
        # The new webhook is installed; only the old one is left to delete.
        await updating.finish_replace(ctx, client, pending.old_webhook_id)
        return
    # Another process may still be waiting for this POST's answer (a crash, or an old
    # pod still terminating while its replacement starts): look only once it cannot
    # commit any more, or the list misses it and a second webhook is created.
    wait_until_settled(ctx, [pending.started_at], "An interrupted create")
    hooks = await list_now(ctx, client, [pending])
    matches = candidates(ctx, hooks, pending)
    own = await ctx.kube.read_secret(ctx.namespace, ctx.secret_name)
    in_secret = own.data.get(secrets.ID_KEY, b"").decode() if own and own.owned_by(ctx.uid) else ""
    by_secret = [m for m in matches if m.id == in_secret]
    if by_secret:
        # Crashed after the Secret was written: it already holds this webhook's secret.
        webhook = by_secret[0]
        await install(ctx, webhook, None, clear_pending=pending.operation == "create")
        await updating.update_remote(ctx, client)
        log.info("%s/%s: recovered webhook %s from its Secret", ctx.namespace, ctx.name, webhook.id)
    elif len(matches) == 1 or _own_late_commits(ctx, hooks, matches):
        # Several matches are fine when this resource's abandoned intents explain the
        # extra ones (their POSTs committed late): all are its own, nobody saw their
        # secrets. Keep the newest, delete the rest.
        webhook = max(matches, key=lambda h: h.created_at or 0)
        if not ctx.reserve(webhook.id):
            # Another resource's recovery took it a moment ago (same url and channel on a
            # shared key): look again, without it.
            raise TransientFailure(
                reasons.SETTLING,
                f"Webhook {webhook.id} was just recovered by another resource; looking again.",
                delay=1.0,
            )
        for extra in matches:
            if extra.id != webhook.id:
                await _delete_quietly(client, extra.id)
                log.info("%s/%s: deleted %s, a late duplicate", ctx.namespace, ctx.name, extra.id)
        # Rotate and record it *before* patching it to the current spec: a failure in
        # between must leave a webhook that still matches the intent (found again).
        secret = await secrets.fresh_secret(ctx, client, webhook.id)
        await install(ctx, webhook, secret, clear_pending=pending.operation == "create")
        await updating.update_remote(ctx, client)
        ctx.deps.metrics.rotations.labels("recovery").inc()
        ctx.events.normal(
            reasons.RECOVERED,
            f"Recovered webhook {webhook.id} created before an interruption; "
            "rotated its signing secret.",
        )
    elif not matches:
        # The interrupted POST may still commit after this list (a create that timed out
        # can land at Blooio seconds later). Remember the intent: the drift check deletes
        # such a late duplicate, whose secret nobody ever saw.
        st.abandoned = [*(st.abandoned or []), pending][-MAX_ABANDONED:]
        st.pending = None
        if pending.operation == "replace":
            await updating.replace(ctx, client)
        else:
            await create(ctx, client)
        return
    else:
        ids = ", ".join(sorted(m.id for m in matches))
        raise PermanentFailure(
            reasons.AMBIGUOUS_RECOVERY,
            f"Several webhooks at Blooio match this resource after an interrupted create "
            f"({ids}). Set annotation {reasons.ANNOTATION_ADOPT} to the one to keep and "
            "delete the others at Blooio.",
        )
    if pending.operation == "replace":
        await updating.finish_replace(ctx, client, pending.old_webhook_id)
    else:
        st.pending = None


def _own_late_commits(ctx: WebhookContext, hooks: list[Webhook], matches: list[Webhook]) -> bool:
    """Whether this resource's abandoned intents account for every match but one."""
    explained = [
        intent
        for intent in ctx.status.abandoned or []
        if any(h in matches for h in candidates(ctx, hooks, intent))
    ]
    return 1 < len(matches) <= 1 + len(explained)


async def _delete_quietly(client: BlooioClient, webhook_id: str) -> None:
    try:
        await client.delete_webhook(webhook_id)
    except NotFound:
        pass


async def recreate_missing(ctx: WebhookContext, client: BlooioClient) -> None:
    """The webhook vanished at Blooio: create a new one (new secret)."""
    old = ctx.status.webhook_id
    ctx.status.webhook_id = None
    ctx.status.applied = None
    await create(ctx, client, event_reason=reasons.RECREATED)
    ctx.deps.metrics.drift.labels("recreated").inc()
    log.info("%s/%s: webhook %s was missing at Blooio; recreated", ctx.namespace, ctx.name, old)
