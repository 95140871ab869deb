"""Prometheus metrics of a running operator, scraped over HTTP after a known scenario.

Scenario: two resources created (201 twice), one rejected by Blooio (422 -> Stalled),
one secret rotation through the ``blooio.com/rotate-secret`` annotation, one drift
correction after the webhook was changed behind the operator's back (simulator admin
``PATCH /_sim/webhooks/{id}``). Every count is then checked against what happened,
and the Blooio request counter against the simulator's own call log.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_for
from tests.integration.conftest import OperatorFactory, OperatorProcess, Simulator
from tests.integration.webhooks import Webhooks

pytestmark = pytest.mark.integration
URL = "https://orders.shop.example.com/blooio"
DRIFTED_URL = "https://attacker.example.net/steal"

Labels = tuple[tuple[str, str], ...]

# Operator bugs these tests exposed (see the report); remove each mark with its fix.
# strict=True: a fixed bug turns the test into an XPASS failure, not a silent pass.


@pytest.fixture
def hooks(kube_api: k8s.ApiClient, namespace: str) -> Webhooks:
    return Webhooks(kube_api, namespace)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


class Scrape:
    """One /metrics scrape: samples by name and label set."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, dict[Labels, float]] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                self.samples.setdefault(sample.name, {})[labels] = sample.value

    def get(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent: a counter never touched)."""
        return self.samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def sum(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for k, v in self.samples.get(name, {}).items() if want <= set(k))

    def by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for labels, value in self.samples.get(name, {}).items():
            d = dict(labels)
            out[tuple(d.get(k, "") for k in keys)] = value
        return out


def scrape(port: int) -> Scrape:
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    resp.raise_for_status()
    return Scrape(resp.text)


def wait_scrape(port: int, ready: Any, timeout: float = 60, message: str = "metrics") -> Scrape:
    def probe() -> Scrape | None:
        s = scrape(port)
        return s if ready(s) else None

    return wait_for(probe, timeout=timeout, interval=0.5, message=message)


def blooio_calls(simulator: Simulator) -> Counter[tuple[str, str]]:
    """What the simulator answered, per (endpoint, status), as the metrics label it."""
    return Counter(
        (c["endpoint"], str(c["status"])) for c in simulator.calls() if c["status"] is not None
    )


def test_metrics_after_create_reject_rotate_and_drift(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    port = free_port()
    op = start_operator(BLOOIO_METRICS_PORT=str(port))
    wait_scrape(port, lambda s: "blooio_operator_resources" in s.types, message="/metrics up")

    # Two webhooks created, one rejected by Blooio.
    hooks.create("alpha", {"url": f"{URL}/a", "eventTypes": ["message.received"]})
    hooks.create("beta", {"url": f"{URL}/b", "eventTypes": ["message.*"]})
    hooks.create("gamma", {"url": f"{URL}/c", "eventTypes": ["message.bogus"]})
    alpha_id = hooks.wait_ready("alpha")["webhookId"]
    beta_id = hooks.wait_ready("beta")["webhookId"]
    hooks.wait_condition("gamma", "Stalled", "True", reason="ValidationFailed")

    # One rotation, asked for through the annotation.
    before = hooks.secret_data("alpha-blooio-webhook")["signing-secret"]
    hooks.patch("alpha", {"metadata": {"annotations": {"blooio.com/rotate-secret": "r1"}}})
    hooks.wait_event("alpha", "SecretRotated")
    wait_for(
        lambda: hooks.secret_data("alpha-blooio-webhook")["signing-secret"] != before,
        message="rotated secret written",
    )

    # One drift correction: beta's URL is changed at Blooio behind the operator's back.
    simulator.admin.mutate(beta_id, url=DRIFTED_URL)
    hooks.wait_event("beta", "DriftCorrected", timeout=60)
    remote = simulator.webhook(beta_id)
    assert remote is not None
    assert remote["url"] == f"{URL}/b"

    s = wait_scrape(
        port,
        lambda s: (
            s.sum("blooio_operator_drift_corrections_total") >= 1
            and s.get("blooio_operator_resources", condition="Ready") == 2
            and s.get("blooio_operator_resources", condition="Stalled") == 1
        ),
        message="metrics caught up",
    )
    assert s.types["blooio_operator_reconciles"] == "counter"
    assert s.types["blooio_operator_blooio_request_duration_seconds"] == "histogram"
    assert s.types["blooio_operator_resources"] == "gauge"

    # Reconciles by trigger and outcome.
    rec = "blooio_operator_reconciles_total"
    assert s.get(rec, trigger="create", outcome="success") == 2, s.by(rec, "trigger", "outcome")
    assert s.get(rec, trigger="create", outcome="PermanentFailure") == 1
    assert s.get(rec, trigger="update", outcome="success") >= 1  # the rotate annotation
    assert s.get(rec, trigger="periodic", outcome="success") >= 1  # the drift check
    outcomes = {outcome for (_, outcome) in s.by(rec, "trigger", "outcome")}
    assert outcomes <= {"success", "skipped", "PermanentFailure"}, s.by(rec, "trigger", "outcome")

    # Blooio requests by endpoint and status, with the client's endpoint templates.
    req = "blooio_operator_blooio_requests_total"
    assert s.get(req, endpoint="POST /webhooks", status="201") == 2, s.by(req, "endpoint", "status")
    assert s.get(req, endpoint="POST /webhooks", status="422") == 1
    assert s.get(req, endpoint="POST /webhooks/{id}/secret/rotate", status="200") == 1
    assert s.get(req, endpoint="PATCH /webhooks/{id}", status="200") >= 1  # the drift fix
    assert s.sum(req, endpoint="GET /webhooks") >= 1  # the per-key drift snapshot
    for (endpoint, status), n in s.by(req, "endpoint", "status").items():
        assert "/wh_" not in endpoint, f"raw path used as a label: {endpoint}"
        assert status.isdigit() or status in ("timeout", "connection_error"), status
        assert n > 0

    # Latency histogram, per endpoint, consistent with the request counter.
    hist = "blooio_operator_blooio_request_duration_seconds"
    assert s.get(f"{hist}_count", endpoint="POST /webhooks") == 3
    assert s.get(f"{hist}_sum", endpoint="POST /webhooks") > 0
    assert s.get(f"{hist}_bucket", endpoint="POST /webhooks", le="+Inf") == 3
    assert s.get(f"{hist}_bucket", endpoint="POST /webhooks", le="30.0") == 3
    assert s.get(f"{hist}_count", endpoint="POST /webhooks/{id}/secret/rotate") == 1

    # Resources by condition.
    res = "blooio_operator_resources"
    assert s.get(res, condition="Ready") == 2
    assert s.get(res, condition="Stalled") == 1
    assert s.get(res, condition="Reconciling") == 0

    # Rotations and drift corrections.
    assert s.get("blooio_operator_secret_rotations_total", reason="annotation") == 1
    assert s.sum("blooio_operator_secret_rotations_total") == 1
    assert s.get("blooio_operator_drift_corrections_total", kind="patched") == 1
    assert s.sum("blooio_operator_drift_corrections_total") == 1

    # The request counter agrees with the simulator's call log for every write endpoint
    # (reads keep happening on the timer, so they are compared only as "at least").
    def agrees() -> bool:
        sim = blooio_calls(simulator)
        got = scrape(port).by(req, "endpoint", "status")
        for (endpoint, status), n in sim.items():
            have = got.get((endpoint, status), 0)
            if endpoint.startswith("GET"):
                if have < n - 2:  # a scrape may race one in-flight read per key
                    return False
            elif have != n:
                return False
        return all((e, st) in sim for (e, st) in got if not e.startswith("GET"))

    wait_for(agrees, timeout=20, message=f"metrics == simulator calls {blooio_calls(simulator)}")
    assert alpha_id != beta_id

    # The gauges are rebuilt after a restart (resume), here through the CLI flag.
    restart_with_flag(op, free_port)


def restart_with_flag(op: OperatorProcess, port_factory: Any) -> None:
    op.stop()
    port = port_factory()
    op.env = {k: v for k, v in op.env.items() if k != "BLOOIO_METRICS_PORT"}
    op.args = [*op.args, "--metrics-port", str(port)]
    op.start()
    s = wait_scrape(
        port,
        lambda s: (
            s.get("blooio_operator_resources", condition="Ready") == 2
            and s.get("blooio_operator_resources", condition="Stalled") == 1
        ),
        message="gauges after restart",
    )
    rec = "blooio_operator_reconciles_total"
    # Settled and waiting-for-a-human resources cost nothing on resume.
    assert s.get(rec, trigger="resume", outcome="skipped") == 3, s.by(rec, "trigger", "outcome")
    assert s.sum("blooio_operator_blooio_requests_total", endpoint="POST /webhooks") == 0


def test_readiness_per_resource_follows_the_resource_and_leaves_with_it(
    hooks: Webhooks, start_operator: OperatorFactory, namespace: str
) -> None:
    port = free_port()
    start_operator(BLOOIO_METRICS_PORT=str(port), BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS="2")
    hooks.create("alpha", {"url": f"{URL}/a", "eventTypes": ["message.received"]})
    hooks.create("gamma", {"url": f"{URL}/c", "eventTypes": ["message.bogus"]})  # 422
    hooks.wait_ready("alpha")
    hooks.wait_condition("gamma", "Stalled", "True", reason="ValidationFailed")
    ready = "blooio_operator_resource_ready"
    s = wait_scrape(
        port,
        lambda s: (
            s.by(ready, "namespace", "name")
            == {(namespace, "alpha"): 1.0, (namespace, "gamma"): 0.0}
        ),
        message="one readiness series per resource",
    )
    assert s.types[ready] == "gauge"
    assert {tuple(sorted(dict(k))) for k in s.samples[ready]} == {("name", "namespace")}
    # The delivery detail is opt-in: nothing per resource but readiness by default.
    assert "blooio_operator_webhook_deliveries" not in s.types
    wait_scrape(
        port,
        lambda s: s.sum("blooio_operator_resources_deliveries_healthy") == 1,
        message="alpha's delivery health counted",
    )

    hooks.delete("alpha")
    s = wait_scrape(
        port,
        lambda s: s.by(ready, "namespace", "name") == {(namespace, "gamma"): 0.0},
        message="alpha's series gone with it",
    )
    assert 'name="alpha"' not in s.text
    assert s.get("blooio_operator_resources", condition="Ready") == 0
