"""The periodic check of one resource: restore a deleted or emptied Secret, correct drift
at Blooio from the per-key snapshot, and delete late commits of abandoned creates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from blooio_operator.blooio import BlooioClient, Forbidden, NotFound, Unauthorized, Webhook
from blooio_operator.models import reasons
from blooio_operator.models.resource import Pending
from blooio_operator.reconcile import create as creating
from blooio_operator.reconcile import lifecycle, secrets
from blooio_operator.reconcile.context import WebhookContext, parse_iso
from blooio_operator.reconcile.errors import CredentialsFailure
from blooio_operator.reconcile.remote import fetch_or_gone, patch_to_spec, remote_matches

log = logging.getLogger("blooio_operator.reconcile")


@dataclass
class Findings:
    """What one look at a settled resource found wrong (nothing, usually)."""

    remote_missing: bool = False
    drifted: Webhook | None = None
    late_commits: list[Webhook] = field(default_factory=list)
    abandoned_expired: bool = False  # intents past their watch window, to forget
    listed_at: float = 0.0
    list_error: Exception | None = None  # Blooio could not be asked; nothing known

    def __bool__(self) -> bool:
        return (
            self.remote_missing or self.abandoned_expired or bool(self.drifted or self.late_commits)
        )


async def periodic_check(ctx: WebhookContext, *, retrying: bool = False) -> None:
    """Look at a settled resource; act, on a freshly read body, only when something is wrong.

    The look uses the body the caller has (the registry's, moments old) and costs one
    Secret GET plus a share of the per-key list. Before anything is changed the resource
    is read again, and nothing is done if it changed meanwhile (the handler of that change
    owns it): a check never acts on a spec, status or deletionTimestamp older than itself.
    A failure to look (Blooio cannot list) is left to the next pass: nothing is known to be
    wrong, so Ready stays as it is, and the per-key list logs it once per key
    (``snapshots``). A key that Blooio rejects (401/403), and any failure while acting,
    propagates, to be recorded in the conditions and retried.

    ``retrying``: an earlier check failed and left the resource not Ready; no kopf handler
    retries that (status changes trigger none), so the full reconcile runs first, and
    Ready is marked only once the check itself went through (a correction that keeps
    failing must not flip Ready back and forth).
    """
    if ctx.deleting or lifecycle.is_waiting_for_human(ctx):
        return
    if retrying:
        if not await ctx.reread() or ctx.deleting or lifecycle.is_waiting_for_human(ctx):
            return
        await lifecycle.reconcile(ctx, finish=False)
    elif not lifecycle.is_settled(ctx):
        return  # a handler is on it (kopf retries what its handlers fail)
    client = await ctx.blooio()
    if await _secret_bad(ctx):
        if not await _unchanged_after_reread(ctx, retrying=retrying):
            return
        await secrets.ensure_secret(ctx, client)
        await ctx.save_status()
    findings = await _look(ctx, client)
    if not findings and findings.list_error is not None:
        if retrying:
            raise findings.list_error  # the correction that failed may still be due
        log.debug(
            "%s/%s: could not list webhooks: %s", ctx.namespace, ctx.name, findings.list_error
        )
        return
    if findings:
        if not await _unchanged_after_reread(ctx, retrying=retrying):
            return
        await _correct(ctx, client, findings)
    if retrying:
        lifecycle.finish_ready(ctx)
        await ctx.save_status()


async def _unchanged_after_reread(ctx: WebhookContext, *, retrying: bool = False) -> bool:
    """Read the resource again; False (act on nothing) if it changed in what was judged."""

    def identity() -> tuple[object, ...]:
        st = ctx.status
        return (ctx.deleting, ctx.generation, st.webhook_id, st.last_synced_at, st.secret_name)

    seen = identity()
    if not await ctx.reread() or identity() != seen:
        return False  # changed meanwhile: the handler of that change owns it now
    return lifecycle.is_settled(ctx, require_ready=not retrying)


async def _secret_bad(ctx: WebhookContext) -> bool:
    view = await ctx.kube.read_secret(ctx.namespace, ctx.secret_name)
    return not (
        view is not None
        and bool(view.data.get(secrets.SECRET_KEY))
        and view.data.get(secrets.ID_KEY, b"").decode() == ctx.status.webhook_id
    )


async def _look(ctx: WebhookContext, client: BlooioClient) -> Findings:
    st = ctx.status
    assert st.webhook_id is not None
    assert ctx.key_id is not None
    found = Findings()
    try:
        snapshot = await ctx.deps.snapshots.get(ctx.key_id, client)
    except (Unauthorized, Forbidden):
        raise  # the key is rejected: every resource using it shows it (CredentialsInvalid)
    except Exception as exc:  # a missing Secret is restored even while Blooio cannot list
        found.list_error = exc
        return found
    found.listed_at = snapshot.fetched_at
    hooks = list(snapshot.webhooks.values())
    for intent in st.abandoned or []:
        found.late_commits += [
            h
            for h in creating.candidates(ctx, hooks, intent)
            if h.id != st.webhook_id and h not in found.late_commits
        ]
    found.abandoned_expired = any(
        snapshot.fetched_at >= (parse_iso(i.started_at) or 0.0) + creating.ABANDONED_WATCH_SECONDS
        for i in st.abandoned or []
    )
    synced = parse_iso(st.last_synced_at) or 0.0
    if snapshot.fetched_at <= synced + 1.0:
        return found  # the snapshot predates our last write; it cannot judge us
    remote = snapshot.webhooks.get(st.webhook_id)
    if remote is None:
        try:
            remote = await fetch_or_gone(ctx, client, st.webhook_id)
        except (CredentialsFailure, Unauthorized, Forbidden):
            raise
        except Exception as exc:
            found.list_error = exc
            return found
        found.remote_missing = remote is None
    if remote is not None and not remote_matches(ctx, remote):
        found.drifted = remote
    return found


async def _correct(ctx: WebhookContext, client: BlooioClient, found: Findings) -> None:
    if found.late_commits or found.abandoned_expired:
        await sweep_abandoned(ctx, client, found.late_commits, found.listed_at)
    if found.remote_missing:
        await creating.recreate_missing(ctx, client)
        lifecycle.finish_ready(ctx)
        await ctx.save_status()
        return
    if found.drifted is not None:
        fixed = await patch_to_spec(ctx, client, found.drifted)
        await creating.install(ctx, fixed, None)
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
        for hook in creating.candidates(ctx, hooks, intent):
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
        if listed_at < (parse_iso(intent.started_at) or 0.0) + creating.ABANDONED_WATCH_SECONDS:
            keep.append(intent)
    st.abandoned = keep or None
    await ctx.save_status()
    return deleted
