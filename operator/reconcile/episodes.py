"""Failure episodes: the one place that decides how a failing resource is retried and
what the failure is worth telling.

An *episode* is one stretch of the same failure on one resource: it starts with the
first failure (conditions change, one Warning Event), continues through every retry
(nothing written, nothing posted, the delay grows to the cap) and ends with the next
success (conditions change back, one Normal Event unless the success posted its own).
The condition in ``status`` says whether an episode is running, so that survives a
restart; the attempt count is kept here, per resource, in memory, and feeds
``errors.classify``. kopf's handlers and the periodic sweep both go through
``lifecycle.record_failure``, which is the only caller of ``Backoff.next_attempt``: the
two paths can no longer each restart the backoff at attempt 0.
"""

from __future__ import annotations

from blooio_operator.models import reasons
from blooio_operator.models.conditions import mark_reconciling
from blooio_operator.models.resource import Condition, WebhookStatus

# Reconciling reasons that mean "something failed and is being retried", as opposed to
# work in progress (Creating, Updating, WaitingForBlooio).
TRANSIENT_FAILURE_REASONS = frozenset(
    {reasons.REMOTE_ERROR, reasons.RATE_LIMITED, reasons.OUTCOME_UNKNOWN}
)


class Backoff:
    """Attempts per resource uid since its last success."""

    def __init__(self) -> None:
        self._attempts: dict[str, int] = {}

    def next_attempt(self, uid: str) -> int:
        """The attempt number of this failure (0 for the first), counted."""
        attempt = self._attempts.get(uid, 0)
        self._attempts[uid] = attempt + 1
        return attempt

    def attempts(self, uid: str) -> int:
        return self._attempts.get(uid, 0)

    def clear(self, uid: str) -> None:
        """A success ends the episode: the next failure starts again at attempt 0."""
        self._attempts.pop(uid, None)

    def __len__(self) -> int:
        return len(self._attempts)


def failing(status: WebhookStatus) -> str | None:
    """The reason of the failure episode the status shows, or None when none runs."""
    stalled = status.condition(reasons.STALLED)
    if stalled is not None and stalled.status == "True":
        return stalled.reason or reasons.STALLED
    reconciling = status.condition(reasons.RECONCILING)
    if (
        reconciling is not None
        and reconciling.status == "True"
        and reconciling.reason in TRANSIENT_FAILURE_REASONS
    ):
        return reconciling.reason
    return None


def continues(status: WebhookStatus, reason: str, generation: int | None) -> bool:
    """True when ``reason`` is the failure the status already shows, for this generation:
    the conditions stay as they are (no write) and no Event is posted."""
    if failing(status) != reason:
        return False
    shown = status.condition(reasons.STALLED if status.is_true(reasons.STALLED) else reasons.READY)
    return shown is not None and shown.observed_generation == generation


def mark_progress(
    status: WebhookStatus, reason: str, message: str, *, generation: int | None, now: str
) -> list[Condition]:
    """``Reconciling=True`` for work in progress (Creating, Updating), unless a failure
    episode is shown: then the work is its retry, and the conditions stay as they are
    (a create retried through an outage writes its intent, not a condition flip)."""
    if failing(status) is not None:
        return status.conditions
    return mark_reconciling(status.conditions, reason, message, generation=generation, now=now)
