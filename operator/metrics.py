"""Prometheus metrics: reconciles, Blooio requests, resources by condition, rotations, drift,
delivery health and replays, and whether this process leads.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _ConditionCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "blooio_operator_resources",
            "BlooioWebhook resources by condition (the first True of Stalled, Ready, Reconciling).",
            labels=["condition"],
        )
        counts = {"Ready": 0, "Reconciling": 0, "Stalled": 0, "Unknown": 0}
        for cond in self._metrics.resource_conditions.values():
            counts[cond] = counts.get(cond, 0) + 1
        for cond, count in sorted(counts.items()):
            family.add_metric([cond], count)
        yield family


class Metrics:
    """All operator metrics in one registry (not the global one, so tests can make many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "blooio_operator_reconciles",
            "Reconciliations by trigger and outcome.",
            ["trigger", "outcome"],
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
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
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
        self.deliveries_seen = Gauge(
            "blooio_operator_webhook_deliveries",
            "Deliveries listed by the last health check of a webhook, by outcome "
            "(delivered, failed, pending).",
            ["namespace", "name", "outcome"],
            registry=self.registry,
        )
        self.last_delivered = Gauge(
            "blooio_operator_webhook_last_delivered_timestamp_seconds",
            "Creation time of the newest delivery the receiver accepted (2xx), as last seen.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.replays = Counter(
            "blooio_operator_delivery_replays",
            "Delivery replays posted, by trigger (rotation, request) and result "
            "(posted, refused, error).",
            ["trigger", "result"],
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
        self.resource_conditions: dict[str, str] = {}
        self.registry.register(_ConditionCollector(self))

    def observe_request(self, endpoint: str, status: str, seconds: float) -> None:
        self.requests.labels(endpoint, status).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status.isdigit() and int(status) < 500:
            self.blooio_up.set(1)
            self.blooio_answered.set_to_current_time()
        else:
            self.blooio_up.set(0)

    def observe_deliveries(
        self, namespace: str, name: str, counts: dict[str, int], last_delivered: float | None
    ) -> None:
        for outcome, count in counts.items():
            self.deliveries_seen.labels(namespace, name, outcome).set(count)
        if last_delivered is not None:
            self.last_delivered.labels(namespace, name).set(last_delivered)

    def forget_webhook(self, namespace: str, name: str) -> None:
        """Drop a deleted resource's labelled series."""
        for outcome in ("delivered", "failed", "pending"):
            try:
                self.deliveries_seen.remove(namespace, name, outcome)
            except KeyError:
                pass
        try:
            self.last_delivered.remove(namespace, name)
        except KeyError:
            pass

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a Pod port
        start_http_server(port, addr=addr, registry=self.registry)
