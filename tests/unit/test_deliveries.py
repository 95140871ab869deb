"""Delivery health: sorting without trusting Blooio's order, bounds, the verdict, and
when a check is worth a status write (reconcile/deliveries.py)."""

from __future__ import annotations

import random

import pytest

from blooio_operator.blooio import WebhookDelivery
from blooio_operator.models import reasons
from blooio_operator.models.conditions import mark_ready
from blooio_operator.models.resource import WebhookStatus
from blooio_operator.reconcile.deliveries import Listing, apply_health, outcome, verdict

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
NOW = "2026-01-01T01:00:00Z"


def delivery(
    i: int, code: int | None, *, status: str | None = None, event: str = ""
) -> WebhookDelivery:
    if status is None:
        status = "delivered" if code is not None and 200 <= code < 300 else "failed"
    return WebhookDelivery(
        id=f"wdel_{i:04d}",
        webhook_id="wh_x",
        event_id=event or f"evt_{i:04d}",
        event_type="message.received",
        status=status,
        attempt_count=1,
        response_status=code,
        last_attempt_at=T0 + i * 1000 + 50,
        created_at=T0 + i * 1000,
    )


def test_outcome_from_response_code_and_status() -> None:
    assert outcome(delivery(1, 204)) == "delivered"
    assert outcome(delivery(1, 401)) == "failed"
    assert outcome(delivery(1, None)) == "failed"  # no answer: timeout/connection
    assert outcome(delivery(1, None, status="queued")) == "pending"
    assert outcome(delivery(1, None, status="sending")) == "pending"
    assert outcome(delivery(1, None, status="delivered")) == "delivered"


@pytest.mark.parametrize("seed", range(5))
def test_newest_is_found_whatever_the_order(seed: int) -> None:
    items = [delivery(i, 204) for i in range(30)] + [delivery(30, 500)]
    random.Random(seed).shuffle(items)
    listing = Listing.of(items, complete=True)
    assert listing.newest is not None
    assert listing.newest.id == "wdel_0030"
    status, reason, message = verdict(listing, max_pages=1)
    assert (status, reason) == ("False", reasons.RECEIVER_FAILING)
    assert "HTTP 500" in message
    assert "30 delivered, 1 failed" in message


def test_duplicates_across_pages_count_once() -> None:
    items = [delivery(1, 204), delivery(2, 204), delivery(2, 204)]
    listing = Listing.of(items, complete=True)
    assert len(listing.deliveries) == 2
    assert listing.counts() == {"delivered": 2, "failed": 0, "pending": 0}


def test_incomplete_listing_says_so_instead_of_guessing() -> None:
    listing = Listing.of([delivery(i, 204) for i in range(200)], complete=False)
    assert listing.newest is None
    status, reason, message = verdict(listing, max_pages=1)
    assert (status, reason) == ("Unknown", reasons.NEWEST_DELIVERY_UNKNOWN)
    assert "1 page" in message


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], ("Unknown", reasons.NO_RECENT_DELIVERIES)),
        ([204], ("True", reasons.RECEIVER_ACCEPTING)),
        ([500, 204], ("True", reasons.RECEIVER_ACCEPTING)),
        ([204, 401], ("False", reasons.RECEIVER_REJECTING)),
        ([204, 403], ("False", reasons.RECEIVER_REJECTING)),
        ([204, 404], ("False", reasons.RECEIVER_REJECTING)),
        ([204, 503], ("False", reasons.RECEIVER_FAILING)),
        ([204, None], ("False", reasons.RECEIVER_UNREACHABLE)),
    ],
)
def test_verdict_follows_the_newest_finished_delivery(
    codes: list[int | None], expected: tuple[str, str]
) -> None:
    listing = Listing.of([delivery(i, c) for i, c in enumerate(codes)], complete=True)
    assert verdict(listing, max_pages=1)[:2] == expected


def test_pending_deliveries_do_not_decide() -> None:
    items = [delivery(1, 401), delivery(2, None, status="queued")]
    assert verdict(Listing.of(items, complete=True), max_pages=1)[:2] == (
        "False",
        reasons.RECEIVER_REJECTING,
    )
    only_pending = [delivery(1, None, status="queued")]
    assert verdict(Listing.of(only_pending, complete=True), max_pages=1)[:2] == (
        "Unknown",
        reasons.DELIVERIES_PENDING,
    )


def ready_status() -> WebhookStatus:
    st = WebhookStatus(webhook_id="wh_x", observed_generation=1)
    st.conditions = mark_ready(st.conditions, reasons.SYNCED, "ok", generation=1, now=NOW)
    return st


