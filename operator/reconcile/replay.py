"""Replaying deliveries the receiver rejected: after a signing-secret change, and on request.

Blooio invalidates the old signing secret at once, so deliveries made between a change
(``SecretRotated``, ``SecretRestored``, ``Adopted``: ``status.secretRotatedAt``; a
``Replaced``/``Recreated`` webhook: a new ``status.webhookId``) and the moment the
receiver re-reads its mounted Secret are rejected with 401/403. After a grace period the
operator looks for them and, in one *episode* recorded in ``status.deliveries.replay``:

1. ``waiting`` -> ``probing``: replays the oldest one and checks its outcome a little
   later; if it is rejected again, backs off and probes again, up to the window;
2. ``replaying``: replays the rest, a batch at a time, at the per-key rate limit, with
   the batch recorded in ``inflight`` *before* it is posted;
3. ``verifying``: counts what the receiver accepted, posts one ``DeliveriesReplayed``
   Event and records the result in ``status.deliveries.lastReplay``.

After the window it gives up with one Warning ``DeliveriesNotReplayed`` naming the count,
whatever the state (a probe never listed, an outcome that never comes, Blooio failing
every call): every branch ends by ``giveUpAt``. ``blooio.com/replay-failed-since:
"<RFC 3339>"`` runs the same episode for every failed delivery since that time (any
failure), once per new value; an unusable value gets one ``ReplayRequestInvalid``. No
episode reaches deliveries made before this resource held the webhook
(``replay_plan.held_since``: an adopted webhook's earlier deliveries were another's).

While the resource is suspended (or its webhook is disabled at Blooio, which refuses
replays) the episode is *parked*: nothing is posted, refused or given up. When it is
resumed, the episode continues where it stood with its window restarted.

When an episode is due and what a listing shows are in ``replay_plan``. At most once:
an event counts as replayed in this episode when Blooio lists another delivery of the
same ``event_id`` created after the episode started (a replay re-sends the same event).
That evidence, read from the list before every batch and before a probe is sent again,
decides what is left to do. A replay sent without an answer (a crash, a timeout, a 5xx:
the probe's ``probeAt`` or the batch's ``inflight``, recorded before the POST) is judged
by it only once it can no longer commit (``remote.settled_at``), as a create intent is,
so neither a crash nor a late commit sends anything twice. This relies on a queued
replay being listed at once, as the ``201`` with its new delivery id suggests (the
simulator does so). Decisions need the whole list: when it has more pages than
``BLOOIO_REPLAY_PAGES``, nothing is replayed (the evidence could be on a page not read)
and the episode gives up, saying why.
"""

from __future__ import annotations

import logging
import time

from blooio_operator.blooio import ApiStatusError, BlooioClient, BlooioError, WebhookDelivery
from blooio_operator.models import reasons
from blooio_operator.models.conditions import set_condition
from blooio_operator.models.resource import (
    DeliveriesStatus,
    ReplayEpisode,
    ReplayRecord,
    WebhookStatus,
)
from blooio_operator.reconcile.context import WebhookContext
from blooio_operator.reconcile.deliveries import (
    NOT_REPLAYED_MARK,
    list_deliveries,
    outcome,
)
from blooio_operator.reconcile.errors import ReconcileError
from blooio_operator.reconcile.replay_plan import (
    BATCH,
    CHANGE_SKEW_SECONDS,
    EVIDENCE_SKEW_SECONDS,
    MAX_PROBE_BACKOFF_SECONDS,
    REQUEST_WINDOW_SECONDS,
    Evidence,
    deferred,
    episode_due,
    epoch,
    held_since,
    iso,
    iso_floor,
    needs_webhook_record,
    parked,
    parse_request,
    request_problem,
    requested,
    secret_change,
    unsettled_until,
)
from blooio_operator.reconcile.secrets import annotation_token
from blooio_operator.settings import Settings

log = logging.getLogger("blooio_operator.reconcile")


# --- the step ------------------------------------------------------------------------


def _deliveries(status: WebhookStatus) -> DeliveriesStatus:
    if status.deliveries is None:
        status.deliveries = DeliveriesStatus()
    return status.deliveries


