"""Create, update, replace, recover, adopt, rotate and restore — one idempotent reconcile.

``reconcile`` is level-triggered: it compares the spec, the recorded status and (only
when needed) Blooio, and does the smallest set of calls that makes them agree. Every
non-idempotent call (create) is preceded by a recorded intent (``status.pending``), so a
crash at any instant is recovered by listing Blooio's webhooks and matching, never by
creating a duplicate.
"""

from __future__ import annotations

import logging

from pydantic import SecretStr

from blooio_operator.blooio import (
    ApiStatusError,
    BlooioClient,
    CreateWebhookRequest,
    NotFound,
    RateLimited,
    UpdateWebhookRequest,
    Webhook,
)
from blooio_operator.kube.client import SecretView
from blooio_operator.models import reasons
from blooio_operator.models.conditions import mark_ready, mark_reconciling, mark_stalled
from blooio_operator.models.resource import Applied, Pending
from blooio_operator.reconcile.context import WebhookContext, ms_to_iso, now_iso, parse_iso
from blooio_operator.reconcile.errors import (
    CredentialsFailure,
    PermanentFailure,
    classify,
)

log = logging.getLogger("blooio_operator.reconcile")

SECRET_KEY = "signing-secret"
ID_KEY = "webhook-id"
URL_KEY = "webhook-url"
# A recovered webhook must have been created no earlier than this before the intent
# (clock skew between Blooio and the cluster).
RECOVERY_SKEW_SECONDS = 120.0
# How long a create whose outcome was unknown, and for which recovery found nothing, is
# watched for a late commit at Blooio (deleted as a duplicate by the drift check).
ABANDONED_WATCH_SECONDS = 3600.0
MAX_ABANDONED = 5


# --- entry points -------------------------------------------------------------------


def is_settled(ctx: WebhookContext) -> bool:
    """True when status proves there is nothing to do: zero calls, zero writes."""
    st, spec = ctx.status, ctx.spec
    if st.pending is not None or not st.webhook_id or st.applied is None:
        return False
    if st.observed_generation != ctx.generation or not st.is_true(reasons.READY):
        return False
    if not _applied_matches(ctx) or st.remote_status != spec.desired_remote_status:
        return False
    if st.secret_name != ctx.secret_name:
        return False
    rotate = ctx.annotations.get(reasons.ANNOTATION_ROTATE)
    if rotate and rotate != st.rotate_token:
        return False
    adopt = ctx.annotations.get(reasons.ANNOTATION_ADOPT)
    return not adopt or adopt in (st.adopted_webhook_id, st.webhook_id)


def is_waiting_for_human(ctx: WebhookContext) -> bool:
    """Stalled on a permanent error for this very generation and annotations."""
    stalled = ctx.status.condition(reasons.STALLED)
    return (
        stalled is not None
        and stalled.status == "True"
        and stalled.reason
        in (reasons.VALIDATION_FAILED, reasons.BAD_REQUEST, reasons.AMBIGUOUS_RECOVERY)
        and stalled.observed_generation == ctx.generation
        and ctx.annotations.get(reasons.ANNOTATION_ADOPT) is None
    )


async def reconcile(ctx: WebhookContext) -> None:
    """Bring Blooio and the Secret in line with the spec, then mark Ready."""
    if is_settled(ctx):
        return
    client = await ctx.blooio()
    st, spec = ctx.status, ctx.spec
    adopt_id = ctx.annotations.get(reasons.ANNOTATION_ADOPT)
    if adopt_id and adopt_id not in (st.adopted_webhook_id, st.webhook_id):
        await adopt(ctx, client, adopt_id)
    elif adopt_id and adopt_id == st.webhook_id and st.adopted_webhook_id != adopt_id:
        st.adopted_webhook_id = adopt_id
    if st.pending is not None:
        await recover_pending(ctx, client)
    elif not st.webhook_id:
        await create(ctx, client)
    elif st.applied is not None and _channel(st.applied) != (spec.channel_id, spec.channel_type):
        await replace(ctx, client)
    else:
        await update_remote(ctx, client)
    await ensure_rotation(ctx, client)
    await ensure_secret(ctx, client)
    finish_ready(ctx)
    await ctx.save_status(last=True)


