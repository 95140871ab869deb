"""The reconcile entry points: is there anything to do, do it, and record failures.

``reconcile`` is level-triggered: it compares the spec, the recorded status and (only
when needed) Blooio, and does the smallest set of calls that makes them agree. The work
itself lives in one module per concern: ``create`` (intent, POST, recovery), ``adopt``,
``update`` (in-place changes and channel replacement), ``secrets`` (the Secret and
rotation), ``periodic`` (Secret and drift checks), ``deletion`` (the finalizer), and
``remote`` (the webhook as this resource sees it, and whether it is gone).
"""

from __future__ import annotations

import logging

from blooio_operator.models import reasons
from blooio_operator.models.conditions import mark_ready, mark_reconciling, mark_stalled
from blooio_operator.reconcile import claims, episodes, secrets
from blooio_operator.reconcile import create as creating
from blooio_operator.reconcile import update as updating
from blooio_operator.reconcile.adopt import adopt
from blooio_operator.reconcile.context import WebhookContext, now_iso
from blooio_operator.reconcile.errors import CredentialsFailure, PermanentFailure, classify
from blooio_operator.reconcile.remote import applied_matches, channel_of, check_key

log = logging.getLogger("blooio_operator.reconcile")


def is_settled(ctx: WebhookContext, *, require_ready: bool = True) -> bool:
    """True when status proves there is nothing to do: zero calls, zero writes.

    ``require_ready=False``: everything recorded is in line with the spec, whatever the
    conditions say (a retry of the periodic check, which marks Ready only once its own
    correction went through).
    """
    st, spec = ctx.status, ctx.spec
    if st.pending is not None or not st.webhook_id or st.applied is None:
        return False
    if st.observed_generation != ctx.generation:
        return False
    if require_ready and not st.is_true(reasons.READY):
        return False
    if not applied_matches(ctx) or st.remote_status != spec.desired_remote_status:
        return False
    if st.secret_name != ctx.secret_name:
        return False
    rotate = ctx.annotations.get(reasons.ANNOTATION_ROTATE)
    if rotate and secrets.annotation_token(rotate) != st.rotate_token:
        return False
    adopt = ctx.annotations.get(reasons.ANNOTATION_ADOPT)
    return not adopt or adopt in (st.adopted_webhook_id, st.webhook_id)


# Permanent outcomes that only a change of the spec (or an annotation) can resolve.
_WAITING_FOR_A_SPEC_CHANGE = frozenset(
    {
        reasons.VALIDATION_FAILED,
        reasons.BAD_REQUEST,
        reasons.AMBIGUOUS_RECOVERY,
        reasons.WRITE_REJECTED,
        reasons.CLAIM_UNVERIFIED,
    }
)


def is_waiting_for_human(ctx: WebhookContext) -> bool:
    """Stalled on a permanent error for this very generation and annotations."""
    stalled = ctx.status.condition(reasons.STALLED)
    return (
        stalled is not None
        and stalled.status == "True"
        and stalled.reason in _WAITING_FOR_A_SPEC_CHANGE
        and stalled.observed_generation == ctx.generation
        and ctx.annotations.get(reasons.ANNOTATION_ADOPT) is None
    )


async def reconcile(ctx: WebhookContext, *, finish: bool = True) -> None:
    """Bring Blooio and the Secret in line with the spec, then mark Ready.

    ``finish=False``: do the work and save it, but leave the conditions to the caller
    (the periodic check's retry marks Ready only after its own correction went through,
    so a failing correction never flips Ready back and forth).
    """
    if is_settled(ctx):
        return
    client = await ctx.blooio()
    st, spec = ctx.status, ctx.spec
    adopt_id = ctx.annotations.get(reasons.ANNOTATION_ADOPT)
    if adopt_id:
        claims.forget_unverified(ctx)  # a status we did not seal: adopt from scratch
    await check_key(ctx, client)
    if adopt_id and adopt_id not in (st.adopted_webhook_id, st.webhook_id):
        await adopt(ctx, client, adopt_id)
    elif adopt_id and adopt_id == st.webhook_id and st.adopted_webhook_id != adopt_id:
        st.adopted_webhook_id = adopt_id
    if st.pending is not None:
        await creating.recover_pending(ctx, client)
    if not st.webhook_id:
        await creating.create(ctx, client)
    elif st.applied is not None and channel_of(st.applied) != (spec.channel_id, spec.channel_type):
        # Also after a recovery: the channel may have changed while the intent was pending.
        await updating.replace(ctx, client)
    else:
        await updating.update_remote(ctx, client)
    await secrets.ensure_rotation(ctx, client)
    await secrets.ensure_secret(ctx, client)
    if not finish:
        await ctx.save_status()
        return
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
    """Turn a failure into conditions + Event, write status; return the classified error.

    The episode's first failure changes the conditions and posts one Warning; a retry
    that fails the same way changes nothing (no write, no Event), only the delay grows
    (``episodes``). A failure of a new generation restates a permanent error.
    """
    attempt = max(ctx.attempt, ctx.deps.backoff.next_attempt(ctx.uid))
    err = classify(
        exc if isinstance(exc, Exception) else RuntimeError(str(exc)),
        settings=ctx.settings,
        attempt=attempt,
        action=action,
    )
    st = ctx.status
    if episodes.continues(st, err.reason, ctx.generation):
        return err
    if err.reason == reasons.SETTLING and episodes.failing(st) is not None:
        return err  # waiting out an interrupted request is part of the failure shown
    new_episode = episodes.failing(st) != err.reason
    now = now_iso()
    if isinstance(err, PermanentFailure | CredentialsFailure):
        st.conditions = mark_stalled(
            st.conditions, err.reason, err.message, generation=ctx.generation, now=now
        )
        st.observed_generation = ctx.generation
        if new_episode or isinstance(err, PermanentFailure):
            ctx.events.warning(err.reason, err.message)
    else:
        st.conditions = mark_reconciling(
            st.conditions, err.reason, err.message, generation=ctx.generation, now=now
        )
        if err.reason in (reasons.REMOTE_ERROR, reasons.OUTCOME_UNKNOWN) and new_episode:
            ctx.events.warning(reasons.REMOTE_ERROR, err.message)
    try:
        await ctx.save_status()
    except Exception as write_exc:
        log.warning("could not record status of %s/%s: %s", ctx.namespace, ctx.name, write_exc)
    return err