async def step(
    ctx: WebhookContext, *, previous_webhook_id: str | None = None, now: float | None = None
) -> float | None:
    """Advance this resource's replays by one step; return when the next one is due.

    The caller holds the object's lock and has just read the resource; every status
    change is saved here (only the fields that changed). A failure (Blooio, credentials)
    is raised for the caller to retry, until the episode's window has ended: then the
    episode gives up instead (one Warning, a recorded result).
    """
    now = time.time() if now is None else now
    st, settings = ctx.status, ctx.settings
    if ctx.deleting or not st.webhook_id:
        return None
    if needs_webhook_record(st, previous_webhook_id):
        _deliveries(st).webhook_id = previous_webhook_id
        await ctx.save_status()
    d = st.deliveries
    episode = d.replay if d is not None else None
    if episode is None:
        episode_or_due = await _begin(ctx, now)
        if not isinstance(episode_or_due, ReplayEpisode):
            return episode_or_due
        episode = episode_or_due
    else:
        _follow_newer_change(st, episode, settings, now)
    _keep_to_own_deliveries(st, episode, now)
    if deferred(st, suspend=ctx.spec.suspend):
        await _park(ctx, episode)
        return None  # due again when the resource is resumed (replay_plan.due_at)
    if parked(episode):
        _resume(ctx, episode, now)
        # Saved before any call: a failing call must not restart the window again.
        await ctx.save_status()
    settle = unsettled_until(episode, settings)
    if settle is not None and now < settle and now >= (epoch(episode.give_up_at) or now):
        await _give_up_unsettled(ctx, episode, now)
        return None
    due = episode_due(episode, settings, now=now)
    if due is not None and now < due:
        await ctx.save_status()  # an episode just begun or moved by a newer change
        return due
    evidence: Evidence | None = None
    try:
        client = await ctx.blooio()
        listing = await list_deliveries(client, st.webhook_id, max_pages=settings.replay_pages)
        evidence = Evidence(listing)
        return await _advance(ctx, client, episode, evidence, now)
    except (BlooioError, ReconcileError) as exc:
        if now < (epoch(episode.give_up_at) or now):
            raise
        count = len(_not_replayed(episode, evidence)) if evidence is not None else None
        why = f"Blooio failed every try until the window ended (last: {_describe(exc)})"
        await _give_up(ctx, episode, count or None, why, now)
        return None


async def _give_up_unsettled(ctx: WebhookContext, episode: ReplayEpisode, now: float) -> None:
    """The window ended while replays sent without an answer could still commit: give up
    without sending anything more (at most once), counting from a listing if one can be
    read."""
    evidence: Evidence | None = None
    try:
        client = await ctx.blooio()
        listing = await list_deliveries(
            client, ctx.status.webhook_id or "", max_pages=ctx.settings.replay_pages
        )
        evidence = Evidence(listing)
    except (BlooioError, ReconcileError):
        pass  # the count stays unknown
    await _give_up(
        ctx,
        episode,
        len(_not_replayed(episode, evidence)) or None,
        "the window ended while replays sent without an answer from Blooio could still "
        "be committed (they are not sent again)",
        now,
    )


async def _advance(
    ctx: WebhookContext,
    client: BlooioClient,
    episode: ReplayEpisode,
    evidence: Evidence,
    now: float,
) -> float | None:
    settings = ctx.settings
    if not evidence.listing.complete:
        todo = [f for f in evidence.affected(episode) if not evidence.accepted(f)]
        why = (
            f"Blooio lists more than {settings.replay_pages} page(s) of deliveries and "
            "documents no order, so the operator cannot tell which were already replayed "
            "(raise BLOOIO_REPLAY_PAGES)"
        )
        await _give_up(ctx, episode, len(todo) or None, why, now)
        return None
    if episode.phase == "waiting":
        return await _waiting(ctx, client, episode, evidence, now)
    if episode.phase == "probing":
        return await _probing(ctx, client, episode, evidence, now)
    if episode.phase == "replaying":
        return await _replaying(ctx, client, episode, evidence, now)
    return await _verifying(ctx, episode, evidence, now)