def finish_ready(ctx: WebhookContext) -> None:
    st = ctx.status
    message = f"Webhook {st.webhook_id} is {st.remote_status}; Secret {st.secret_name} is current."
    reason = reasons.SUSPENDED_REASON if ctx.spec.suspend else reasons.SYNCED
    st.conditions = mark_ready(
        st.conditions, reason, message, generation=ctx.generation, now=now_iso()
    )
    st.observed_generation = ctx.generation


async def record_failure(ctx: WebhookContext, exc: BaseException, *, action: str) -> Exception:
    """Turn a failure into conditions + Event, write status; return the classified error."""
    err = classify(
        exc if isinstance(exc, Exception) else RuntimeError(str(exc)),
        settings=ctx.settings,
        attempt=ctx.attempt,
        action=action,
    )
    st = ctx.status
    now = now_iso()
    if isinstance(err, PermanentFailure | CredentialsFailure):
        st.conditions = mark_stalled(
            st.conditions, err.reason, err.message, generation=ctx.generation, now=now
        )
        st.observed_generation = ctx.generation
        ctx.events.warning(err.reason, err.message)
    else:
        st.conditions = mark_reconciling(
            st.conditions, err.reason, err.message, generation=ctx.generation, now=now
        )
        if err.reason in (reasons.REMOTE_ERROR, reasons.OUTCOME_UNKNOWN) and ctx.attempt == 0:
            ctx.events.warning(reasons.REMOTE_ERROR, err.message)
    try:
        await ctx.save_status()
    except Exception as write_exc:
        log.warning("could not record status of %s/%s: %s", ctx.namespace, ctx.name, write_exc)
    return err


# --- create and recovery --------------------------------------------------------------


def _channel(obj: Applied | Pending | Webhook) -> tuple[str | None, str | None]:
    return obj.channel_id, obj.channel_type


def _applied_matches(ctx: WebhookContext) -> bool:
    applied, spec = ctx.status.applied, ctx.spec
    return (
        applied is not None
        and applied.url == spec.url
        and set(applied.event_types) == set(spec.event_types)
        and _channel(applied) == (spec.channel_id, spec.channel_type)
    )


def _create_request(ctx: WebhookContext) -> CreateWebhookRequest:
    spec = ctx.spec
    return CreateWebhookRequest(
        url=spec.url,
        event_types=list(spec.event_types),
        channel_id=spec.channel_id,
        channel_type=spec.channel_type,
    )


async def _post_create(ctx: WebhookContext, client: BlooioClient) -> tuple[Webhook, SecretStr]:
    """POST /webhooks once. Definitive 4xx clear the intent; anything else keeps it."""
    try:
        created = await client.create_webhook(_create_request(ctx))
    except ApiStatusError as exc:
        if 400 <= exc.status < 500:
            ctx.status.pending = None  # Blooio answered: nothing was created
            if isinstance(exc, RateLimited):
                raise
        raise
    return created, created.signing_secret


