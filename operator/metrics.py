"""Prometheus metrics: reconciles, Blooio requests, resources by condition, per-resource
readiness, rotations, drift, delivery health and replays, and whether this process leads.

Per-resource series (labels ``namespace``, ``name``) are not kept in labelled children
that someone must remember to remove: ``resources`` holds one entry per live resource,
keyed by uid, and a collector renders them at scrape time. Forgetting the uid (deletion,
a DELETED event, a re-list's audit: ``handlers.webhooks.forget``) removes every series
of the resource at once, so none outlives it. Which per-resource series are exported is
a setting (docs/configuration.md, "Metrics"): readiness by default (one series per
resource), delivery detail only when asked for (four more per resource).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONDITIONS = ("Ready", "Reconciling", "Stalled", "Unknown")
DELIVERY_OUTCOMES = ("delivered", "failed", "pending")
DELIVERY_HEALTH = ("True", "False", "Unknown")

# Blooio calls: most answer in tens of milliseconds; the client's timeout is 10 s by
# default (BLOOIO_HTTP_TIMEOUT_SECONDS), so the top finite buckets catch slow answers
# and timeouts apart; 30 s covers a raised timeout.
BLOOIO_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# One reconcile is a few Blooio calls and Kubernetes writes (tens to hundreds of ms); a
# create whose outcome is unknown waits the recovery delay (3 s) and lists; a retried
# step may take a client timeout or two (10-20 s). Above a minute something hangs.
RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class ResourceSeries:
    """What the per-resource series of one resource say."""

    namespace: str
    name: str
    condition: str = "Unknown"
    deliveries: dict[str, int] = field(default_factory=dict)
    deliveries_healthy: str | None = None  # the last health check's verdict
    last_delivered: float | None = None


class _ResourceCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self._metrics
        # Newest last: a name deleted and re-created before the old uid was forgotten
        # (a watch gap) must not show twice; the newer entry wins.
        latest: dict[tuple[str, str], ResourceSeries] = {}
        for entry in list(m.resources.values()):
            latest[entry.namespace, entry.name] = entry
        counts = dict.fromkeys(CONDITIONS, 0)
        health = dict.fromkeys(DELIVERY_HEALTH, 0)
        for entry in latest.values():
            counts[entry.condition] = counts.get(entry.condition, 0) + 1
            if entry.deliveries_healthy is not None:
                health[entry.deliveries_healthy] = health.get(entry.deliveries_healthy, 0) + 1
        family = GaugeMetricFamily(
            "blooio_operator_resources",
            "BlooioWebhook resources by condition (the first True of Stalled, Ready, Reconciling).",
            labels=["condition"],
        )
        for cond, count in sorted(counts.items()):
            family.add_metric([cond], count)
        yield family
        healthy = GaugeMetricFamily(
            "blooio_operator_resources_deliveries_healthy",
            "BlooioWebhook resources by the verdict of their latest delivery health check "
            "(the DeliveriesHealthy condition: True, False, Unknown).",
            labels=["status"],
        )
        for verdict, count in sorted(health.items()):
            healthy.add_metric([verdict], count)
        yield healthy
        if m.readiness:
            ready = GaugeMetricFamily(
                "blooio_operator_resource_ready",
                "1 while the BlooioWebhook's Ready condition is True, else 0; one series per "
                "resource, removed when the resource is deleted.",
                labels=["namespace", "name"],
            )
            for entry in latest.values():
                ready.add_metric(
                    [entry.namespace, entry.name], 1.0 if entry.condition == "Ready" else 0.0
                )
            yield ready
        if m.delivery_detail:
            seen = GaugeMetricFamily(
                "blooio_operator_webhook_deliveries",
                "Deliveries listed by the last health check of a webhook, by outcome "
                "(delivered, failed, pending).",
                labels=["namespace", "name", "outcome"],
            )
            last = GaugeMetricFamily(
                "blooio_operator_webhook_last_delivered_timestamp_seconds",
                "Creation time of the newest delivery the receiver accepted (2xx), as last seen.",
                labels=["namespace", "name"],
            )
            for entry in latest.values():
                for outcome, count in sorted(entry.deliveries.items()):
                    seen.add_metric([entry.namespace, entry.name, outcome], count)
                if entry.last_delivered is not None:
                    last.add_metric([entry.namespace, entry.name], entry.last_delivered)
            yield seen
            yield last


class Metrics:
    """All operator metrics in one registry (not the global one, so tests can make many).

    ``readiness``: export ``blooio_operator_resource_ready`` (one series per resource).
    ``delivery_detail``: export the per-resource delivery series (four per resource).
    """

    def __init__(self, *, readiness: bool = True, delivery_detail: bool = False) -> None:
        self.readiness = readiness
        self.delivery_detail = delivery_detail
        self.resources: dict[str, ResourceSeries] = {}  # by uid, least recently updated first
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "blooio_operator_reconciles",
            "Reconciliations by trigger and outcome.",
            ["trigger", "outcome"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "blooio_operator_reconcile_duration_seconds",
            "How long one reconciliation took (under the resource's lock), by trigger.",
            ["trigger"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "blooio_operator_blooio_requests",
            "Blooio API requests by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "blooio_operator_blooio_request_duration_seconds",
            "Blooio API request latency by endpoint.",
            ["endpoint"],
            buckets=BLOOIO_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rotations = Counter(
            "blooio_operator_secret_rotations",
            "Signing-secret rotations by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.drift = Counter(
            "blooio_operator_drift_corrections",
            "Drift corrections by kind (patched, recreated).",
            ["kind"],
            registry=self.registry,
        )
        self.replays = Counter(
            "blooio_operator_delivery_replays",
            "Delivery replays posted, by trigger (rotation, request) and result "
            "(posted, refused, error).",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.replays_given_up = Counter(
            "blooio_operator_replay_episodes_given_up",
            "Replay episodes that ended without replaying every rejected delivery (Warning "
            "DeliveriesNotReplayed), by trigger (rotation, request).",
            ["trigger"],
            registry=self.registry,
        )
        self.blooio_up = Gauge(
            "blooio_operator_blooio_up",
            "1 when Blooio's latest answer was an HTTP answer below 500; 0 after a 5xx, "
            "a timeout or a connection error (Blooio is not answering).",
            registry=self.registry,
        )
        self.blooio_answered = Gauge(
            "blooio_operator_blooio_last_answer_timestamp_seconds",
            "When Blooio last gave an HTTP answer below 500.",
            registry=self.registry,
        )
        self.rejected_keys = Gauge(
            "blooio_operator_credentials_rejected_keys",
            "API keys whose latest list of webhooks Blooio rejected (401/403).",
            registry=self.registry,
        )
        self.leader = Gauge(
            "blooio_operator_leader",
            "1 while this process leads (holds the Lease, or runs without leader election) "
            "and handles resources; 0 on a standby.",
            registry=self.registry,
        )
        self.registry.register(_ResourceCollector(self))

    def observe_request(self, endpoint: str, status: str, seconds: float) -> None:
        self.requests.labels(endpoint, status).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status.isdigit() and int(status) < 500:
            self.blooio_up.set(1)
            self.blooio_answered.set_to_current_time()
        else:
            self.blooio_up.set(0)

    def _entry(self, uid: str, namespace: str, name: str) -> ResourceSeries:
        entry = self.resources.pop(uid, None)  # re-inserted last: the newest of a name wins
        if entry is None:
            entry = ResourceSeries(namespace, name)
        self.resources[uid] = entry
        return entry

    def track(self, uid: str, namespace: str, name: str, condition: str) -> None:
        """A resource's condition after a reconcile (Stalled, Ready, Reconciling, Unknown)."""
        self._entry(uid, namespace, name).condition = condition

    def observe_deliveries(
        self,
        uid: str,
        namespace: str,
        name: str,
        counts: dict[str, int],
        last_delivered: float | None,
        healthy: str | None = None,
    ) -> None:
        """A delivery health check's result: counts by outcome, the newest accepted
        delivery's time, and the DeliveriesHealthy verdict (True, False, Unknown)."""
        if uid not in self.resources:
            return  # not tracked yet, or already forgotten: never resurrect a deleted one
        entry = self._entry(uid, namespace, name)
        if self.delivery_detail:  # kept only when exported
            entry.deliveries = {k: v for k, v in counts.items() if k in DELIVERY_OUTCOMES}
            if last_delivered is not None:
                entry.last_delivered = last_delivered
        if healthy is not None:
            entry.deliveries_healthy = healthy

    def forget(self, uid: str) -> None:
        """Drop every per-resource series of a deleted resource (idempotent)."""
        self.resources.pop(uid, None)
