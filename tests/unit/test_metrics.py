"""The operator's metrics as a scrape shows them: per-resource readiness (one series per
resource, gone with the resource), the opt-in delivery detail, the fleet aggregates, and
the histograms' buckets."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from blooio_operator.metrics import Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def ready(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["namespace"], dict(labels)["name"]): value
        for (name, labels), value in samples(metrics).items()
        if name == "blooio_operator_resource_ready"
    }


def test_readiness_is_one_series_per_resource_valued_one_or_zero() -> None:
    m = Metrics()
    m.track("u1", "shop", "orders", "Ready")
    m.track("u2", "shop", "refunds", "Stalled")
    m.track("u3", "team-a", "orders", "Reconciling")
    assert ready(m) == {("shop", "orders"): 1.0, ("shop", "refunds"): 0.0, ("team-a", "orders"): 0}
    # No True/False pair, no condition label: exactly namespace and name.
    for (name, labels), _ in samples(m).items():
        if name == "blooio_operator_resource_ready":
            assert [k for k, _ in labels] == ["name", "namespace"]
    m.track("u2", "shop", "refunds", "Ready")
    assert ready(m)[("shop", "refunds")] == 1.0


def test_forgetting_a_resource_removes_every_series_of_it() -> None:
    m = Metrics(delivery_detail=True)
    m.track("u1", "shop", "orders", "Ready")
    m.observe_deliveries("u1", "shop", "orders", {"delivered": 2, "failed": 0, "pending": 0}, 1.0)
    m.track("u2", "shop", "refunds", "Ready")
    m.forget("u1")
    text = generate_latest(m.registry).decode()
    assert 'name="orders"' not in text
    assert 'name="refunds"' in text
    assert samples(m)["blooio_operator_resources", (("condition", "Ready"),)] == 1
    m.forget("u1")  # idempotent


def test_a_late_health_check_does_not_bring_back_a_forgotten_resource() -> None:
    m = Metrics(delivery_detail=True)
    m.track("u1", "shop", "orders", "Ready")
    m.forget("u1")
    m.observe_deliveries("u1", "shop", "orders", {"delivered": 1}, 1.0, "True")
    assert 'name="orders"' not in generate_latest(m.registry).decode()


def test_a_recreated_name_shows_once_with_the_newest_state() -> None:
    # Deleted while the watch was away and re-created: until the re-list's audit
    # forgets the old uid, both are known; the scrape must not hold a duplicate series.
    m = Metrics()
    m.track("old", "shop", "orders", "Ready")
    m.track("new", "shop", "orders", "Reconciling")
    assert ready(m) == {("shop", "orders"): 0.0}
    assert samples(m)["blooio_operator_resources", (("condition", "Reconciling"),)] == 1
    assert samples(m)["blooio_operator_resources", (("condition", "Ready"),)] == 0


def test_delivery_detail_is_opt_in_and_readiness_can_be_turned_off() -> None:
    default = Metrics()
    default.track("u1", "shop", "orders", "Ready")
    default.observe_deliveries("u1", "shop", "orders", {"delivered": 3}, 1.0, "False")
    text = generate_latest(default.registry).decode()
    assert "blooio_operator_webhook_deliveries" not in text
    assert "blooio_operator_webhook_last_delivered_timestamp_seconds" not in text
    # The fleet-level verdict stays, whatever the setting.
    assert samples(default)["blooio_operator_resources_deliveries_healthy", (("status", "False"),)]
    off = Metrics(readiness=False)
    off.track("u1", "shop", "orders", "Ready")
    assert "blooio_operator_resource_ready" not in generate_latest(off.registry).decode()
    assert samples(off)["blooio_operator_resources", (("condition", "Ready"),)] == 1


def test_histograms_and_the_give_up_counter() -> None:
    m = Metrics()
    m.reconcile_duration.labels("create").observe(0.3)
    m.observe_request("POST /webhooks", "201", 0.02)
    m.replays_given_up.labels("rotation").inc()
    s = samples(m)
    hist = "blooio_operator_reconcile_duration_seconds_bucket"
    assert s[hist, (("le", "0.25"), ("trigger", "create"))] == 0
    assert s[hist, (("le", "0.5"), ("trigger", "create"))] == 1
    assert s[hist, (("le", "120.0"), ("trigger", "create"))] == 1
    lat = "blooio_operator_blooio_request_duration_seconds_bucket"
    assert s[lat, (("endpoint", "POST /webhooks"), ("le", "0.025"))] == 1
    assert s["blooio_operator_replay_episodes_given_up_total", (("trigger", "rotation"),)] == 1


async def test_a_resource_deleted_in_a_watch_gap_leaves_with_the_relist_audit() -> None:
    """kopf sends no DELETED for an object that vanished while its watch was away; the
    re-list's audit forgets it (handlers.webhooks.forget -> Metrics.forget), and with
    it every series of the resource."""
    import asyncio

    from blooio_operator.handlers.registry import Registry
    from blooio_operator.handlers.relist import RelistAudit
    from tests.unit.fakes import make_body

    m = Metrics()
    registry = Registry()
    for uid, name in (("a", "orders"), ("b", "refunds")):
        registry.observe(make_body(name=name, namespace="shop", uid=uid))
        m.track(uid, "shop", name, "Ready")

    async def live() -> set[str]:
        return {"a"}

    def forget(uid: str) -> None:  # what handlers.webhooks.forget does for the metrics
        m.forget(uid)
        registry.forget(uid)

    audit = RelistAudit(registry, live, forget, quiet=0.05)
    await asyncio.sleep(0.01)
    audit.listed()
    registry.observe(make_body(name="orders", namespace="shop", uid="a"))  # the re-list
    for _ in range(100):
        if audit.forgotten:
            break
        await asyncio.sleep(0.02)
    await audit.close()
    assert ready(m) == {("shop", "orders"): 1.0}
    assert 'name="refunds"' not in generate_latest(m.registry).decode()