async def create(ctx: WebhookContext, client: BlooioClient, *, event_reason: str = "") -> None:
    """Create the webhook with the intent recorded first (crash-safe)."""
    ctx.secret_view = await assert_secret_writable(ctx)
    ctx.secret_view_known = True
    spec, st = ctx.spec, ctx.status
    st.pending = Pending(
        operation="create",
        started_at=now_iso(),
        url=spec.url,
        channel_id=spec.channel_id,
        channel_type=spec.channel_type,
    )
    st.conditions = mark_reconciling(
        st.conditions,
        reasons.CREATING,
        "Creating the webhook at Blooio.",
        generation=ctx.generation,
        now=now_iso(),
    )
    await ctx.save_status()
    ctx.crash("before-create")
    webhook, secret = await _post_create(ctx, client)
    ctx.crash("after-create")
    reason = event_reason or reasons.CREATED
    # No separate status write here: the caller's final write records the id, the
    # cleared intent and Ready together. A crash before it is recovered from the Secret.
    await install(ctx, webhook, secret, clear_pending=True, save=False)
    ctx.events.normal(reason, f"Created webhook {webhook.id} for {webhook.url}.")
    if webhook.status != ctx.spec.desired_remote_status:
        # POST /webhooks cannot set a status: a suspended resource is disabled right after.
        await update_remote(ctx, client)


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
        await write_secret(ctx, webhook, secret)
        ctx.secret_fresh = True
        ctx.crash("after-secret")
        if rotate:
            st.rotate_token = rotate  # a fresh secret satisfies any pending rotation
    # Only now: had the Secret write failed, record_failure would have saved "no intent,
    # no id" and the retry would create a duplicate.
    if clear_pending:
        st.pending = None
    st.webhook_id = webhook.id
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


def _candidates(ctx: WebhookContext, hooks: list[Webhook], pending: Pending) -> list[Webhook]:
    started = parse_iso(pending.started_at) or 0.0
    out = []
    for hook in hooks:
        if hook.url != pending.url or _channel(hook) != _channel(pending):
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
        await _finish_replace(ctx, client, pending.old_webhook_id)
        return
    hooks = await client.list_webhooks()
    matches = _candidates(ctx, hooks, pending)
    own = await ctx.kube.read_secret(ctx.namespace, ctx.secret_name)
    in_secret = own.data.get(ID_KEY, b"").decode() if own and own.controller_uid == ctx.uid else ""
    by_secret = [m for m in matches if m.id == in_secret]
    if by_secret:
        # Crashed after the Secret was written: it already holds this webhook's secret.
        webhook = by_secret[0]
        await install(ctx, webhook, None, clear_pending=pending.operation == "create")
        await update_remote(ctx, client)
        log.info("%s/%s: recovered webhook %s from its Secret", ctx.namespace, ctx.name, webhook.id)
    elif len(matches) == 1:
        webhook = await _patch_to_spec(ctx, client, matches[0])
        rotated = await client.rotate_secret(webhook.id)
        ctx.crash("after-rotate")
        await install(
            ctx, webhook, rotated.signing_secret, clear_pending=pending.operation == "create"
        )
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
            await replace(ctx, client)
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
        await _finish_replace(ctx, client, pending.old_webhook_id)
    else:
        st.pending = None


# --- adopt -----------------------------------------------------------------------------


async def adopt(ctx: WebhookContext, client: BlooioClient, webhook_id: str) -> None:
    await assert_secret_writable(ctx)
    try:
        webhook = await client.get_webhook(webhook_id)
    except NotFound:
        raise PermanentFailure(
            reasons.ADOPTION_FAILED,
            f"{reasons.ANNOTATION_ADOPT}: webhook {webhook_id} does not exist at Blooio "
            "for this API key.",
        ) from None
    if _channel(webhook) != (ctx.spec.channel_id, ctx.spec.channel_type):
        raise PermanentFailure(
            reasons.ADOPTION_FAILED,
            f"Webhook {webhook_id} has channel {webhook.channel_id}/{webhook.channel_type}, "
            "the spec asks for another; channels cannot be changed in place.",
        )
    webhook = await _patch_to_spec(ctx, client, webhook)
    rotated = await client.rotate_secret(webhook.id)
    ctx.crash("after-rotate")
    previous = ctx.status.webhook_id
    await install(ctx, webhook, rotated.signing_secret, clear_pending=True)
    # After install: recorded earlier, a failed Secret write would mark the adoption done.
    ctx.status.adopted_webhook_id = webhook_id
    ctx.status.secret_rotated_at = now_iso()
    ctx.deps.metrics.rotations.labels("adoption").inc()
    note = f" (previously {previous}, left untouched at Blooio)" if previous else ""
    ctx.events.normal(
        reasons.ADOPTED, f"Adopted webhook {webhook_id}{note}; rotated its signing secret."
    )


