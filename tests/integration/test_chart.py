"""The Helm chart with the real helm (built once from the module proxy, devenv/gotools.py)
and the real API server: lint, the drift test against deploy/ (kustomize), the values
schema, server-side dry runs of several value sets, and the tenants' RBAC.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from blooio_operator.devenv.controlplane import ControlPlane, ensure_binary
from blooio_operator.devenv.gotools import HELM, ensure_tool
from blooio_operator.settings import Settings
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "chart" / "blooio-operator"
DEPLOY = ROOT / "deploy"
NAMESPACED = DEPLOY / "variants" / "namespaced"
RELEASE = "blooio-operator"
NS = "blooio-system"

Docs = list[dict[str, Any]]


@pytest.fixture(scope="module")
def helm() -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = ensure_tool(HELM)  # cold: `go install` from the module proxy, a few minutes

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(binary), *args], capture_output=True, text=True, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {out.stderr}")
        return out

    return run


def template(helm: Any, *args: str, namespace: str = NS, release: str = RELEASE) -> Docs:
    out = helm("template", release, str(CHART), "--namespace", namespace, *args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kustomize(path: Path) -> Docs:
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def key(d: dict[str, Any]) -> tuple[str, str, str]:
    return (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])


# What the chart adds on purpose: Helm's labels (also in selectors, so two releases never
# select each other's pods) and the CRD's keep policy. The Namespace object is kustomize's
# only: Helm installs into a namespace it does not own (--create-namespace).
HELM_ONLY_KEYS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
    "helm.sh/resource-policy",
}


def without_helm_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_helm_keys(v) for k, v in node.items() if k not in HELM_ONLY_KEYS}
    if isinstance(node, list):
        return [without_helm_keys(v) for v in node]
    return node


def differences(chart: Docs, kustomized: Docs) -> list[str]:
    c = {key(d): without_helm_keys(d) for d in chart}
    k = {key(d): d for d in kustomized if d["kind"] != "Namespace"}
    out = [f"only in the chart: {x}" for x in sorted(set(c) - set(k))]
    out += [f"only in deploy/: {x}" for x in sorted(set(k) - set(c))]
    for x in sorted(set(c) & set(k)):
        if c[x] != k[x]:
            chart_side, deploy_side = (json.dumps(v[x], sort_keys=True) for v in (c, k))
            out.append(f"{x} differs:\n{chart_side}\n{deploy_side}")
    return out


# --- lint and the drift test -------------------------------------------------------------


def test_helm_lint_strict(helm: Any, tmp_path: Path) -> None:
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout
    # The other value sets of this module lint too.
    for name, values in VALUE_SETS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(substitute(values, {"@A@": "team-a", "@B@": "team-b"})))
        helm("lint", "--strict", str(CHART), "--values", str(path))


def test_default_render_is_deploy(helm: Any) -> None:
    """`helm template` with the defaults is `kubectl kustomize deploy/`, object for object."""
    chart = template(helm)
    assert differences(chart, kustomize(DEPLOY)) == []
    # ... and what it adds is exactly Helm's labels and the CRD's keep policy.
    (crd,) = [d for d in chart if d["kind"] == "CustomResourceDefinition"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for d in chart:
        assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", key(d)


def test_namespaced_render_is_the_namespaced_variant(helm: Any) -> None:
    chart = template(helm, "--set", "watch.namespaces={team-a,team-b}")
    assert differences(chart, kustomize(NAMESPACED)) == []


MONITORING_ON = (
    "monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true,"
    "monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true"
)


def test_monitoring_render_is_the_component(helm: Any, tmp_path: Path) -> None:
    """Every monitoring toggle on: deploy/ with the deploy/monitoring component."""
    if not (DEPLOY / "monitoring" / "kustomization.yaml").is_file():
        pytest.skip("no deploy/monitoring")
    rel = os.path.relpath(DEPLOY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [rel],
                "components": [f"{rel}/monitoring"],
            }
        )
    )
    chart = template(helm, "--set", MONITORING_ON)
    assert differences(chart, kustomize(tmp_path)) == []
    kinds = {d["kind"] for d in chart}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    # Each toggle alone brings its own objects only.
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & {
        d["kind"] for d in template(helm)
    }


def test_a_changed_manifest_is_a_difference(helm: Any) -> None:
    """The comparison sees a one-field change (it could not pass by comparing nothing)."""
    kustomized = kustomize(DEPLOY)
    (dep,) = [d for d in kustomized if d["kind"] == "Deployment"]
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 61
    (diff,) = differences(template(helm), kustomized)
    assert diff.startswith("('Deployment', 'blooio-system', 'blooio-operator') differs")


# --- the values schema -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replica=3"], "additional properties 'replica' not allowed"),
        (["--set", "config.logformat=json"], "additional properties 'logformat' not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set-string", "replicas=two"], "replicas"),
        (["--set-string", "crds.keep=yes"], "keep"),
        (["--set", "config.maxWorkers=0"], "maxWorkers"),
        (["--set", "watch.namespaces={team-*}"], "namespaces"),
    ],
    ids=["unknown-key", "unknown-nested-key", "enum", "int-type", "bool-type", "bound", "glob"],
)
def test_values_schema_rejects(helm: Any, args: list[str], message: str) -> None:
    out = helm("template", RELEASE, str(CHART), *args, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


# --- value sets, each accepted by the real API server --------------------------------------

NON_DEFAULT_CONFIG = {
    "apiUrl": "https://blooio.example.com/v4",
    "defaultKeyNamespaces": "platform-*",
    "credentialsRequireLabel": False,
    "logFormat": "text",
    "logLevel": "DEBUG",
    "httpTimeoutSeconds": 20,
    "maxWorkers": 80,
    "workerIdleSeconds": 0.5,
    "driftIntervalSeconds": 900,
    "replayWindowSeconds": 0,
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "single-replica-no-election": {
        "replicas": 1,
        "leaderElection": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "networkPolicy": {"enabled": False},
    },
    "namespaced-with-key": {
        "watch": {"namespaces": ["@A@", "@B@"], "selector": "blooio.com/shard in (a,b)"},
        "credentials": {"apiKey": "bl_live_chart_test_key"},
        "leaderElection": {"leaseName": "blooio-operator-a", "leaseDurationSeconds": 20},
        "crds": {"install": False},
        "rbac": {"tenantRoles": False},
    },
    "scheduling-and-config": {
        "image": {"digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "resources": {"requests": {"cpu": "200m", "memory": "192Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
        ],
        "affinity": None,  # Helm merges maps: null drops the default anti-affinity
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "blooio-operator"}},
            }
        ],
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/owner": "platform"},
        "podLabels": {"team": "platform"},
        "podDisruptionBudget": {"minAvailable": "50%"},
        "networkPolicy": {
            "extraEgress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 6443}]}
            ]
        },
        "rbac": {"aggregateToEdit": True, "aggregateToAdmin": True},
        "crds": {"keep": False},
        "claimKey": {"existingSecret": "blooio-claim-key"},
        "metrics": {"port": 9191},
        "health": {"port": 8181},
        "config": NON_DEFAULT_CONFIG,
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}],
    },
}


def substitute(values: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    text = json.dumps(values)
    for k, v in mapping.items():
        text = text.replace(k, v)
    out: dict[str, Any] = json.loads(text)
    return out


def env_of(docs: Docs) -> dict[str, str]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in c["env"]}


@pytest.fixture
def extra_namespaces(kube_api: k8s.ApiClient, namespace: str) -> Iterator[list[str]]:
    core = k8s.CoreV1Api(kube_api)
    names = [f"{namespace}-a", f"{namespace}-b"]
    for n in names:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=n)))
    yield names
    for n in names:
        with contextlib.suppress(k8s.ApiException):
            core.delete_namespace(n)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_value_set_is_accepted_by_the_api_server(
    helm: Any,
    crd: str,
    kubectl: Any,
    namespace: str,
    extra_namespaces: list[str],
    tmp_path: Path,
    name: str,
) -> None:
    values = substitute(VALUE_SETS[name], {"@A@": extra_namespaces[0], "@B@": extra_namespaces[1]})
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    # A release name of its own: the cluster-scoped objects' names do not meet the
    # shipped install's (a dry run creates nothing anyway).
    release = f"bwh-{namespace}"
    docs = template(helm, "--values", str(path), namespace=namespace, release=release)
    rendered = yaml.safe_dump_all(docs)
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert out.returncode == 0, out.stderr
    applied = [ln for ln in out.stdout.splitlines() if "(server dry run)" in ln]
    assert len(applied) == len(docs), out.stdout
    # The environment the chart sets is what the operator accepts, and means the values.
    env = env_of(docs)
    settings = Settings.model_validate(
        {k.removeprefix("BLOOIO_").lower(): v for k, v in env.items() if k.startswith("BLOOIO_")}
        | {"api_key": "x"}
    )
    for k, v in values.get("config", {}).items():
        field = next(f for f in Settings.model_fields if f.replace("_", "") == k.lower())
        assert getattr(settings, field) == v, k
    kinds = sorted(d["kind"] for d in docs)
    if name == "namespaced-with-key":
        assert "ClusterRole" not in kinds
        assert "ClusterRoleBinding" not in kinds
        assert "CustomResourceDefinition" not in kinds
        assert sorted(d["metadata"]["namespace"] for d in docs if d["kind"] == "Role") == sorted(
            [*extra_namespaces, namespace]  # the served two and the Lease's Role
        )
        (secret,) = [d for d in docs if d["kind"] == "Secret"]
        assert secret["metadata"]["name"] == f"{release}-blooio-operator-credentials"
        assert env["BLOOIO_LEADER_ELECTION_LEASE_NAME"] == "blooio-operator-a"
        (dep,) = [d for d in docs if d["kind"] == "Deployment"]
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--selector=blooio.com/shard in (a,b)" in args
        assert "--all-namespaces" not in args
    if name == "single-replica-no-election":
        assert "PodDisruptionBudget" not in kinds
        assert "NetworkPolicy" not in kinds
        assert not [d for d in docs if d["kind"] == "Role"]  # no Lease Role either
        (dep,) = [d for d in docs if d["kind"] == "Deployment"]
        assert "--leader-elect" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    if name == "scheduling-and-config":
        (crd_doc,) = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
        assert "helm.sh/resource-policy" not in crd_doc["metadata"].get("annotations", {})
        roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
        edit = roles[f"{release}-blooio-operator-edit"]["metadata"]["labels"]
        assert edit["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
        assert edit["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
        (dep,) = [d for d in docs if d["kind"] == "Deployment"]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("a" * 64)
        assert "affinity" not in dep["spec"]["template"]["spec"]
        assert env["HTTPS_PROXY"] == "http://proxy.example.com:3128"


# --- the tenants' RBAC on a real API server -----------------------------------------------

AGGREGATING_CONTROLLERS = (
    "garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller"
)


@pytest.fixture(scope="module")
def rbac_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own that runs the clusterrole-aggregation controller.

    The session's control plane runs only the garbage-collector and namespace controllers,
    so the built-in `edit`/`view`/`admin` (aggregationRule only, no rules of their own)
    grant nothing there: filling them in is kube-controller-manager's
    clusterrole-aggregation controller's job.
    """
    cp = ControlPlane(
        tmp_path_factory.mktemp("rbac-plane"),
        binary=ensure_binary(),
        extra_args=["--controllers", AGGREGATING_CONTROLLERS],
    )
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def status_of(call: Callable[[], object]) -> int:
    try:
        call()
    except k8s.ApiException as exc:
        return int(exc.status)
    return 200


