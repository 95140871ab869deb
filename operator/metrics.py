"""Prometheus metrics: reconciles, Blooio requests, resources by condition, rotations, drift."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
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
        self.resource_conditions: dict[str, str] = {}
        self.registry.register(_ConditionCollector(self))

    def observe_request(self, endpoint: str, status: str, seconds: float) -> None:
        self.requests.labels(endpoint, status).inc()
        self.latency.labels(endpoint).observe(seconds)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a Pod port
        start_http_server(port, addr=addr, registry=self.registry)