# --- update and replace ---------------------------------------------------------------


async def _patch_to_spec(ctx: WebhookContext, client: BlooioClient, webhook: Webhook) -> Webhook:
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
        await recreate_missing(ctx, client)
        return
    await install(ctx, webhook, None)
    if url_changed or events_changed:
        ctx.events.normal(
            reasons.UPDATED, f"Updated webhook {webhook.id} (url/eventTypes) to match the spec."
        )
    if status_changed:
        if spec.suspend:
            ctx.events.normal(reasons.SUSPENDED, f"Webhook {webhook.id} disabled at Blooio.")
        else:
            ctx.events.normal(reasons.RESUMED, f"Webhook {webhook.id} active again at Blooio.")


async def recreate_missing(ctx: WebhookContext, client: BlooioClient) -> None:
    """The webhook vanished at Blooio: create a new one (new secret)."""
    old = ctx.status.webhook_id
    ctx.status.webhook_id = None
    ctx.status.applied = None
    await create(ctx, client, event_reason=reasons.RECREATED)
    ctx.deps.metrics.drift.labels("recreated").inc()
    log.info("%s/%s: webhook %s was missing at Blooio; recreated", ctx.namespace, ctx.name, old)


async def replace(ctx: WebhookContext, client: BlooioClient) -> None:
    """channelId/channelType changed: create the new webhook, switch, then delete the old."""
    await assert_secret_writable(ctx)
    spec, st = ctx.spec, ctx.status
    old = st.webhook_id
    st.pending = Pending(
        operation="replace",
        started_at=now_iso(),
        url=spec.url,
        channel_id=spec.channel_id,
        channel_type=spec.channel_type,
        old_webhook_id=old,
    )
    st.conditions = mark_reconciling(
        st.conditions,
        reasons.UPDATING,
        f"Replacing webhook {old} (channel changed).",
        generation=ctx.generation,
        now=now_iso(),
    )
    await ctx.save_status()
    webhook, secret = await _post_create(ctx, client)
    ctx.crash("after-replace-create")
    await install(ctx, webhook, secret)
    if webhook.status != spec.desired_remote_status:
        await update_remote(ctx, client)  # POST cannot set a status (see create)
    await _finish_replace(ctx, client, old)


async def _finish_replace(ctx: WebhookContext, client: BlooioClient, old: str | None) -> None:
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


# --- rotation and the Secret --------------------------------------------------------------


async def ensure_rotation(ctx: WebhookContext, client: BlooioClient) -> None:
    token = ctx.annotations.get(reasons.ANNOTATION_ROTATE)
    if not token or token == ctx.status.rotate_token:
        return
    await rotate_into_secret(ctx, client, reason="annotation")
    ctx.status.rotate_token = token
    await ctx.save_status()
    ctx.events.normal(
        reasons.SECRET_ROTATED,
        f"Rotated the signing secret of {ctx.status.webhook_id} ({reasons.ANNOTATION_ROTATE}).",
    )


async def rotate_into_secret(ctx: WebhookContext, client: BlooioClient, *, reason: str) -> None:
    st = ctx.status
    assert st.webhook_id is not None
    await assert_secret_writable(ctx)
    try:
        rotated = await client.rotate_secret(st.webhook_id)
    except NotFound:
        await recreate_missing(ctx, client)
        return
    ctx.crash("after-rotate")
    await write_secret(ctx, _recorded_webhook(ctx), rotated.signing_secret)
    st.secret_rotated_at = now_iso()
    st.secret_name = ctx.secret_name
    ctx.deps.metrics.rotations.labels(reason).inc()


def _recorded_webhook(ctx: WebhookContext) -> Webhook:
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


def _secret_labels(ctx: WebhookContext) -> dict[str, str]:
    return {
        **ctx.spec.secret.labels,
        reasons.LABEL_MANAGED_BY: reasons.MANAGED_BY,
        reasons.LABEL_WEBHOOK: ctx.name,
    }