def _describe(exc: Exception) -> str:
    """A failure in a few words for an Event (Blooio's message, never a secret)."""
    if isinstance(exc, ApiStatusError):
        text = f"HTTP {exc.status}: {exc.message}"
    elif isinstance(exc, ReconcileError):
        text = exc.message
    elif isinstance(exc, BlooioError):
        text = f"{type(exc).__name__}: {exc.message}"
    else:
        text = type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _keep_to_own_deliveries(st: WebhookStatus, episode: ReplayEpisode, now: float) -> None:
    """Never reach deliveries made before this resource held the webhook (an adopted
    webhook's earlier deliveries were another owner's, sent to another url)."""
    held = held_since(st, now=now)
    if held is not None and held > (epoch(episode.since) or 0.0):
        episode.since = iso_floor(held)


async def _park(ctx: WebhookContext, episode: ReplayEpisode) -> None:
    """Hold the episode while replays cannot be sent: nothing is posted, nothing is
    recorded as refused, and the window does not run out (``_resume`` restarts it).

    What was posted stays recorded (``startedAt``, the probe, ``inflight``): the evidence
    rule and the settle time apply on resumption as after a crash.
    """
    if not parked(episode):
        episode.phase = "waiting"
        episode.next_at = None
        log.info(
            "%s/%s: replays held while the resource is suspended (resumed: they continue)",
            ctx.namespace,
            ctx.name,
        )
    await ctx.save_status()


def _resume(ctx: WebhookContext, episode: ReplayEpisode, now: float) -> None:
    """A parked episode continues: probing again if it had begun (the receiver may have
    changed meanwhile), with its window restarted from now."""
    window = ctx.settings.replay_window_seconds
    if episode.trigger == "request" and window <= 0:
        window = REQUEST_WINDOW_SECONDS
    episode.give_up_at = iso(max(epoch(episode.give_up_at) or 0.0, now + window))
    episode.phase = "probing" if episode.started_at is not None else "waiting"
    episode.next_at = iso_floor(now)
    log.info("%s/%s: resumed; replays continue", ctx.namespace, ctx.name)


async def _begin(ctx: WebhookContext, now: float) -> ReplayEpisode | float | None:
    """Start an episode if one is due; else when one will be (or None)."""
    st, settings = ctx.status, ctx.settings
    window = settings.replay_window_seconds
    change = secret_change(st)
    if change is not None and window > 0 and now < change + window:
        ready = change + settings.replay_grace_seconds
        if now < ready:
            return ready
        episode = ReplayEpisode(
            trigger="rotation",
            since=iso_floor(change - CHANGE_SKEW_SECONDS),
            changed_at=iso_floor(change),
            give_up_at=iso(change + window),
        )
        _deliveries(st).replay = episode
        return episode
    token = requested(st, ctx.annotations)
    if token is None:
        return None
    problem = request_problem(token, now=now)
    since = parse_request(token)
    d = _deliveries(st)
    if problem is not None or since is None:
        # Recorded as dealt with: one Warning per value, no retry.
        d.replay_token = annotation_token(token)  # bounded: the value may be 256 KiB
        await ctx.save_status()
        ctx.events.warning(
            reasons.REPLAY_REQUEST_INVALID,
            f"{reasons.ANNOTATION_REPLAY_SINCE}: {token[:64]!r} {problem}; nothing was replayed.",
        )
        return None
    held = held_since(st, now=now)
    episode = ReplayEpisode(
        trigger="request",
        since=iso_floor(max(since, held if held is not None else since)),
        token=token,
        give_up_at=iso(now + (window if window > 0 else REQUEST_WINDOW_SECONDS)),
    )
    d.replay = episode
    return episode


