"""A real Prometheus (v0.316.0, built from the module proxy) scrapes a real operator with
the shipped scrape settings and a real token, evaluates the shipped alert rules, and an
induced failure makes the matching alert fire and then resolve.

The world: the local control plane, the simulator and ``blooio-operator run`` as its
ServiceAccount under the shipped RBAC, with ``/metrics`` behind the token check (the
default). The shipped ``metrics-reader.yaml`` is applied as is, and Prometheus scrapes
with a token of the ServiceAccount it binds (``monitoring/prometheus-k8s``), as the
ServiceMonitor's ``bearerTokenFile`` would. There is no Kubernetes service discovery
here (no pod network), so the ServiceMonitor's endpoint is translated into a static
scrape config: its path, scheme, honorLabels, relabelings and the token file; the
target is the operator's loopback port. The PrometheusRule's groups are loaded as
they are, except that every ``for`` is cut to a few seconds and Prometheus scrapes and
evaluates every second (the expressions are unchanged).

The failure: the simulator revokes the operator's API key. ``BlooioOperatorCredentialsInvalid``
must fire (read from ``/api/v1/alerts``); the key accepted again, it must go back to
inactive. Meanwhile the target is up and the absent/down/no-leader alerts stay quiet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from tests.helpers import wait_for
from tests.integration.conftest import API_KEY, OperatorFactory, Simulator, token_for
from tests.integration.test_metrics import free_port
from tests.integration.webhooks import Webhooks

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ALERT = "BlooioOperatorCredentialsInvalid"
QUIET = ("BlooioOperatorAbsent", "BlooioOperatorDown", "BlooioOperatorNoLeader")
FOR = "3s"


def shipped_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MONITORING / name).read_text()) if d]


def scrape_config(target: str, token_file: Path) -> dict[str, Any]:
    """The shipped ServiceMonitor's endpoint as a Prometheus scrape config."""
    (monitor,) = shipped_docs("servicemonitor.yaml")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    relabel = [
        {
            "action": r["action"],
            "target_label": r["targetLabel"],
            "replacement": r["replacement"],
        }
        for r in endpoint["relabelings"]
    ]
    return {
        "job_name": "servicemonitor/blooio-system/blooio-operator/0",
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "metrics_path": endpoint["path"],
        "scheme": endpoint["scheme"],
        "honor_labels": endpoint["honorLabels"],
        "sample_limit": monitor["spec"]["sampleLimit"],
        "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
        "static_configs": [{"targets": [target]}],
        "relabel_configs": relabel,
    }


def shipped_rules() -> dict[str, Any]:
    (rule,) = shipped_docs("prometheusrule.yaml")
    groups = rule["spec"]["groups"]
    for group in groups:
        group["interval"] = "1s"
        for r in group["rules"]:
            if "for" in r:
                r["for"] = FOR
    return {"groups": groups}


class Prometheus:
    def __init__(self, binary: Path, work: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = work / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def get(self, path: str, **params: str) -> Any:
        resp = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        resp.raise_for_status()
        return resp.json()["data"]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def alerts(self) -> dict[str, str]:
        """Active alerts (pending or firing) by name."""
        return {a["labels"]["alertname"]: a["state"] for a in self.get("/api/v1/alerts")["alerts"]}

    def rule_states(self) -> dict[str, str]:
        return {
            r["name"]: r["state"]
            for g in self.get("/api/v1/rules", type="alert")["groups"]
            for r in g["rules"]
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture(scope="module")
def prometheus_binary() -> Path:
    from blooio_operator.devenv.gotools import PROMETHEUS, GoToolError, ensure_tool

    try:
        return ensure_tool(PROMETHEUS)
    except GoToolError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def prometheus_token(kube_api: k8s.ApiClient, tmp_path: Path) -> Iterator[Path]:
    """The shipped metrics-reader role and binding, and a token of the ServiceAccount it
    binds (Prometheus's own, as the ServiceMonitor's bearerTokenFile)."""
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    core = k8s.CoreV1Api(kube_api)
    docs = shipped_docs("metrics-reader.yaml")
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    subject = next(s for s in binding["subjects"] if s["namespace"] != "blooio-system")
    try:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=subject["namespace"])))
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
    for doc in docs:
        create = (
            rbac.create_cluster_role
            if doc["kind"] == "ClusterRole"
            else rbac.create_cluster_role_binding
        )
        create(doc)
    token = tmp_path / "token"
    token.write_text(token_for(kube_api, subject["namespace"], subject["name"]))
    token.chmod(0o600)
    yield token
    rbac.delete_cluster_role_binding(binding["metadata"]["name"])
    rbac.delete_cluster_role(
        next(d for d in docs if d["kind"] == "ClusterRole")["metadata"]["name"]
    )