async def assert_secret_writable(ctx: WebhookContext) -> SecretView | None:
    view = await ctx.kube.read_secret(ctx.namespace, ctx.secret_name)
    if view is not None and view.controller_uid != ctx.uid:
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
        labels=_secret_labels(ctx),
        annotations=dict(ctx.spec.secret.annotations),
        owner=ctx.owner,
        exists=view is not None,
    )


async def ensure_secret(ctx: WebhookContext, client: BlooioClient) -> None:
    """The Secret exists, is ours, and holds the current webhook's data and metadata."""
    st = ctx.status
    if ctx.secret_fresh and st.secret_name == ctx.secret_name:
        return  # written moments ago in this reconcile, from a fresh signing secret
    view = await assert_secret_writable(ctx)
    if st.secret_name and st.secret_name != ctx.secret_name:
        await _move_secret(ctx, client, st.secret_name)
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
    labels_ok = all(view.labels.get(k) == v for k, v in _secret_labels(ctx).items())
    annotations_ok = all(
        view.annotations.get(k) == v for k, v in ctx.spec.secret.annotations.items()
    )
    url_ok = view.data.get(URL_KEY, b"").decode() == ctx.spec.url
    if labels_ok and annotations_ok and url_ok:
        return
    await write_secret(ctx, _recorded_webhook(ctx), SecretStr(view.data[SECRET_KEY].decode()))


async def _move_secret(ctx: WebhookContext, client: BlooioClient, old_name: str) -> None:
    """spec.secret.name changed: copy the current secret to the new name (or rotate)."""
    old = await ctx.kube.read_secret(ctx.namespace, old_name)
    st = ctx.status
    if (
        old is not None
        and old.controller_uid == ctx.uid
        and old.data.get(SECRET_KEY)
        and (old.data.get(ID_KEY, b"").decode() == st.webhook_id)
    ):
        await write_secret(ctx, _recorded_webhook(ctx), SecretStr(old.data[SECRET_KEY].decode()))
    else:
        await rotate_into_secret(ctx, client, reason="restore")
    st.secret_name = ctx.secret_name
    await ctx.save_status()
    if old is not None and old.controller_uid == ctx.uid:
        await ctx.kube.delete_secret(ctx.namespace, old_name)


# --- periodic checks ------------------------------------------------------------------------


async def periodic_check(ctx: WebhookContext) -> None:
    """Timer: restore a deleted/emptied Secret; correct drift from the per-key snapshot."""
    st = ctx.status
    if not st.webhook_id or st.pending is not None or not st.is_true(reasons.READY):
        return
    if st.observed_generation != ctx.generation:
        return
    view = await ctx.kube.read_secret(ctx.namespace, ctx.secret_name)
    secret_ok = (
        view is not None
        and bool(view.data.get(SECRET_KEY))
        and view.data.get(ID_KEY, b"").decode() == st.webhook_id
    )
    client: BlooioClient | None = None
    if not secret_ok:
        client = await ctx.blooio()
        await ensure_secret(ctx, client)
        await ctx.save_status()
    client = client or await ctx.blooio()
    assert ctx.key_id is not None
    snapshot = await ctx.deps.snapshots.get(ctx.key_id, client)
    if st.abandoned:
        await sweep_abandoned(ctx, client, list(snapshot.webhooks.values()), snapshot.fetched_at)
    synced = parse_iso(st.last_synced_at) or 0.0
    if snapshot.fetched_at <= synced + 1.0:
        return  # the snapshot predates our last write; it cannot judge us
    remote = snapshot.webhooks.get(st.webhook_id)
    if remote is None:
        try:
            remote = await client.get_webhook(st.webhook_id)
        except NotFound:
            await recreate_missing(ctx, client)
            finish_ready(ctx)
            await ctx.save_status()
            return
    if _remote_matches(ctx, remote):
        return
    fixed = await _patch_to_spec(ctx, client, remote)
    await install(ctx, fixed, None)
    ctx.deps.metrics.drift.labels("patched").inc()
    ctx.events.normal(
        reasons.DRIFT_CORRECTED,
        f"Webhook {fixed.id} was changed at Blooio; patched it back to the spec.",
    )