def _follow_newer_change(
    st: WebhookStatus, episode: ReplayEpisode, settings: Settings, now: float
) -> None:
    """Another signing-secret change during a rotation episode: probe again after its
    grace period; what was replayed stays replayed (at most once)."""
    if episode.trigger != "rotation":
        return
    change = secret_change(st)
    if change is None or change <= (epoch(episode.changed_at) or 0.0) + 1:
        return
    d = _deliveries(st)
    # A probe sent without an answer stays recorded: it may still commit, and the next
    # probe is sent only once the evidence shows it did not (never twice).
    unanswered = episode.probe_at is not None and episode.probe_replay_id is None
    if d.webhook_id is not None and d.webhook_id != st.webhook_id:
        # A new webhook: the old one's deliveries went with it. Start over.
        d.webhook_id = st.webhook_id
        episode.since = iso_floor(change - CHANGE_SKEW_SECONDS)
        episode.started_at = None
        unanswered = False
    episode.changed_at = iso_floor(change)
    episode.give_up_at = iso(change + settings.replay_window_seconds)
    episode.phase = "waiting" if episode.started_at is None else "probing"
    episode.next_at = iso(change + settings.replay_grace_seconds)
    if not unanswered:
        episode.probe_at = None
    episode.probe_replay_id = None
    episode.attempts = 0


async def _waiting(
    ctx: WebhookContext,
    client: BlooioClient,
    episode: ReplayEpisode,
    evidence: Evidence,
    now: float,
) -> float | None:
    todo = [f for f in evidence.affected(episode) if not evidence.accepted(f)]
    if not todo:
        _close(ctx.status, episode)
        await ctx.save_status()
        log.info(
            "%s/%s: no rejected deliveries to replay since %s",
            ctx.namespace,
            ctx.name,
            episode.since,
        )
        return None
    episode.phase = "probing"
    episode.started_at = iso_floor(now)
    episode.probe_id = todo[0].id
    return await _post_probe(ctx, client, episode, now, len(todo))


def _todo(episode: ReplayEpisode, evidence: Evidence) -> list[WebhookDelivery]:
    """Affected deliveries not accepted yet and not refused by Blooio, oldest first."""
    refused = set(episode.refused or ())
    return [
        f for f in evidence.affected(episode) if not evidence.accepted(f) and f.id not in refused
    ]


def _not_replayed(episode: ReplayEpisode, evidence: Evidence | None) -> list[WebhookDelivery]:
    """What a give-up leaves without a replay (a probe's rejected replays count as none)."""
    if evidence is None or not evidence.listing.complete:
        return []
    todo = _todo(episode, evidence)
    if episode.phase in ("waiting", "probing") or episode.started_at is None:
        return todo
    since = (epoch(episode.started_at) or 0.0) - EVIDENCE_SKEW_SECONDS
    return [f for f in todo if not evidence.later(f, since)]


def _patience(
    ctx: WebhookContext, episode: ReplayEpisode, waited_from: float | None, now: float
) -> float:
    """When to look again for what has not shown yet: the probe delay, growing with the
    time already waited (so a lasting wait costs few calls), never past the give-up."""
    waited = now - (waited_from if waited_from is not None else now)
    delay = min(max(ctx.settings.replay_probe_delay_seconds, waited), MAX_PROBE_BACKOFF_SECONDS)
    give_up_at = epoch(episode.give_up_at) or now
    return min(now + delay, give_up_at) if now < give_up_at else now + delay


def _posted_at(replay: WebhookDelivery) -> float | None:
    return replay.created_at / 1000 if replay.created_at else None


def _refusal(exc: ApiStatusError) -> bool:
    """Blooio will not replay this delivery (4xx, except time-outs and rate limits)."""
    return 400 <= exc.status < 500 and exc.status not in (408, 429)


async def _disabled_at_blooio(client: BlooioClient, webhook_id: str, exc: ApiStatusError) -> bool:
    """A 400 to a replay may mean the webhook is disabled (a suspend racing the replays,
    or Blooio's own doing): the replay is then deferred, not refused for good. One GET,
    only on such an answer."""
    if exc.status != 400:
        return False
    return (await client.get_webhook(webhook_id)).status == "disabled"