def test_prometheus_scrapes_with_a_token_and_an_alert_fires_and_resolves(
    prometheus_binary: Path,
    prometheus_token: Path,
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
    start_operator: OperatorFactory,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    port = free_port()
    op = start_operator(BLOOIO_METRICS_AUTH="true", BLOOIO_METRICS_PORT=str(port))
    hooks = Webhooks(kube_api, namespace)
    hooks.create("orders", {"url": "https://orders.shop.example.com/h", "eventTypes": ["*"]})
    hooks.wait_ready("orders")

    work = tmp_path / "prometheus"
    work.mkdir()
    (work / "rules.yml").write_text(yaml.safe_dump(shipped_rules()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yml")],
        "scrape_configs": [scrape_config(f"127.0.0.1:{port}", prometheus_token)],
    }
    prom = Prometheus(prometheus_binary, work, config)
    try:
        wait_for(prom.ready, timeout=60, interval=0.5, message="Prometheus ready")
        (target,) = wait_for(
            lambda: [
                t for t in prom.get("/api/v1/targets")["activeTargets"] if t["health"] == "up"
            ],
            timeout=30,
            interval=0.5,
            message="the operator's target up",
        )
        assert target["labels"]["job"] == "blooio-operator"
        assert len(prom.rule_states()) == 10
        # A scrape with the token reads the per-resource series with their own labels.
        wait_for(
            lambda: prom.get(
                "/api/v1/query",
                query=f'blooio_operator_resource_ready{{job="blooio-operator",'
                f'namespace="{namespace}",name="orders"}} == 1',
            )["result"],
            timeout=30,
            interval=0.5,
            message="orders Ready in Prometheus",
        )
        wait_for(
            lambda: prom.rule_states().get(ALERT) == "inactive",
            timeout=20,
            interval=0.5,
            message=f"{ALERT} inactive before the failure",
        )
        # Before the first scrape nothing is up: BlooioOperatorAbsent may fire (its `for`
        # is cut to 3 s here) and must go back to inactive once the target is up.
        wait_for(
            lambda: not set(prom.alerts()) & set(QUIET),
            timeout=30,
            interval=0.5,
            message=f"no {QUIET} while the operator is scraped",
        )

        # The failure: Blooio no longer accepts the operator's key.
        revoked_at = time.monotonic()
        assert simulator.admin.revoke_api_key(API_KEY)
        wait_for(
            lambda: prom.alerts().get(ALERT) == "firing",
            timeout=90,
            interval=0.5,
            message=f"{ALERT} firing",
        )
        fired = time.monotonic() - revoked_at
        firing = next(
            a for a in prom.get("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == ALERT
        )
        assert firing["labels"]["severity"] == "critical"
        assert firing["annotations"]["runbook_url"].endswith(
            "troubleshooting.md#alert-blooiooperatorcredentialsinvalid"
        )
        assert not set(prom.alerts()) & set(QUIET), prom.alerts()

        # The fix: the key is accepted again (same key, same organisation).
        fixed_at = time.monotonic()
        simulator.admin.add_api_key(API_KEY)
        wait_for(
            lambda: ALERT not in prom.alerts() and prom.rule_states().get(ALERT) == "inactive",
            timeout=120,
            interval=0.5,
            message=f"{ALERT} back to inactive",
        )
        resolved = time.monotonic() - fixed_at
        hooks.wait_ready("orders")
        print(
            f"{ALERT}: firing {fired:.1f} s after the revocation, inactive {resolved:.1f} s "
            f"after the fix; whole test {time.monotonic() - started:.1f} s"
        )
    finally:
        prom.stop()
        log = prom.log.read_text(errors="replace")
        print(f"--- prometheus log (tail) ---\n{log[-3000:]}")
        assert prometheus_token.read_text() not in op.logs()
    shutil.rmtree(work / "data", ignore_errors=True)
