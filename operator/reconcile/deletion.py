"""The finalizer: apply ``spec.deletionPolicy`` to the webhook(s) this resource owns.

A webhook another resource also records is never touched (it is theirs too), and the
credentials Secret's finalizer is released once no other resource refers to it.
"""

from __future__ import annotations

from blooio_operator.blooio import NotFound, UpdateWebhookRequest
from blooio_operator.models import reasons
from blooio_operator.reconcile import credentials
from blooio_operator.reconcile.context import WebhookContext
from blooio_operator.reconcile.create import candidates, list_now
from blooio_operator.reconcile.remote import wait_until_settled


async def finalize(ctx: WebhookContext) -> None:
    """The finalizer: apply spec.deletionPolicy to the webhook(s) this resource owns."""
    await _apply_policy(ctx)
    ref = ctx.spec.credentials_ref
    if ref is not None:
        await credentials.release_if_unused(ctx.kube, ctx.namespace, ref.name, except_uid=ctx.uid)


async def _apply_policy(ctx: WebhookContext) -> None:
    st, spec = ctx.status, ctx.spec
    secret_names = {ctx.secret_name, *([st.secret_name] if st.secret_name else [])}
    if spec.deletion_policy == "Orphan":
        # Secrets written under Orphan carry no ownerReference; earlier ones may.
        for name in secret_names:
            await ctx.kube.release_secret(ctx.namespace, name, ctx.uid)
    if ctx.annotations.get(reasons.ANNOTATION_SKIP_REMOTE_DELETE) == "true":
        ctx.events.normal(
            reasons.DELETED,
            f"{reasons.ANNOTATION_SKIP_REMOTE_DELETE} is set: released without touching "
            f"webhook {st.webhook_id or '(none)'} at Blooio.",
        )
        return
    if not ctx.claim_verified:
        ctx.events.normal(
            reasons.DELETED,
            f"status names webhook {st.webhook_id or '(none)'} (or an intent) the operator "
            "did not record for this resource: released without touching Blooio.",
        )
        return
    if spec.deletion_policy == "Orphan":
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
    held = [i for i in ids if i in ctx.claimed_ids]
    ids = [i for i in ids if i not in held]
    if not ids and not intents:
        _left_alone(ctx, held)
        return  # no call at all: the key may not even be usable any more
    client = await ctx.blooio()
    if intents:
        # An interrupted create may have left a webhook we never recorded. Its POST may
        # still commit for a while: released before that, the webhook would be orphaned.
        wait_until_settled(ctx, [i.started_at for i in intents], "An interrupted create")
        hooks = await list_now(ctx, client, intents)
        for intent in intents:
            ids += [h.id for h in candidates(ctx, hooks, intent) if h.id not in ids]
    for webhook_id in ids:
        try:
            if spec.deletion_policy == "Disable":
                await client.update_webhook(webhook_id, UpdateWebhookRequest(status="disabled"))
            else:
                await client.delete_webhook(webhook_id)
        except NotFound:
            pass
    ctx.crash("after-remote-delete")
    _left_alone(ctx, held)
    if held and not ids:
        return
    done = ", ".join(ids) or "(none)"
    if spec.deletion_policy == "Disable":
        ctx.events.normal(reasons.DISABLED, f"deletionPolicy Disable: disabled {done} at Blooio.")
    else:
        ctx.events.normal(reasons.DELETED, f"Deleted webhook {done} at Blooio.")


def _left_alone(ctx: WebhookContext, held: list[str]) -> None:
    if held:
        ctx.events.normal(
            reasons.DELETED,
            f"Webhook {', '.join(held)} is also held by another BlooioWebhook; left in "
            "place at Blooio.",
        )
