"""The shipped monitoring objects (deploy/monitoring/), checked with the real promtool.

- The PrometheusRule's groups pass ``promtool check rules`` and the unit tests of
  tests/monitoring/rules_test.yaml (``promtool test rules``), which hold, for every
  alert, a case where it fires and one where it does not.
- Every alert links a runbook that exists in docs/troubleshooting.md.
- Every dashboard query parses (wrapped into recording rules for ``promtool check
  rules``) and names only metrics the operator exports.
- The component builds with kustomize on top of deploy/.

promtool is built once from the module proxy (operator/devenv/gotools.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from blooio_operator.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES_TEST = ROOT / "tests" / "monitoring" / "rules_test.yaml"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
RUNBOOKS = "https://github.com/blooio-operator/blooio-operator/blob/main/docs/troubleshooting.md#"


@pytest.fixture(scope="module")
def promtool() -> Path:
    from blooio_operator.devenv.gotools import PROMTOOL, GoToolError, ensure_tool

    try:
        return ensure_tool(PROMTOOL)
    except GoToolError as exc:  # no Go on this machine
        pytest.skip(str(exc))


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MONITORING / name).read_text()) if d]


def rule_groups() -> list[dict[str, Any]]:
    (rule,) = load("prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}


def run(cmd: list[str], cwd: Path) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_rules_check_and_unit_tests(promtool: Path, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yaml")
    out = run([str(promtool), "check", "rules", "rules.yaml"], tmp_path)
    assert f"SUCCESS: {len(alerts())} rules found" in out
    out = run([str(promtool), "test", "rules", "rules_test.yaml"], tmp_path)
    assert "SUCCESS" in out


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in test["alert_rule_test"]:
            cases.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    assert set(cases) == set(alerts())
    for name, seen in cases.items():
        assert seen == {True, False}, f"{name}: needs a firing and a not-firing case"


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_every_alert_has_a_runbook_in_troubleshooting() -> None:
    headings = {
        github_anchor(line.lstrip("#"))
        for line in TROUBLESHOOTING.read_text().splitlines()
        if line.startswith("#")
    }
    for name, rule in alerts().items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOKS), url
        anchor = url.removeprefix(RUNBOOKS)
        assert anchor in headings, f"{name}: no heading for #{anchor} in troubleshooting.md"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert 'job="blooio-operator"' in rule["expr"]


def dashboard() -> dict[str, Any]:
    (cm,) = load("dashboard-configmap.yaml")
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    board: dict[str, Any] = json.loads(text)
    return board


def panel_queries() -> list[tuple[str, str]]:
    return [
        (f"{p['title']} {t['refId']}", t["expr"])
        for p in dashboard()["panels"]
        for t in p.get("targets", [])
    ]


def exported_names() -> set[str]:
    """Every sample name the operator's registry exports (all families touched)."""
    m = Metrics(readiness=True, delivery_detail=True)
    m.track("u", "ns", "n", "Ready")
    m.observe_deliveries("u", "ns", "n", {"delivered": 1}, 1.0, "True")
    m.observe_request("GET /webhooks", "200", 0.1)
    m.reconciles.labels("create", "success").inc()
    m.reconcile_duration.labels("create").observe(0.1)
    m.rotations.labels("annotation").inc()
    m.drift.labels("patched").inc()
    m.replays.labels("rotation", "posted").inc()
    m.replays_given_up.labels("rotation").inc()
    text = generate_latest(m.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_dashboard_covers_what_the_issue_asks() -> None:
    exprs = " ".join(e for _, e in panel_queries())
    for metric in (
        "blooio_operator_resources",
        "blooio_operator_resource_ready",
        "blooio_operator_reconciles_total",
        "blooio_operator_blooio_request_duration_seconds_bucket",
        "blooio_operator_blooio_requests_total",
        "blooio_operator_resources_deliveries_healthy",
        "blooio_operator_secret_rotations_total",
        "blooio_operator_delivery_replays_total",
    ):
        assert metric + "{" in exprs, metric


def test_dashboard_queries_parse_and_name_only_exported_metrics(
    promtool: Path, tmp_path: Path
) -> None:
    exported = exported_names() | {"up"}  # up: Prometheus's own, per target
    rules = []
    for i, (where, expr) in enumerate(panel_queries()):
        # Grafana's variables, as Grafana substitutes them.
        promql = expr.replace("$__rate_interval", "2m").replace("$__range", "6h")
        assert "$" not in promql, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": promql})
        for name in re.findall(r"\b([a-z_:][a-z0-9_:]*)\s*\{", promql):
            assert name in exported, f"{where}: {name} is not a metric the operator exports"
        # Every metric is selected with the job label, so a name without one is a typo.
        bare = re.findall(r"\b(blooio_[a-z0-9_]+)\b(?!\s*\{)", promql)
        assert not bare, f"{where}: {bare}"
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    out = run([str(promtool), "check", "rules", "dashboard.yaml"], tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_component_builds_on_top_of_deploy(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    # kustomize wants paths inside the kustomization's root: link them in.
    (tmp_path / "manifests").symlink_to(ROOT / "deploy" / "manifests")
    (tmp_path / "monitoring").symlink_to(MONITORING)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [manifests]\ncomponents: [monitoring]\n"
    )
    out = run([kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", "."], tmp_path)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d}
    assert {
        ("ServiceMonitor", "blooio-operator"),
        ("PodMonitor", "blooio-operator"),
        ("PrometheusRule", "blooio-operator"),
        ("ConfigMap", "blooio-operator-dashboard"),
        ("ClusterRole", "blooio-operator-metrics-reader"),
        ("ClusterRoleBinding", "blooio-operator-metrics-reader"),
        ("Deployment", "blooio-operator"),
    } <= kinds


def test_monitors_select_the_shipped_service_and_pods() -> None:
    manifests = ROOT / "deploy" / "manifests"
    (svc,) = [d for d in yaml.safe_load_all((manifests / "service.yaml").read_text()) if d]
    (deploy,) = [d for d in yaml.safe_load_all((manifests / "deployment.yaml").read_text()) if d]
    pod = deploy["spec"]["template"]
    (sm,) = load("servicemonitor.yaml")
    pm = next(d for d in load("podmonitor.yaml") if d["kind"] == "PodMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in ports
    for endpoint in (sm["spec"]["endpoints"][0], pm["spec"]["podMetricsEndpoints"][0]):
        assert endpoint["honorLabels"] is True  # the resources' own namespace label
        assert {"action": "replace", "targetLabel": "job", "replacement": "blooio-operator"} in (
            endpoint["relabelings"]
        )
    assert sm["spec"]["endpoints"][0]["bearerTokenFile"].endswith("serviceaccount/token")
    token = pm["spec"]["podMetricsEndpoints"][0]["authorization"]["credentials"]["name"]
    secret = next(d for d in load("podmonitor.yaml") if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == token
    reader = load("metrics-reader.yaml")
    role = next(d for d in reader if d["kind"] == "ClusterRole")
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = next(d for d in reader if d["kind"] == "ClusterRoleBinding")
    sa = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    assert {"kind": "ServiceAccount", "name": sa, "namespace": "blooio-system"} in binding[
        "subjects"
    ]
