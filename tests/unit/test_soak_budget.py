"""The soak's arithmetic (tests/chaos/soak_budget.py, soak_measure.py), without a world:
the scaled settings, the budget terms, attribution of calls, writes and Events, judging."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.audit import Write
from tests.chaos import soak_budget as budget
from tests.chaos import soak_measure as measure


def test_scale_divides_every_interval_by_one_factor_with_a_timeout_floor() -> None:
    scale = budget.Scale(180)
    env = scale.env()
    assert scale.factor == 20
    assert env["BLOOIO_SECRET_CHECK_INTERVAL_SECONDS"] == "3"  # 60 s
    assert env["BLOOIO_DRIFT_INTERVAL_SECONDS"] == "30"  # 600 s
    assert env["BLOOIO_TRANSIENT_RETRY_CAP_SECONDS"] == "15"  # 300 s
    assert env["BLOOIO_REPLAY_WINDOW_SECONDS"] == "180"  # an hour
    assert env["BLOOIO_HTTP_TIMEOUT_SECONDS"] == "1"  # 0.5 s scaled, floored
    assert "x20" in scale.describe()
    assert "(floor)" in scale.describe()


def test_budget_terms_follow_the_operator_defaults() -> None:
    assert budget.RAMP == 9  # 1 s doubling to the 300 s cap
    assert budget.TRIES == 21
    a = budget.BUDGETS["a"]
    assert a.calls == 3 * (21 + 7)  # three attempts per try, and the health reads
    assert a.warnings == 1
    assert set(budget.BUDGETS) == set("abcdef")
    assert budget.log_lines_budget(keys=2, resources=100, touched=0) == 2 * 60 + 100 * 2


def test_calls_are_attributed_by_webhook_id_and_lists_by_key() -> None:
    counts = measure.Counts()
    calls = [
        {"endpoint": "GET /webhooks/{id}/deliveries", "path": "/v4/webhooks/wh_1/deliveries"},
        {"endpoint": "PATCH /webhooks/{id}", "path": "/v4/webhooks/wh_1", "status": 503},
        {"endpoint": "GET /webhooks", "path": "/v4/webhooks", "api_key_id": "key_a"},
        {"endpoint": "GET /webhooks", "path": "/v4/webhooks", "api_key_id": None},
        {"endpoint": "POST /webhooks", "path": "/v4/webhooks"},
    ]
    measure.attribute_calls(calls, {"wh_1": ("ns", "a")}, counts, unknown_key="key_b")
    assert counts.calls == Counter({("ns", "a"): 2})
    assert counts.calls_unattributed == 1
    assert counts.lists_by_key == Counter({"key_a": 1, "key_b": 1})
    assert counts.calls_total == 3
    assert counts.calls_by_endpoint["PATCH /webhooks/{id} 503"] == 1


def write(user: str, verb: str, resource: str, name: str) -> Write:
    return Write(user, verb, resource, "ns", name, 200, 0.0, "")


def test_writes_only_the_operators_and_events_apart() -> None:
    counts = measure.Counts()
    op = "system:serviceaccount:blooio-system:blooio-operator"
    writes = [
        write(op, "patch", "blooiowebhooks/status", "a"),
        write(op, "update", "secrets", "a-blooio-webhook"),
        write(op, "create", "events", ""),
        write(op, "patch", "secrets", "soak-api-key"),
        write("admin", "patch", "blooiowebhooks", "a"),  # the soak's own
    ]
    secrets = {("ns", "a-blooio-webhook"): ("ns", "a")}
    measure.attribute_writes(writes, op, {("ns", "a")}, secrets, counts)
    assert counts.writes == Counter({("ns", "a"): 2})
    assert (counts.writes_other, counts.event_writes, counts.writes_total) == (1, 1, 3)


def event(uid: str, type_: str, count: int, component: str = "blooio-operator") -> dict:
    return {
        "metadata": {"uid": uid},
        "type": type_,
        "reason": "R",
        "count": count,
        "reportingComponent": component,
        "involvedObject": {"namespace": "ns", "name": "a"},
    }


def test_events_are_new_objects_and_count_growth_since_the_mark() -> None:
    counts = measure.Counts()
    events = [
        event("old", "Warning", 3),  # grew by 2 in the window: occurrences, not an object
        event("new", "Warning", 1),
        event("n", "Normal", 1),
        event("x", "Warning", 1, component="kubelet"),
    ]
    measure.attribute_events(events, {"old": 1}, counts)
    assert counts.warnings == Counter({("ns", "a"): 1})
    assert counts.normals == Counter({("ns", "a"): 1})
    assert counts.occurrences == Counter({"Warning": 3, "Normal": 1})


def test_judge_holds_the_mean_and_the_worst_resource_to_budget() -> None:
    fleet = {("ns", f"r{i}") for i in range(10)}
    counts = measure.Counts(seconds=60)
    counts.calls[("ns", "r0")] = 50  # a hot loop on one resource, small on average
    small = budget.Budget(calls=10, writes=1, warnings=1, normals=1, lists_per_key=5)
    cells = {
        c.name: c
        for c in measure.judge(counts, small, fleet=fleet, touched=set(), keys=1, hours=1.0)
    }
    calls = cells["calls"]
    assert calls.mean == pytest.approx(5.0)
    assert calls.mean <= calls.budget
    assert (calls.worst, calls.worst_who) == (50, "ns/r0")
    assert not calls.ok
    assert cells["writes"].ok


def test_judge_allows_a_touched_resource_its_action_on_top() -> None:
    fleet = {("ns", "a"), ("ns", "b")}
    counts = measure.Counts(seconds=60)
    counts.normals[("ns", "a")] = 2  # the episode's clear and its DriftCorrected
    small = budget.Budget(calls=0, writes=0, warnings=1, normals=1)
    judged = measure.judge(counts, small, fleet=fleet, touched={("ns", "a")}, keys=1, hours=1.0)
    normals = next(c for c in judged if c.name == "normals")
    assert normals.ok, normals
    untouched = measure.judge(counts, small, fleet=fleet, touched=set(), keys=1, hours=1.0)
    assert not next(c for c in untouched if c.name == "normals").ok


def test_log_templates_fold_what_varies_between_resources() -> None:
    one = "2026-12-04 15:44:31,583 INFO    x: soak-0/soak-12: retry 1 of 2 in 0.5s (wh_Ab1)"
    two = "2026-12-04 15:44:32,001 INFO    x: soak-1/soak-7: retry 2 of 2 in 1.2s (wh_Zz9)"
    assert measure.log_template(one) == measure.log_template(two)


def test_a_touched_resources_allowance_is_not_stretched_by_a_longer_window() -> None:
    fleet = {("ns", "a")}
    counts = measure.Counts(seconds=120)
    one_off = budget.ACTION.writes
    # The one-off allowance, 2 h at 1 write/h, and 3 more: over its ceiling.
    counts.writes[("ns", "a")] = int(one_off + 2 + 3)
    small = budget.Budget(calls=0, writes=1, warnings=1, normals=1)
    judged = measure.judge(counts, small, fleet=fleet, touched=fleet, keys=1, hours=2.0)
    writes = next(c for c in judged if c.name == "writes")
    assert writes.worst_ceiling == pytest.approx(1 + one_off / 2)  # not stretched by 2 h
    assert writes.worst == pytest.approx((one_off + 5) / 2)
    assert not writes.ok
