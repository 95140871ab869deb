"""The CRD models and the one condition helper (lastTransitionTime moves only on a flip)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from blooio_operator.models import reasons
from blooio_operator.models.conditions import (
    mark_ready,
    mark_reconciling,
    mark_stalled,
    set_condition,
)
from blooio_operator.models.resource import Condition, WebhookSpec, WebhookStatus

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
T2 = "2026-01-01T00:10:00Z"


def _by_type(conditions: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conditions}


# --- conditions ------------------------------------------------------------------------


def test_set_condition_adds_a_new_condition_with_now() -> None:
    out = set_condition([], reasons.READY, "True", "Synced", "ok", generation=3, now=T0)
    assert len(out) == 1
    cond = out[0]
    assert (cond.type, cond.status, cond.reason, cond.message) == ("Ready", "True", "Synced", "ok")
    assert cond.last_transition_time == T0
    assert cond.observed_generation == 3


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    conds = set_condition([], reasons.READY, "True", "Synced", "a", generation=1, now=T0)
    conds = set_condition(conds, reasons.READY, "True", "Suspended", "b", generation=2, now=T1)
    cond = _by_type(conds)["Ready"]
    assert cond.last_transition_time == T0
    # ...while everything else follows the latest call.
    assert (cond.reason, cond.message, cond.observed_generation) == ("Suspended", "b", 2)


def test_set_condition_moves_transition_time_on_flip() -> None:
    conds = set_condition([], reasons.READY, "True", "Synced", "", generation=1, now=T0)
    conds = set_condition(conds, reasons.READY, "False", "RemoteError", "x", generation=1, now=T1)
    assert _by_type(conds)["Ready"].last_transition_time == T1
    conds = set_condition(conds, reasons.READY, "True", "Synced", "", generation=1, now=T2)
    assert _by_type(conds)["Ready"].last_transition_time == T2


def test_set_condition_leaves_other_types_alone_and_orders_kstatus_types_first() -> None:
    custom = Condition(type="Custom", status="True", reason="X", last_transition_time=T0)
    conds = set_condition([custom], reasons.STALLED, "False", "S", "", generation=1, now=T1)
    conds = set_condition(conds, reasons.READY, "True", "R", "", generation=1, now=T1)
    assert [c.type for c in conds] == ["Ready", "Stalled", "Custom"]
    assert _by_type(conds)["Custom"] == custom


def test_set_condition_does_not_mutate_its_input() -> None:
    original = set_condition([], reasons.READY, "True", "Synced", "", generation=1, now=T0)
    snapshot = [c.model_copy() for c in original]
    set_condition(original, reasons.READY, "False", "RemoteError", "", generation=1, now=T1)
    assert original == snapshot


@pytest.mark.parametrize(
    ("mark", "expected"),
    [
        (mark_ready, {"Ready": "True", "Reconciling": "False", "Stalled": "False"}),
        (mark_reconciling, {"Ready": "False", "Reconciling": "True", "Stalled": "False"}),
        (mark_stalled, {"Ready": "False", "Reconciling": "False", "Stalled": "True"}),
    ],
)
def test_mark_helpers_set_all_three_kstatus_conditions(mark, expected) -> None:
    conds = mark([], "Why", "what to do", generation=7, now=T0)
    assert {c.type: c.status for c in conds} == expected
    assert all(c.observed_generation == 7 for c in conds)
    assert [c.type for c in conds] == ["Ready", "Reconciling", "Stalled"]


def test_mark_stalled_carries_the_message_on_ready_and_stalled() -> None:
    conds = _by_type(mark_stalled([], "ValidationFailed", "fix the url", generation=1, now=T0))
    assert conds["Stalled"].message == "fix the url"
    assert conds["Ready"].message == "fix the url"
    assert conds["Stalled"].reason == "ValidationFailed"


def test_repeated_mark_ready_keeps_every_transition_time() -> None:
    first = mark_ready([], "Synced", "m", generation=1, now=T0)
    again = mark_ready(first, "Synced", "m", generation=2, now=T1)
    assert all(c.last_transition_time == T0 for c in again)


def test_ready_to_stalled_flips_only_the_conditions_that_changed() -> None:
    ready = mark_ready([], "Synced", "", generation=1, now=T0)
    stalled = _by_type(mark_stalled(ready, "BadRequest", "no", generation=2, now=T1))
    assert stalled["Ready"].last_transition_time == T1  # True -> False
    assert stalled["Stalled"].last_transition_time == T1  # False -> True
    assert stalled["Reconciling"].last_transition_time == T0  # False -> False


# --- spec and status -----------------------------------------------------------------


def test_spec_defaults() -> None:
    spec = WebhookSpec.model_validate({"url": "https://x.example.com/h"})
    assert spec.event_types == ["*"]
    assert spec.suspend is False
    assert spec.deletion_policy == "Delete"
    assert spec.credentials_ref is None
    assert spec.secret_name("orders") == "orders-blooio-webhook"
    assert spec.desired_remote_status == "active"


def test_spec_reads_camel_case_and_named_secret() -> None:
    spec = WebhookSpec.model_validate(
        {
            "url": "https://x.example.com/h",
            "eventTypes": ["poll.*"],
            "channelId": "ch_1",
            "channelType": "blooio",
            "credentialsRef": {"name": "key"},
            "secret": {"name": "custom", "labels": {"a": "b"}},
            "suspend": True,
            "deletionPolicy": "Orphan",
        }
    )
    assert (spec.channel_id, spec.channel_type) == ("ch_1", "blooio")
    assert spec.credentials_ref is not None
    assert spec.credentials_ref.key == "api-key"  # the documented default key
    assert spec.secret_name("orders") == "custom"
    assert spec.desired_remote_status == "disabled"
    assert spec.deletion_policy == "Orphan"


def test_spec_rejects_an_unknown_deletion_policy() -> None:
    with pytest.raises(ValidationError):
        WebhookSpec.model_validate({"url": "https://x", "deletionPolicy": "Keep"})


def test_status_round_trips_camel_case_and_drops_unset_fields() -> None:
    wire = {
        "observedGeneration": 2,
        "webhookId": "wh_1",
        "remoteStatus": "active",
        "secretName": "orders-blooio-webhook",
        "applied": {"url": "https://x", "eventTypes": ["*"]},
        "pending": {"operation": "create", "startedAt": T0, "url": "https://x"},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Synced", "lastTransitionTime": T0}
        ],
        "kopf": {"progress": {}},  # kopf's own field is ignored, never written back
    }
    status = WebhookStatus.model_validate(wire)
    dumped = status.dump()
    assert "kopf" not in dumped
    assert dumped["applied"] == {"url": "https://x", "eventTypes": ["*"]}
    assert dumped["pending"] == {"operation": "create", "startedAt": T0, "url": "https://x"}
    assert "createdAt" not in dumped  # None fields are omitted
    assert status.is_true("Ready")
    assert not status.is_true("Stalled")
    assert status.condition("Stalled") is None
