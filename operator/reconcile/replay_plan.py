"""When a replay episode is due, and what a delivery list shows about it.

Pure functions over status and listings (no calls): the times a rotation or a request
asks for, from when the webhook's deliveries are this resource's (``held_since``), when
the next step of ``replay`` is due (``due_at``: held while the resource is suspended,
never before a replay sent without an answer can no longer commit), and the ``Evidence``
of a listing (deliveries grouped by event, since a replay re-sends the same event). The
state machine that acts on them is ``reconcile.replay``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime

from blooio_operator.blooio import WebhookDelivery
from blooio_operator.models import reasons
from blooio_operator.models.resource import ReplayEpisode, WebhookStatus
from blooio_operator.reconcile.context import parse_iso
from blooio_operator.reconcile.deliveries import Listing, outcome, sort_key
from blooio_operator.reconcile.remote import settled_at
from blooio_operator.reconcile.secrets import annotation_token
from blooio_operator.settings import Settings

# ``secretRotatedAt`` is recorded (to the second) after the rotate call returned and the
# Secret was written: deliveries from a little before it already carried the new secret.
CHANGE_SKEW_SECONDS = 10.0
# Allowance between Blooio's clock (delivery times) and ours (episode times).
EVIDENCE_SKEW_SECONDS = 5.0
BATCH = 20  # replays per recorded intent
MAX_PROBE_BACKOFF_SECONDS = 600.0
REQUEST_WINDOW_SECONDS = 3600.0  # for requests when rotation replays are off
REJECTED_CODES = (401, 403)
# A replay request for a time later than now (beyond this allowance for clocks) could
# match nothing: it is refused like any other unusable value.
REQUEST_FUTURE_SKEW_SECONDS = 300.0


# --- times ---------------------------------------------------------------------------


def iso(ts: float) -> str:
    """RFC 3339 to the second, rounded up (a due time is never early)."""
    return datetime.fromtimestamp(math.ceil(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_floor(ts: float) -> str:
    return datetime.fromtimestamp(math.floor(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_request(value: str) -> float | None:
    """An RFC 3339 time from the annotation (``Z`` or an offset; a fraction is allowed).

    None for anything else, including times that exist only before their offset is
    applied (``9999-12-31T23:59:59-14:00`` is past year 9999 in UTC): never raises.
    """
    text = value.strip()
    if len(text) > 64 or ("T" not in text and " " not in text):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return None
        ts = parsed.timestamp()
        iso_floor(ts)  # representable as a status time, both ways
    except (ValueError, OverflowError, OSError):
        return None
    return ts


def epoch(value: str | None) -> float | None:
    return parse_iso(value) if value else None


# --- when is there work ------------------------------------------------------------------


def secret_change(status: WebhookStatus, previous_webhook_id: str | None = None) -> float | None:
    """When the signing secret last changed without that having been dealt with.

    ``previous_webhook_id``: the webhook id this process saw before the current one
    (kept in memory by the handler), for resources whose records predate any change.
    """
    if not status.webhook_id:
        return None
    d = status.deliveries
    recorded = d.webhook_id if d is not None else None
    if recorded is None and previous_webhook_id and previous_webhook_id != status.webhook_id:
        recorded = previous_webhook_id
    created = epoch(status.created_at)
    rotated = epoch(status.secret_rotated_at)
    if recorded is not None and recorded != status.webhook_id:
        # Replaced or Recreated: every delivery of the new webhook carries a new secret.
        latest = max(created or 0.0, rotated or 0.0)
        return latest or None
    if rotated is None:
        return None
    handled = epoch(d.secret_change_at) if d is not None else None
    if handled is not None and rotated <= handled:
        return None
    if recorded is None and created is not None and rotated < created:
        return None  # a rotation of an earlier webhook (replaced before we knew it)
    return rotated


def needs_webhook_record(status: WebhookStatus, previous_webhook_id: str | None) -> bool:
    """The webhook was replaced and only this process knows: record the old id first."""
    d = status.deliveries
    return (
        bool(status.webhook_id)
        and (d is None or d.webhook_id is None)
        and bool(previous_webhook_id)
        and previous_webhook_id != status.webhook_id
    )


def requested(status: WebhookStatus, annotations: dict[str, str]) -> str | None:
    """A ``replay-failed-since`` value not dealt with yet."""
    token = annotations.get(reasons.ANNOTATION_REPLAY_SINCE)
    d = status.deliveries
    done = d.replay_token if d is not None else None
    if not token or annotation_token(token) == done:
        return None
    return token


def request_problem(value: str, *, now: float) -> str | None:
    """Why a ``replay-failed-since`` value cannot be acted on; None when it can."""
    since = parse_request(value)
    if since is None:
        return (
            "is not an RFC 3339 time (with a zone, within years 1-9999 in UTC) such as "
            "2026-01-31T09:00:00Z"
        )
    if since > now + REQUEST_FUTURE_SKEW_SECONDS:
        return "is in the future, so no delivery could match it"
    return None


def held_since(status: WebhookStatus, *, now: float | None = None) -> float | None:
    """From when the webhook's deliveries are this resource's, as status records it.

    A webhook this resource created (or recovered, or that replaced another): all its
    deliveries (``createdAt``, Blooio's creation time). An adopted one: deliveries from
    the adoption on. The adoption rotated the secret and recorded ``secretRotatedAt``; a
    later rotation overwrites that, but by then the adoption's own replay episode has
    usually recorded it as dealt with (``deliveries.secretChangeAt`` for this webhook),
    so the earlier of the two is used: never earlier than the adoption. Nothing recorded:
    ``now`` (nothing before it is known to be ours), or None when no ``now`` is given.
    """
    adopted = bool(status.adopted_webhook_id) and status.adopted_webhook_id == status.webhook_id
    if not adopted:
        recorded = epoch(status.created_at) or epoch(status.secret_rotated_at)
        return recorded if recorded is not None else now
    d = status.deliveries
    times = [epoch(status.secret_rotated_at)]
    if d is not None and d.webhook_id == status.webhook_id:
        times.append(epoch(d.secret_change_at))
    known = [t for t in times if t is not None]
    return min(known) if known else now


def deferred(status: WebhookStatus, *, suspend: bool) -> bool:
    """Replays wait: the resource is suspended, or its webhook is disabled at Blooio
    (which refuses replays), as the webhook handlers recorded it."""
    return suspend or status.remote_status == "disabled"


def parked(episode: ReplayEpisode) -> bool:
    """The episode is held while the resource is suspended (``replay.step`` parks it).

    Marked as ``phase: waiting`` with no ``nextAt``: a state the machine never saves
    otherwise (a waiting episode is saved only with the end of its grace period).
    """
    return episode.phase == "waiting" and episode.next_at is None


def unsettled_until(episode: ReplayEpisode, settings: Settings) -> float | None:
    """Until when a replay this episode sent without an answer could still commit at
    Blooio (``remote.settled_at``); before then the list cannot show that it did not.

    The batch in ``inflight`` (intent recorded), or the probe recorded in ``probeAt``
    whose answer (``probeReplayId``) never came.
    """
    times = []
    if episode.inflight and episode.inflight_at:
        times.append(settled_at(settings, episode.inflight_at))
    if episode.phase == "probing" and episode.probe_at and not episode.probe_replay_id:
        times.append(settled_at(settings, episode.probe_at))
    return max(times) if times else None


def episode_due(episode: ReplayEpisode, settings: Settings, *, now: float) -> float | None:
    """When the next step of an episode is due (None: now): its ``nextAt``, never before
    unanswered replays can no longer commit, and never after the give-up, except that a
    step due after an ended window stays due (a probe's outcome is still waited for).
    Once the window has ended while replays are unsettled, at once: ``replay.step`` then
    gives up without sending anything more."""
    give_up = epoch(episode.give_up_at)
    due = epoch(episode.next_at)
    settle = unsettled_until(episode, settings)
    if settle is not None:
        due = max(due or 0.0, settle)
    if due is None or give_up is None:
        return due
    if now < give_up:
        return min(due, give_up)
    if settle is not None and now < settle:
        return now
    return due


def due_at(
    status: WebhookStatus,
    annotations: dict[str, str],
    settings: Settings,
    *,
    now: float,
    previous_webhook_id: str | None = None,
    suspended: bool = False,
) -> float | None:
    """When replay work for this resource is next due (epoch seconds); None: none.

    ``suspended``: ``spec.suspend`` (see ``deferred``). A suspended resource's episode is
    due at once to be parked, then not at all until the resource is resumed.
    """
    if not status.webhook_id:
        return None
    d = status.deliveries
    episode = d.replay if d is not None else None
    change = secret_change(status, previous_webhook_id)
    window = settings.replay_window_seconds
    if episode is not None:
        if deferred(status, suspend=suspended):
            return None if parked(episode) else now
        due = episode_due(episode, settings, now=now)
        due = now if due is None else due
        newer = change is not None and change > (epoch(episode.changed_at) or 0.0) + 1
        if episode.trigger == "rotation" and newer and change is not None:
            due = min(due, change + settings.replay_grace_seconds)
        return due
    if needs_webhook_record(status, previous_webhook_id):
        return now
    if change is not None and window > 0 and now < change + window:
        return change + settings.replay_grace_seconds
    if requested(status, annotations) is not None:
        return now
    return None


# --- what the list shows ------------------------------------------------------------------


class Evidence:
    """The deliveries of a listing grouped by event (a replay re-sends the same event)."""

    def __init__(self, listing: Listing) -> None:
        self.listing = listing
        groups: defaultdict[str, list[WebhookDelivery]] = defaultdict(list)
        for d in listing.deliveries:  # sorted oldest first
            groups[d.event_id or d.id].append(d)
        self.groups = dict(groups)

    def affected(self, episode: ReplayEpisode) -> list[WebhookDelivery]:
        """First deliveries of events since ``episode.since`` that failed as the trigger
        says (rotation: 401/403; request: any failure), oldest first."""
        since_ms = (epoch(episode.since) or 0.0) * 1000
        out = []
        for group in self.groups.values():
            first = group[0]
            if (first.created_at or 0) < since_ms or outcome(first) != "failed":
                continue
            if episode.trigger == "rotation" and first.response_status not in REJECTED_CODES:
                continue
            out.append(first)
        return sorted(out, key=sort_key)

    def _group(self, first: WebhookDelivery) -> list[WebhookDelivery]:
        return self.groups.get(first.event_id or first.id, [first])

    def accepted(self, first: WebhookDelivery) -> bool:
        return any(outcome(d) == "delivered" for d in self._group(first))

    def later(self, first: WebhookDelivery, since: float) -> list[WebhookDelivery]:
        """Other deliveries of the same event created at or after ``since`` (epoch s)."""
        since_ms = since * 1000
        return [
            d for d in self._group(first) if d.id != first.id and (d.created_at or 0) >= since_ms
        ]

    def by_id(self, delivery_id: str) -> WebhookDelivery | None:
        return next((d for d in self.listing.deliveries if d.id == delivery_id), None)