def as_user(plane: ControlPlane, user: str) -> k8s.ApiClient:
    api = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))
    api.set_default_header("Impersonate-User", user)
    return api


def bwh(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"name": name},
        "spec": {"url": f"https://{name}.example.com/blooio"},
    }


def apply(plane: ControlPlane, docs: Docs) -> None:
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(plane.kubeconfig), "apply", "-f", "-"],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_tenant_rbac_through_the_builtin_roles(helm: Any, rbac_plane: ControlPlane) -> None:
    admin = k8s_config.new_client_from_config(config_file=str(rbac_plane.kubeconfig))
    core = k8s.CoreV1Api(admin)
    rbac = k8s.RbacAuthorizationV1Api(admin)
    crd_docs = [
        d
        for d in yaml.safe_load_all(
            (DEPLOY / "crds" / "blooio.com_blooiowebhooks.yaml").read_text()
        )
        if d
    ]
    apply(rbac_plane, crd_docs)
    x, y = "tenant-x", "tenant-y"
    for ns in (x, y):
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
    # alice holds only the built-in `edit` in X, bob only `view` in X.
    for user, role in (("alice", "edit"), ("bob", "view")):
        rbac.create_namespaced_role_binding(
            x,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{user}-{role}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            },
        )
    alice = k8s.CustomObjectsApi(as_user(rbac_plane, "alice"))
    bob = k8s.CustomObjectsApi(as_user(rbac_plane, "bob"))
    args = ("blooio.com", "v1alpha1")
    plural = "blooiowebhooks"

    def tenant_roles(*flags: str) -> Docs:
        docs = template(helm, "--show-only", "templates/gen-tenant-rbac.yaml", *flags)
        assert sorted(d["metadata"]["name"] for d in docs) == [
            "blooio-operator-edit",
            "blooio-operator-view",
        ]
        return docs

    # Chart defaults: the view role only (aggregated to view, and to edit and admin, which
    # include view's rights). bob and alice read; neither writes.
    apply(rbac_plane, tenant_roles())
    wait_for(
        lambda: status_of(lambda: bob.list_namespaced_custom_object(*args, x, plural)) == 200,
        timeout=30,
        message="view aggregated (bob may list BlooioWebhooks in X)",
    )
    assert status_of(lambda: bob.create_namespaced_custom_object(*args, x, plural, bwh("b"))) == 403
    assert status_of(lambda: bob.list_namespaced_custom_object(*args, y, plural)) == 403
    assert status_of(lambda: alice.list_namespaced_custom_object(*args, x, plural)) == 200
    assert (
        status_of(lambda: alice.create_namespaced_custom_object(*args, x, plural, bwh("a"))) == 403
    )

    # rbac.aggregateToEdit=true: alice, with nothing but `edit` in X, manages them there.
    apply(rbac_plane, tenant_roles("--set", "rbac.aggregateToEdit=true"))
    wait_for(
        lambda: (
            status_of(
                lambda: alice.create_namespaced_custom_object(*args, x, plural, bwh("orders"))
            )
            == 201
            or status_of(lambda: alice.get_namespaced_custom_object(*args, x, plural, "orders"))
            == 200
        ),
        timeout=30,
        message="edit aggregated (alice may create BlooioWebhooks in X)",
    )
    obj = alice.get_namespaced_custom_object(*args, x, plural, "orders")
    alice.patch_namespaced_custom_object(
        *args, x, plural, "orders", {"spec": {"eventTypes": ["message.received"]}}
    )
    obj = alice.get_namespaced_custom_object(*args, x, plural, "orders")
    assert obj["spec"]["eventTypes"] == ["message.received"]
    obj["spec"]["suspend"] = True
    alice.replace_namespaced_custom_object(*args, x, plural, "orders", obj)
    assert len(alice.list_namespaced_custom_object(*args, x, plural)["items"]) == 1
    # Not the status (the operator's record of what it did at Blooio), in any way.
    forged = {"status": {"webhookId": "wh_forged"}}
    assert (
        status_of(
            lambda: alice.patch_namespaced_custom_object_status(*args, x, plural, "orders", forged)
        )
        == 403
    )
    current = alice.get_namespaced_custom_object(*args, x, plural, "orders")
    assert (
        status_of(
            lambda: alice.replace_namespaced_custom_object_status(
                *args, x, plural, "orders", {**current, **forged}
            )
        )
        == 403
    )
    # Nothing in Y: neither list, read nor create.
    assert status_of(lambda: alice.list_namespaced_custom_object(*args, y, plural)) == 403
    admin_custom = k8s.CustomObjectsApi(admin)
    admin_custom.create_namespaced_custom_object(*args, y, plural, bwh("theirs"))
    assert status_of(lambda: alice.get_namespaced_custom_object(*args, y, plural, "theirs")) == 403
    assert (
        status_of(lambda: alice.create_namespaced_custom_object(*args, y, plural, bwh("mine")))
        == 403
    )
    assert status_of(lambda: alice.list_cluster_custom_object(*args, plural)) == 403
    # Delete in X works (no finalizer here: no operator runs on this control plane).
    alice.delete_namespaced_custom_object(*args, x, plural, "orders")
    assert alice.list_namespaced_custom_object(*args, x, plural)["items"] == []
    # And the built-in edit role itself holds the rules, aggregated, not bound directly.
    edit = rbac.read_cluster_role("edit")
    assert any(
        "blooiowebhooks" in (r.resources or []) and "create" in r.verbs for r in edit.rules or []
    )
    assert not any("blooiowebhooks/status" in (r.resources or []) for r in edit.rules or [])