async def _held_by_blooio(
    ctx: WebhookContext, episode: ReplayEpisode, now: float, count: int
) -> float | None:
    """The webhook is disabled at Blooio: try again later, up to the give-up."""
    if now >= (epoch(episode.give_up_at) or now):
        await _give_up(
            ctx,
            episode,
            count or None,
            "the webhook stayed disabled at Blooio, which refuses replays",
            now,
        )
        return None
    log.info(
        "%s/%s: Blooio refuses replays while the webhook is disabled; trying again later",
        ctx.namespace,
        ctx.name,
    )
    delay = max(ctx.settings.replay_grace_seconds, ctx.settings.replay_probe_delay_seconds)
    return await _wait(
        ctx,
        episode,
        min(now + min(delay, MAX_PROBE_BACKOFF_SECONDS), epoch(episode.give_up_at) or now),
    )


async def _post_probe(
    ctx: WebhookContext, client: BlooioClient, episode: ReplayEpisode, now: float, count: int
) -> float | None:
    st, settings = ctx.status, ctx.settings
    assert st.webhook_id is not None
    assert episode.probe_id is not None
    episode.probe_at = iso_floor(now)
    episode.probe_replay_id = None
    episode.next_at = None
    await ctx.save_status()  # the intent, before the replay
    ctx.crash("before-replay")
    try:
        result = await client.replay_delivery(st.webhook_id, episode.probe_id)
    except ApiStatusError as exc:
        if _refusal(exc):
            # Answered: nothing was queued, so the intent is resolved.
            episode.probe_at = None
            if await _disabled_at_blooio(client, st.webhook_id, exc):
                return await _held_by_blooio(ctx, episode, now, count)
            ctx.deps.metrics.replays.labels(episode.trigger, "refused").inc()
            episode.refused = [*(episode.refused or []), episode.probe_id]
            return await _probe_failed(
                ctx, episode, now, count, f"Blooio refused the replay: {exc.message}"
            )
        raise
    ctx.crash("after-replay")
    ctx.deps.metrics.replays.labels(episode.trigger, "posted").inc()
    episode.probe_replay_id = result.id
    episode.posted += 1
    return await _wait(ctx, episode, now + settings.replay_probe_delay_seconds)


async def _probing(
    ctx: WebhookContext,
    client: BlooioClient,
    episode: ReplayEpisode,
    evidence: Evidence,
    now: float,
) -> float | None:
    settings = ctx.settings
    todo = _todo(episode, evidence)
    if episode.probe_at is None or episode.probe_id is None:
        if not todo:
            episode.phase = "verifying"
            return await _verifying(ctx, episode, evidence, now)
        episode.probe_id = todo[0].id
        return await _post_probe(ctx, client, episode, now, len(todo))
    replay = evidence.by_id(episode.probe_replay_id) if episode.probe_replay_id else None
    if replay is None:
        first = evidence.by_id(episode.probe_id)
        since = (epoch(episode.probe_at) or now) - EVIDENCE_SKEW_SECONDS
        later = evidence.later(first, since) if first is not None else []
        replay = later[-1] if later else None
    give_up_at = epoch(episode.give_up_at) or now
    if replay is None:
        if episode.probe_replay_id is None:
            settle = unsettled_until(episode, settings)
            if settle is not None and now < settle:
                return await _wait(ctx, episode, settle)
            # Recorded, never answered, and not listed once it could no longer commit:
            # the replay did not reach Blooio (the create-intent's twin). Post it.
            return await _post_probe(ctx, client, episode, now, len(todo))
        if now >= give_up_at:
            return await _probe_failed(
                ctx,
                episode,
                now,
                len(todo),
                f"the replay Blooio queued ({episode.probe_replay_id}) never appeared in "
                "its delivery log",
            )
        return await _wait(ctx, episode, _patience(ctx, episode, epoch(episode.probe_at), now))
    result = outcome(replay)
    if result == "pending":
        if now >= give_up_at:
            return await _probe_failed(
                ctx, episode, now, len(todo), "the replay's outcome never arrived"
            )
        return await _wait(ctx, episode, _patience(ctx, episode, _posted_at(replay), now))
    if result == "failed":
        code = replay.response_status
        why = f"HTTP {code}" if code is not None else "no answer"
        return await _probe_failed(
            ctx, episode, now, len(todo), f"the receiver still rejected a replay ({why})"
        )
    episode.phase = "replaying"
    episode.next_at = None
    return await _replaying(ctx, client, episode, evidence, now)


