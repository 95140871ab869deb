"""deploy/monitoring/ applied to the real API server, with the prometheus-operator CRDs
installed from the source of the github.com/prometheus-operator/prometheus-operator Go
module (example/prometheus-operator-crd/, the same files the project ships), validated
strictly (an unknown or misspelt field is an error, not silently pruned).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.helpers import wait_for
from tests.integration.conftest import KubectlFn

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0")
CRDS = ("servicemonitors", "podmonitors", "prometheusrules")


@pytest.fixture(scope="module")
def monitoring_crds(kubectl: KubectlFn, kube_api: k8s.ApiClient) -> None:
    from blooio_operator.devenv.gotools import GoToolError, module_source

    try:
        source = module_source(*PROMETHEUS_OPERATOR) / "example" / "prometheus-operator-crd"
    except GoToolError as exc:
        pytest.skip(str(exc))
    ext = k8s.ApiextensionsV1Api(kube_api)
    for plural in CRDS:
        path = source / f"monitoring.coreos.com_{plural}.yaml"
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))

        def established(name: str = f"{plural}.monitoring.coreos.com") -> bool:
            conds = ext.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        wait_for(established, timeout=60, message=f"{plural} CRD Established")
    core = k8s.CoreV1Api(kube_api)
    try:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="blooio-system")))
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise


def test_monitoring_objects_apply_to_the_real_api_server(
    monitoring_crds: None, kubectl: KubectlFn
) -> None:
    files = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())["resources"]
    applied: list[tuple[str, str]] = []
    try:
        for name in files:
            path = MONITORING / name
            out = kubectl("apply", "--validate=strict", "-f", str(path), timeout=120)
            assert "Warning" not in out.stderr, out.stderr
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    applied.append((doc["kind"], doc["metadata"]["name"]))
        # What the API server kept is what was written (no field pruned by the schema).
        for kind, name in (
            ("servicemonitor", "blooio-operator"),
            ("podmonitor", "blooio-operator"),
        ):
            got = yaml.safe_load(
                kubectl("-n", "blooio-system", "get", kind, name, "-o", "yaml").stdout
            )
            path = MONITORING / f"{kind}.yaml"
            (want,) = [
                d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"].lower() == kind
            ]
            assert got["spec"] == want["spec"]
        rule = yaml.safe_load(
            kubectl(
                "-n", "blooio-system", "get", "prometheusrule", "blooio-operator", "-o", "yaml"
            ).stdout
        )
        assert len(rule["spec"]["groups"][0]["rules"]) == 10
        bad = kubectl(
            "apply",
            "--validate=strict",
            "-f",
            "-",
            check=False,
            input=yaml.safe_dump(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "ServiceMonitor",
                    "metadata": {"name": "typo", "namespace": "blooio-system"},
                    "spec": {"selector": {}, "endpoints": [{"prot": "metrics"}]},
                }
            ),
        )
        assert bad.returncode != 0, "strict validation is not on"
        assert "prot" in bad.stderr
    finally:
        for name in files:
            kubectl("delete", "--ignore-not-found", "-f", str(MONITORING / name), check=False)
    assert ("ServiceMonitor", "blooio-operator") in applied
    assert ("PodMonitor", "blooio-operator") in applied