def test_summary_and_condition_leave_ready_alone() -> None:
    st = ready_status()
    before = {c.type: c.model_dump() for c in st.conditions}
    listing = Listing.of([delivery(1, 204), delivery(2, 500)], complete=True)
    assert apply_health(st, listing, generation=1, now=NOW, max_pages=1)
    after = {c.type: c.model_dump() for c in st.conditions}
    for kind in (reasons.READY, reasons.RECONCILING, reasons.STALLED):
        assert after[kind] == before[kind]
    cond = st.condition(reasons.DELIVERIES_HEALTHY)
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", reasons.RECEIVER_FAILING)
    d = st.deliveries
    assert d is not None
    assert (d.seen, d.delivered, d.failed, d.pending, d.complete) == (2, 1, 1, 0, True)
    assert d.newest is not None
    assert (d.newest.id, d.newest.response_code, d.newest.status) == ("wdel_0002", 500, "failed")
    assert d.newest.at == "2026-01-01T00:00:02Z"
    assert d.last_delivered_at == "2026-01-01T00:00:01Z"
    assert d.checked_at == NOW
    dumped = d.dump()
    assert set(dumped) <= {
        "checkedAt",
        "complete",
        "seen",
        "delivered",
        "failed",
        "pending",
        "newest",
        "lastDeliveredAt",
    }


def test_unchanged_check_writes_nothing_until_an_hour_passed() -> None:
    st = ready_status()
    listing = Listing.of([delivery(1, 204)], complete=True)
    assert apply_health(st, listing, generation=1, now=NOW, max_pages=1)
    assert not apply_health(st, listing, generation=1, now="2026-01-01T01:10:00Z", max_pages=1)
    assert st.deliveries is not None
    assert st.deliveries.checked_at == NOW
    assert apply_health(st, listing, generation=1, now="2026-01-01T02:00:01Z", max_pages=1)
    # A new delivery is a change.
    more = Listing.of([delivery(1, 204), delivery(2, 204)], complete=True)
    assert apply_health(st, more, generation=1, now="2026-01-01T02:00:02Z", max_pages=1)


def test_last_delivered_survives_a_check_that_saw_none() -> None:
    st = ready_status()
    apply_health(
        st, Listing.of([delivery(1, 204)], complete=True), generation=1, now=NOW, max_pages=1
    )
    apply_health(
        st, Listing.of([delivery(2, 500)], complete=True), generation=1, now=NOW, max_pages=1
    )
    assert st.deliveries is not None
    assert st.deliveries.last_delivered_at == "2026-01-01T00:00:01Z"


def test_transition_time_moves_only_on_a_flip() -> None:
    st = ready_status()
    failing = Listing.of([delivery(1, 500)], complete=True)
    apply_health(st, failing, generation=1, now=NOW, max_pages=1)
    failing_more = Listing.of([delivery(1, 500), delivery(2, 502)], complete=True)
    apply_health(st, failing_more, generation=1, now="2026-01-01T01:05:00Z", max_pages=1)
    cond = st.condition(reasons.DELIVERIES_HEALTHY)
    assert cond is not None
    assert cond.last_transition_time == NOW
    healthy = Listing.of([delivery(1, 500), delivery(3, 200)], complete=True)
    apply_health(st, healthy, generation=1, now="2026-01-01T01:06:00Z", max_pages=1)
    cond = st.condition(reasons.DELIVERIES_HEALTHY)
    assert cond is not None
    assert (cond.status, cond.last_transition_time) == ("True", "2026-01-01T01:06:00Z")


def test_metrics_by_namespace_and_name_and_forgotten_on_delete() -> None:
    from prometheus_client import generate_latest

    from blooio_operator.metrics import Metrics

    metrics = Metrics(delivery_detail=True)  # per-resource delivery series are opt-in
    metrics.track("uid-1", "shop", "orders", "Ready")
    metrics.observe_deliveries(
        "uid-1", "shop", "orders", {"delivered": 3, "failed": 1, "pending": 0}, 1.7e9, "False"
    )
    metrics.replays.labels("rotation", "posted").inc(4)
    text = generate_latest(metrics.registry).decode()
    assert (
        'blooio_operator_webhook_deliveries{name="orders",namespace="shop",outcome="failed"} 1.0'
        in text
    )
    assert (
        'blooio_operator_webhook_last_delivered_timestamp_seconds{name="orders",namespace="shop"}'
        in text
    )
    assert 'blooio_operator_delivery_replays_total{result="posted",trigger="rotation"} 4.0' in text
    metrics.forget("uid-1")
    metrics.forget("uid-1")  # twice is fine
    text = generate_latest(metrics.registry).decode()
    assert 'namespace="shop"' not in text