async def _probe_failed(
    ctx: WebhookContext, episode: ReplayEpisode, now: float, count: int, why: str
) -> float | None:
    episode.attempts += 1
    give_up_at = epoch(episode.give_up_at) or now
    if now >= give_up_at:
        window = ctx.settings.replay_window_seconds
        await _give_up(
            ctx,
            episode,
            count,
            f"{why} after {episode.attempts} tries in the {window:g}s window",
            now,
        )
        return None
    backoff = min(
        ctx.settings.replay_grace_seconds * 2.0 ** (episode.attempts - 1) or 1.0,
        MAX_PROBE_BACKOFF_SECONDS,
    )
    episode.probe_at = None
    episode.probe_replay_id = None
    log.info(
        "%s/%s: replay probe %d failed (%s); next in %.0fs",
        ctx.namespace,
        ctx.name,
        episode.attempts,
        why,
        backoff,
    )
    return await _wait(ctx, episode, min(now + backoff, give_up_at))


async def _wait(ctx: WebhookContext, episode: ReplayEpisode, until: float) -> float:
    episode.next_at = iso(until)
    await ctx.save_status()
    return until


async def _replaying(
    ctx: WebhookContext,
    client: BlooioClient,
    episode: ReplayEpisode,
    evidence: Evidence,
    now: float,
) -> float | None:
    st, settings = ctx.status, ctx.settings
    assert st.webhook_id is not None
    since = (epoch(episode.started_at) or now) - EVIDENCE_SKEW_SECONDS
    remaining = [f for f in _todo(episode, evidence) if not evidence.later(f, since)]
    episode.inflight = None  # resolved by the evidence just read
    episode.inflight_at = None
    room = settings.replay_max_deliveries - episode.posted
    if not remaining or room <= 0:
        episode.skipped += len(remaining)
        episode.phase = "verifying"
        return await _wait(ctx, episode, now + settings.replay_probe_delay_seconds)
    batch = remaining[: min(BATCH, room)]
    episode.inflight = [f.id for f in batch]
    episode.inflight_at = iso_floor(now)
    await ctx.save_status()  # the intent, before any of these replays
    failure: BlooioError | None = None
    for first in batch:
        ctx.crash("before-replay")
        try:
            await client.replay_delivery(st.webhook_id, first.id)
        except ApiStatusError as exc:
            if _refusal(exc):
                if await _disabled_at_blooio(client, st.webhook_id, exc):
                    # Answered (nothing queued from here on): the intent is resolved;
                    # the rest waits, unrefused.
                    episode.inflight = None
                    episode.inflight_at = None
                    return await _held_by_blooio(ctx, episode, now, len(remaining))
                ctx.deps.metrics.replays.labels(episode.trigger, "refused").inc()
                episode.refused = [*(episode.refused or []), first.id]
                episode.skipped += 1
                continue
            failure = exc
        except BlooioError as exc:
            failure = exc
        if failure is not None:
            ctx.deps.metrics.replays.labels(episode.trigger, "error").inc()
            break
        ctx.crash("after-replay")
        ctx.deps.metrics.replays.labels(episode.trigger, "posted").inc()
        episode.posted += 1
    if failure is not None:
        # The batch stays in ``inflight``: the next step reads the list again (after the
        # settle time) and replays only what it does not show as replayed.
        await ctx.save_status()
        raise failure
    episode.inflight = None
    episode.inflight_at = None
    await ctx.save_status()
    return now  # the next batch (the caller lets other writers in between)


