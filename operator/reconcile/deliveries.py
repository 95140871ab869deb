"""Delivery health: what Blooio's delivery log says about the receiver, as a summary in
``status.deliveries`` and the informational condition ``DeliveriesHealthy``.

Blooio documents no order for ``GET /webhooks/{id}/deliveries`` (the simulator answers
oldest first), so nothing here depends on it: what was read is sorted by timestamps, at
most a bounded number of pages is read, and when more pages remain the newest delivery
is reported as unknown instead of guessed. Only ids, times, statuses and response codes
are kept; never a payload. ``DeliveriesHealthy`` never touches Ready, Reconciling or
Stalled: a webhook whose receiver is down is still reconciled correctly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from blooio_operator.blooio import BlooioClient, WebhookDelivery
from blooio_operator.models import reasons
from blooio_operator.models.conditions import CondStatus, set_condition
from blooio_operator.models.resource import (
    Condition,
    DeliveriesStatus,
    NewestDelivery,
    WebhookStatus,
)
from blooio_operator.reconcile.context import ms_to_iso, parse_iso

Outcome = Literal["delivered", "failed", "pending"]
# A check whose only change is checkedAt writes nothing, unless checkedAt is older than
# this (so a quiet webhook's status still shows that it is being looked at).
REFRESH_SECONDS = 3600.0
# In a DeliveriesHealthy message: replays were given up (kept while the receiver fails).
NOT_REPLAYED_MARK = "were not replayed"


def outcome(delivery: WebhookDelivery) -> Outcome:
    """delivered (2xx), failed, or pending (queued/sending: the outcome arrives later).

    Blooio does not enumerate ``status``; the response code decides when there is one.
    """
    code = delivery.response_status
    status = (delivery.status or "").lower()
    if status in ("queued", "sending", "pending", "scheduled", "retrying") and code is None:
        return "pending"
    if code is not None:
        return "delivered" if 200 <= code < 300 else "failed"
    if status in ("delivered", "succeeded", "success", "ok"):
        return "delivered"
    return "failed"


def sort_key(delivery: WebhookDelivery) -> tuple[int, int, str]:
    """Oldest first by creation time, then last attempt, then id (a stable total order)."""
    return (delivery.created_at or 0, delivery.last_attempt_at or 0, delivery.id)


@dataclass
class Listing:
    """Deliveries as read (sorted oldest -> newest) and whether that was all of them."""

    deliveries: list[WebhookDelivery]
    complete: bool

    @classmethod
    def of(cls, deliveries: Iterable[WebhookDelivery], complete: bool) -> Listing:
        # The same delivery on two pages (a list that shifted under the cursor) counts once.
        unique = {d.id: d for d in deliveries}
        return cls(sorted(unique.values(), key=sort_key), complete)

    @property
    def newest(self) -> WebhookDelivery | None:
        return self.deliveries[-1] if self.complete and self.deliveries else None

    def counts(self) -> dict[str, int]:
        out = {"delivered": 0, "failed": 0, "pending": 0}
        for d in self.deliveries:
            out[outcome(d)] += 1
        return out

    def last_delivered(self) -> WebhookDelivery | None:
        return next((d for d in reversed(self.deliveries) if outcome(d) == "delivered"), None)


async def list_deliveries(client: BlooioClient, webhook_id: str, *, max_pages: int) -> Listing:
    items, complete = await client.list_deliveries_bounded(webhook_id, max_pages=max_pages)
    return Listing.of(items, complete)


def verdict(listing: Listing, *, max_pages: int) -> tuple[CondStatus, str, str]:
    """DeliveriesHealthy from the newest finished delivery: (status, reason, message)."""
    counts = listing.counts()
    tally = (
        f"{counts['delivered']} delivered, {counts['failed']} failed, "
        f"{counts['pending']} pending among the {len(listing.deliveries)} listed"
    )
    if not listing.complete:
        return (
            "Unknown",
            reasons.NEWEST_DELIVERY_UNKNOWN,
            f"More than {max_pages} page(s) of deliveries; Blooio documents no order, so "
            f"the newest could not be found within the bound ({tally}).",
        )
    if not listing.deliveries:
        return "Unknown", reasons.NO_RECENT_DELIVERIES, "Blooio lists no recent deliveries."
    finished = [d for d in listing.deliveries if outcome(d) != "pending"]
    if not finished:
        return "Unknown", reasons.DELIVERIES_PENDING, f"Deliveries are in flight ({tally})."
    newest = finished[-1]
    when = ms_to_iso(newest.created_at) or "an unknown time"
    code = newest.response_status
    if outcome(newest) == "delivered":
        return (
            "True",
            reasons.RECEIVER_ACCEPTING,
            f"The newest delivery ({newest.id}, {when}) was accepted with HTTP {code} ({tally}).",
        )
    if code is None:
        return (
            "False",
            reasons.RECEIVER_UNREACHABLE,
            f"The newest delivery ({newest.id}, {when}) got no answer from the receiver "
            f"(timeout or connection error) ({tally}).",
        )
    if code >= 500:
        return (
            "False",
            reasons.RECEIVER_FAILING,
            f"The newest delivery ({newest.id}, {when}) failed with HTTP {code} ({tally}).",
        )
    hint = (
        " A 401/403 right after a signing-secret change usually means the receiver has not "
        "read the new secret yet."
        if code in (401, 403)
        else ""
    )
    return (
        "False",
        reasons.RECEIVER_REJECTING,
        f"The newest delivery ({newest.id}, {when}) was rejected with HTTP {code} ({tally}).{hint}",
    )


def summarize(current: DeliveriesStatus | None, listing: Listing, *, now: str) -> DeliveriesStatus:
    """``current`` with the summary fields replaced by what ``listing`` shows."""
    counts = listing.counts()
    newest = listing.newest
    last = listing.last_delivered()
    base = current.model_copy(deep=True) if current is not None else DeliveriesStatus()
    base.checked_at = now
    base.complete = listing.complete
    base.seen = len(listing.deliveries)
    base.delivered = counts["delivered"]
    base.failed = counts["failed"]
    base.pending = counts["pending"]
    base.newest = (
        NewestDelivery(
            id=newest.id,
            at=ms_to_iso(newest.created_at),
            status=newest.status,
            response_code=newest.response_status,
        )
        if newest is not None
        else None
    )
    # Kept from earlier checks when this one saw no accepted delivery.
    if last is not None:
        base.last_delivered_at = ms_to_iso(last.created_at)
    return base


def apply_health(
    status: WebhookStatus,
    listing: Listing,
    *,
    generation: int | None,
    now: str,
    max_pages: int,
) -> bool:
    """Put the summary and the condition into ``status``; True if a write is worth it.

    Not worth it when only ``checkedAt`` would move and it is younger than an hour.
    """
    before = status.deliveries
    summary = summarize(before, listing, now=now)
    cond_status, reason, message = verdict(listing, max_pages=max_pages)
    old_cond = status.condition(reasons.DELIVERIES_HEALTHY)
    conditions = set_condition(
        status.conditions,
        reasons.DELIVERIES_HEALTHY,
        cond_status,
        reason,
        message,
        generation=generation,
        now=now,
    )
    if _keeps_warning(old_cond, cond_status):
        conditions = status.conditions  # a give-up message stays until health improves
    cond_changed = [c.model_dump() for c in conditions] != [
        c.model_dump() for c in status.conditions
    ]
    same = before is not None and _without_checked(before) == _without_checked(summary)
    checked = parse_iso(before.checked_at) if before is not None else None
    fresh = checked is not None and (parse_iso(now) or 0.0) - checked < REFRESH_SECONDS
    if same and fresh and not cond_changed:
        return False
    status.deliveries = summary
    status.conditions = conditions
    return True


def _keeps_warning(old: Condition | None, new_status: CondStatus) -> bool:
    """The message of a give-up (Warning DeliveriesNotReplayed) is kept while the receiver
    still fails: the Event expires after about an hour, the condition does not."""
    return (
        old is not None
        and old.status == "False"
        and new_status == "False"
        and NOT_REPLAYED_MARK in old.message
    )


def _without_checked(d: DeliveriesStatus) -> dict[str, object]:
    dumped = d.dump()
    dumped.pop("checkedAt", None)
    return dumped