def test_bench_idle_half_rate_resource_count() -> None:
    from bench.idle import computed, half_rate_resources

    # Health checks alone: 100/s * 600 s; the drift list's pages cost a little more.
    assert computed()["half_rate_resources_health_only"] == 60_000
    n = half_rate_resources(rate_per_key=200, health_interval=600, drift_interval=600)
    assert n / 600 + -(-n // 200) / 600 <= 100 < (n + 1) / 600 + -(-(n + 1) // 200) / 600
    figures = computed()
    assert figures["half_rate_resources"] == n  # the defaults: 200/s, 600 s, 600 s


def test_crd_schema_keeps_every_deliveries_field() -> None:
    """The API server prunes unknown status fields: the CRD must list every model field."""
    from pathlib import Path

    import yaml

    from blooio_operator.models.resource import (
        DeliveriesStatus,
        NewestDelivery,
        ReplayEpisode,
        ReplayRecord,
    )

    crd = Path(__file__).resolve().parents[2] / "deploy/crds/blooio.com_blooiowebhooks.yaml"
    doc = yaml.safe_load(crd.read_text())
    status = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    schema = status["properties"]["deliveries"]

    def aliases(model: type) -> set[str]:
        return {f.alias or name for name, f in model.model_fields.items()}  # type: ignore[attr-defined]

    assert set(schema["properties"]) == aliases(DeliveriesStatus)
    assert set(schema["properties"]["newest"]["properties"]) == aliases(NewestDelivery)
    assert set(schema["properties"]["replay"]["properties"]) == aliases(ReplayEpisode)
    assert set(schema["properties"]["lastReplay"]["properties"]) == aliases(ReplayRecord)
    columns = {c["name"]: c for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Delivery"]["priority"] == 1
    assert "DeliveriesHealthy" in columns["Delivery"]["jsonPath"]


@pytest.mark.parametrize("lua", ["lua51", "lua54"])
@pytest.mark.parametrize("health", ["True", "False", "Unknown"])
def test_argocd_verdict_ignores_deliveries_healthy(lua: str, health: str) -> None:
    import importlib
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "deploy/argocd/blooiowebhook-health.lua"
    runtime = importlib.import_module(f"lupa.{lua}").LuaRuntime(unpack_returned_tuples=True)
    st = ready_status()
    listing = Listing.of([delivery(1, 204 if health == "True" else 500)], complete=True)
    if health != "Unknown":
        apply_health(st, listing, generation=1, now=NOW, max_pages=1)
    else:
        apply_health(st, Listing.of([], complete=True), generation=1, now=NOW, max_pages=1)
    cond = st.condition(reasons.DELIVERIES_HEALTHY)
    assert cond is not None
    assert cond.status == health
    obj = {
        "metadata": {"generation": 1},
        "spec": {"url": "https://x.example.com"},
        "status": st.dump(),
    }
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    hs = runtime.execute(script.read_text())
    assert hs["status"] == "Healthy"


def test_a_give_up_message_stays_while_the_receiver_still_fails() -> None:
    from blooio_operator.models.conditions import set_condition
    from blooio_operator.reconcile.deliveries import NOT_REPLAYED_MARK

    st = ready_status()
    gave_up = f"3 deliveries rejected ... {NOT_REPLAYED_MARK}: ..."
    st.conditions = set_condition(
        st.conditions,
        reasons.DELIVERIES_HEALTHY,
        "False",
        reasons.RECEIVER_REJECTING,
        gave_up,
        generation=1,
        now=NOW,
    )
    still_failing = Listing.of([delivery(1, 401)], complete=True)
    apply_health(st, still_failing, generation=1, now=NOW, max_pages=1)
    cond = st.condition(reasons.DELIVERIES_HEALTHY)
    assert cond is not None
    assert cond.message == gave_up
    recovered = Listing.of([delivery(1, 401), delivery(2, 204)], complete=True)
    apply_health(st, recovered, generation=1, now=NOW, max_pages=1)
    cond = st.condition(reasons.DELIVERIES_HEALTHY)
    assert cond is not None
    assert (cond.status, cond.reason) == ("True", reasons.RECEIVER_ACCEPTING)