async def _verifying(
    ctx: WebhookContext, episode: ReplayEpisode, evidence: Evidence, now: float
) -> float | None:
    since = (epoch(episode.started_at) or now) - EVIDENCE_SKEW_SECONDS
    affected = evidence.affected(episode)
    replayed = [f for f in affected if evidence.later(f, since)]
    pending = [
        f
        for f in replayed
        if not evidence.accepted(f) and outcome(evidence.later(f, since)[-1]) == "pending"
    ]
    if pending and now < (epoch(episode.give_up_at) or now):
        latest = max(
            (_posted_at(evidence.later(f, since)[-1]) or now for f in pending), default=now
        )
        return await _wait(ctx, episode, _patience(ctx, episode, latest, now))
    accepted = [f for f in replayed if evidence.accepted(f)]
    not_replayed = [
        f for f in affected if not evidence.accepted(f) and not evidence.later(f, since)
    ]
    st = ctx.status
    d = _deliveries(st)
    what = _what(episode, f" ({reasons.ANNOTATION_REPLAY_SINCE})")
    rejected = len(replayed) - len(accepted) - len(pending)
    message = (
        f"Replayed {len(replayed)} deliveries {what}: {len(accepted)} accepted"
        + (f", {rejected} rejected again" if rejected else "")
        + (f", {len(pending)} without an outcome yet" if pending else "")
        + (
            f"; {len(not_replayed)} not replayed (over BLOOIO_REPLAY_MAX_DELIVERIES or "
            "refused by Blooio)"
            if not_replayed
            else ""
        )
        + "."
    )
    d.last_replay = ReplayRecord(
        trigger=episode.trigger,
        since=episode.since,
        finished_at=iso_floor(now),
        outcome="replayed",
        replayed=len(replayed),
        accepted=len(accepted),
        not_replayed=len(not_replayed),
    )
    _close(st, episode)
    await ctx.save_status()
    ctx.events.normal(reasons.DELIVERIES_REPLAYED, message)
    log.info("%s/%s: %s", ctx.namespace, ctx.name, message)
    return None


async def _give_up(
    ctx: WebhookContext, episode: ReplayEpisode, count: int | None, why: str, now: float
) -> None:
    """One Warning, kept in the DeliveriesHealthy message; ``count`` None: unknown."""
    st = ctx.status
    d = _deliveries(st)
    what = _what(episode, "")
    message = (
        f"{count if count is not None else 'The'} deliveries {what} {NOT_REPLAYED_MARK}: "
        f"{why}. Once the receiver accepts deliveries, set annotation "
        f"{reasons.ANNOTATION_REPLAY_SINCE}={episode.since} to replay them."
    )
    d.last_replay = ReplayRecord(
        trigger=episode.trigger,
        since=episode.since,
        finished_at=iso_floor(now),
        outcome="gaveUp",
        not_replayed=count or 0,
    )
    st.conditions = set_condition(
        st.conditions,
        reasons.DELIVERIES_HEALTHY,
        "False",
        reasons.RECEIVER_REJECTING,
        message,
        generation=ctx.generation,
        now=iso_floor(now),
    )
    _close(st, episode)
    await ctx.save_status()
    ctx.deps.metrics.replays_given_up.labels(episode.trigger).inc()
    ctx.events.warning(reasons.DELIVERIES_NOT_REPLAYED, message)
    log.warning("%s/%s: %s", ctx.namespace, ctx.name, message)


def _what(episode: ReplayEpisode, source: str) -> str:
    """Which deliveries the episode is about, for its Event."""
    if episode.trigger == "rotation":
        return "rejected (401/403) after the signing-secret change at " + (
            episode.changed_at or "?"
        )
    asked = parse_request(episode.token or "")
    held = epoch(episode.since)
    if asked is not None and held is not None and asked < held:
        # Clamped by _keep_to_own_deliveries.
        return (
            f"failed since {episode.since}{source}; asked from {iso_floor(asked)}, but this "
            "resource holds the webhook only since then, so earlier deliveries were not "
            "considered"
        )
    return f"failed since {episode.since}{source}"


def _close(st: WebhookStatus, episode: ReplayEpisode) -> None:
    """The episode is over: record what it dealt with, so it is not started again."""
    d = _deliveries(st)
    if episode.trigger == "rotation":
        d.secret_change_at = episode.changed_at
        d.webhook_id = st.webhook_id
    else:
        d.replay_token = annotation_token(episode.token) if episode.token else None
    d.replay = None
