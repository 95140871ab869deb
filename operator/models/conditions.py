"""Setting conditions: one helper that keeps lastTransitionTime unless status flipped,
and escapes the message (it quotes user values: annotations, urls, Blooio's answers)."""

from __future__ import annotations

from typing import Literal

from blooio_operator.logs import escape_controls
from blooio_operator.models import reasons
from blooio_operator.models.resource import Condition

CondStatus = Literal["True", "False", "Unknown"]
# Longer messages are cut: a message may quote a user value (an annotation can hold
# 256 KiB), and the CRD takes at most 32768 characters; a status write it refused would
# leave the condition unwritten, and the failure unreported.
MAX_MESSAGE = 4096


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: CondStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; ``lastTransitionTime`` moves only on a flip.

    Control characters in ``message`` are escaped (a condition is shown by ``kubectl``,
    dashboards and log shippers, and none of them should see a user value's newline),
    and a message longer than ``MAX_MESSAGE`` is cut.
    """
    message = escape_controls(message)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            out.append(cond)
            continue
        found = True
        ltt = cond.last_transition_time if cond.status == status else now
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=ltt,
                observed_generation=generation,
            )
        )
    if not found:
        out.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    order = {reasons.READY: 0, reasons.RECONCILING: 1, reasons.STALLED: 2}
    return sorted(out, key=lambda c: order.get(c.type, 9))


def mark_ready(
    conditions: list[Condition], reason: str, message: str, *, generation: int | None, now: str
) -> list[Condition]:
    conds = set_condition(
        conditions, reasons.READY, "True", reason, message, generation=generation, now=now
    )
    conds = set_condition(
        conds, reasons.RECONCILING, "False", reason, "", generation=generation, now=now
    )
    return set_condition(
        conds, reasons.STALLED, "False", reason, "", generation=generation, now=now
    )


def mark_reconciling(
    conditions: list[Condition], reason: str, message: str, *, generation: int | None, now: str
) -> list[Condition]:
    conds = set_condition(
        conditions, reasons.READY, "False", reason, message, generation=generation, now=now
    )
    conds = set_condition(
        conds, reasons.RECONCILING, "True", reason, message, generation=generation, now=now
    )
    return set_condition(
        conds, reasons.STALLED, "False", reason, "", generation=generation, now=now
    )


def mark_stalled(
    conditions: list[Condition], reason: str, message: str, *, generation: int | None, now: str
) -> list[Condition]:
    conds = set_condition(
        conditions, reasons.READY, "False", reason, message, generation=generation, now=now
    )
    conds = set_condition(
        conds, reasons.RECONCILING, "False", reason, "", generation=generation, now=now
    )
    return set_condition(
        conds, reasons.STALLED, "True", reason, message, generation=generation, now=now
    )