async def sweep_abandoned(
    ctx: WebhookContext, client: BlooioClient, hooks: list[Webhook], listed_at: float
) -> list[str]:
    """Delete late commits of abandoned creates; forget intents past the watch window."""
    st = ctx.status
    deleted: list[str] = []
    keep: list[Pending] = []
    for intent in st.abandoned or []:
        for hook in _candidates(ctx, hooks, intent):
            if hook.id == st.webhook_id or hook.id in deleted:
                continue
            try:
                await client.delete_webhook(hook.id)
            except NotFound:
                pass
            deleted.append(hook.id)
            log.info(
                "%s/%s: deleted %s, a late commit of an interrupted create",
                ctx.namespace,
                ctx.name,
                hook.id,
            )
        if listed_at < (parse_iso(intent.started_at) or 0.0) + ABANDONED_WATCH_SECONDS:
            keep.append(intent)
    st.abandoned = keep or None
    await ctx.save_status()
    return deleted


def _remote_matches(ctx: WebhookContext, remote: Webhook) -> bool:
    spec = ctx.spec
    return (
        remote.url == spec.url
        and set(remote.event_types) == set(spec.event_types)
        and remote.status == spec.desired_remote_status
    )


# --- deletion ---------------------------------------------------------------------------


async def finalize(ctx: WebhookContext) -> None:
    """The finalizer: apply spec.deletionPolicy to the webhook(s) this resource owns."""
    st, spec = ctx.status, ctx.spec
    secret_names = {ctx.secret_name, *([st.secret_name] if st.secret_name else [])}
    if ctx.annotations.get(reasons.ANNOTATION_SKIP_REMOTE_DELETE) == "true":
        if spec.deletion_policy == "Orphan":
            for name in secret_names:
                await ctx.kube.release_secret(ctx.namespace, name, ctx.uid)
        ctx.events.normal(
            reasons.DELETED,
            f"{reasons.ANNOTATION_SKIP_REMOTE_DELETE} is set: released without touching "
            f"webhook {st.webhook_id or '(none)'} at Blooio.",
        )
        return
    if spec.deletion_policy == "Orphan":
        for name in secret_names:
            await ctx.kube.release_secret(ctx.namespace, name, ctx.uid)
        ctx.events.normal(
            reasons.ORPHANED,
            f"deletionPolicy Orphan: webhook {st.webhook_id or '(none)'} and Secret "
            f"{ctx.secret_name} are left in place.",
        )
        return
    # dict.fromkeys: after a crash right after a replace POST both name the old webhook.
    ids = list(
        dict.fromkeys(
            i for i in (st.webhook_id, st.pending.old_webhook_id if st.pending else None) if i
        )
    )
    intents = [*([st.pending] if st.pending else []), *(st.abandoned or [])]
    if not ids and not intents:
        return  # nothing was ever created
    client = await ctx.blooio()
    if intents:
        # An interrupted create may have left a webhook we never recorded.
        hooks = await client.list_webhooks()
        for intent in intents:
            ids += [h.id for h in _candidates(ctx, hooks, intent) if h.id not in ids]
    for webhook_id in ids:
        try:
            if spec.deletion_policy == "Disable":
                await client.update_webhook(webhook_id, UpdateWebhookRequest(status="disabled"))
            else:
                await client.delete_webhook(webhook_id)
        except NotFound:
            pass
    ctx.crash("after-remote-delete")
    done = ", ".join(ids) or "(none)"
    if spec.deletion_policy == "Disable":
        ctx.events.normal(reasons.DISABLED, f"deletionPolicy Disable: disabled {done} at Blooio.")
    else:
        ctx.events.normal(reasons.DELETED, f"Deleted webhook {done} at Blooio.")
