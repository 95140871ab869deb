"""Static checks of everything shipped under deploy/ and examples/.

The API server has the last word (tests/integration/test_crd.py and test_deploy.py);
these checks catch the same mistakes in milliseconds and without a control plane.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CRD_FILE = DEPLOY / "crds" / "blooio.com_blooiowebhooks.yaml"
MANIFESTS = DEPLOY / "manifests"
NAMESPACED = DEPLOY / "variants" / "namespaced"
EXAMPLES = ROOT / "examples"

OPERATOR_IMAGE = "ghcr.io/blooio-operator/blooio-operator:0.2.0"


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def crd() -> dict[str, Any]:
    (doc,) = load_all(CRD_FILE)
    return dict(doc)


def version() -> dict[str, Any]:
    (v,) = crd()["spec"]["versions"]
    return v


def schema() -> dict[str, Any]:
    s: dict[str, Any] = version()["schema"]["openAPIV3Schema"]
    return s


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its dotted path (items appear as `path[]`)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def to_jsonschema(node: Any) -> Any:
    """The CRD schema as plain JSON Schema: drop the Kubernetes extensions, which
    jsonschema ignores anyway, and forbid unknown properties as the apiserver does."""
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if (
        node.get("type") == "object"
        and "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate(obj: dict[str, Any]) -> None:
    s = to_jsonschema(schema())
    s["properties"]["metadata"] = {"type": "object"}
    jsonschema.validate(obj, s, format_checker=jsonschema.FormatChecker())


def bwh(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"url": "https://orders.shop.example.com/blooio", **spec},
    }


# --- the CRD ---------------------------------------------------------------------------


def test_crd_names_and_scope() -> None:
    doc = crd()
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == "blooiowebhooks.blooio.com"
    spec = doc["spec"]
    assert spec["group"] == "blooio.com"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "BlooioWebhook",
        "listKind": "BlooioWebhookList",
        "plural": "blooiowebhooks",
        "singular": "blooiowebhook",
        "shortNames": ["bwh"],
        "categories": ["blooio"],
    }
    v = version()
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}


def test_crd_is_structural() -> None:
    """Every node has a type (or is the open status.kopf), nothing else preserves
    unknown fields, so the apiserver prunes/rejects unknown fields everywhere else."""
    open_nodes = []
    for path, node in walk(schema()):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            open_nodes.append(path)
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not node.get("x-kubernetes-int-or-string"), path
    assert open_nodes == ["status.kopf"]


def test_every_field_has_a_description() -> None:
    missing = [
        path
        for path, node in walk(schema())
        if path not in ("metadata",) and not path.endswith("{}") and not node.get("description")
    ]
    assert missing == []


def test_spec_required_fields_defaults_and_enums() -> None:
    spec = schema()["properties"]["spec"]
    props = spec["properties"]
    assert spec["required"] == ["url"]
    assert set(props) == {
        "url",
        "eventTypes",
        "channelId",
        "channelType",
        "credentialsRef",
        "secret",
        "suspend",
        "deletionPolicy",
    }
    assert props["url"]["maxLength"] == 2048
    assert any("https://" in r["rule"] for r in props["url"]["x-kubernetes-validations"])
    assert props["eventTypes"]["default"] == ["*"]
    assert props["eventTypes"]["x-kubernetes-list-type"] == "set"
    assert props["suspend"]["default"] is False
    assert props["deletionPolicy"]["default"] == "Delete"
    assert props["deletionPolicy"]["enum"] == ["Delete", "Orphan", "Disable"]
    assert props["credentialsRef"]["required"] == ["name"]
    assert props["credentialsRef"]["properties"]["key"]["default"] == "api-key"


def test_channel_type_enum_matches_the_openapi_file() -> None:
    openapi = ROOT.parent / "shared" / "reference" / "blooio-v4-webhooks.openapi.json"
    if not openapi.exists():
        pytest.skip("../shared/reference is not present")
    enum = json.loads(openapi.read_text())["components"]["schemas"]["ChannelType"]["enum"]
    assert schema()["properties"]["spec"]["properties"]["channelType"]["enum"] == enum


def test_status_schema() -> None:
    status = schema()["properties"]["status"]["properties"]
    assert {
        "observedGeneration",
        "webhookId",
        "remoteStatus",
        "secretName",
        "createdAt",
        "lastSyncedAt",
        "secretRotatedAt",
        "conditions",
        "kopf",
    } <= set(status)
    assert status["observedGeneration"]["format"] == "int64"
    assert status["remoteStatus"]["enum"] == ["active", "disabled"]
    cond = status["conditions"]
    assert cond["x-kubernetes-list-type"] == "map"
    assert cond["x-kubernetes-list-map-keys"] == ["type"]
    assert set(cond["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert cond["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_printer_columns() -> None:
    cols = {c["name"]: c for c in version()["additionalPrinterColumns"]}
    assert cols["Webhook"]["jsonPath"] == ".status.webhookId"
    assert cols["URL"]["jsonPath"] == ".spec.url"
    assert cols["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert cols["Remote"]["jsonPath"] == ".status.remoteStatus"
    assert cols["Secret"]["jsonPath"] == ".status.secretName"
    assert cols["Age"]["jsonPath"] == ".metadata.creationTimestamp"


EVENT_TOKEN = re.compile(
    schema()["properties"]["spec"]["properties"]["eventTypes"]["items"]["pattern"]
)


@pytest.mark.parametrize(
    "token",
    [
        "*",
        "all",
        "message",
        "status",
        "message.received",
        "message.*",
        "poll.*",
        "group.icon_changed",
    ],
)
def test_event_token_pattern_accepts(token: str) -> None:
    assert EVENT_TOKEN.search(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "Message..",
        "message.",
        ".received",
        "message.Received",
        "message..received",
        "**",
        "a.b.c",
    ],
)
def test_event_token_pattern_rejects(token: str) -> None:
    assert not EVENT_TOKEN.search(token)


def test_example_resource_is_valid() -> None:
    validate(bwh())
    validate(
        bwh(
            eventTypes=["message.received", "poll.*"],
            channelId="ch_a1b2c3d4",
            channelType="blooio",
            credentialsRef={"name": "blooio-api-key", "key": "api-key"},
            secret={"name": "orders-blooio-webhook", "labels": {}, "annotations": {"a": "b"}},
            suspend=False,
            deletionPolicy="Orphan",
        )
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"url": "x" * 3000},
        {"eventTypes": "message.received"},
        {"eventTypes": ["message."]},
        {"eventTypes": []},
        {"channelId": "chan_1"},
        {"channelType": "amb"},
        {"credentialsRef": {"key": "api-key"}},
        {"secret": {"name": "Bad_Name"}},
        {"suspend": "yes"},
        {"deletionPolicy": "delete"},
        {"bogus": 1},
    ],
)
def test_invalid_specs_are_rejected_by_the_schema(spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(bwh(**spec))


def test_crd_kustomization() -> None:
    (k,) = load_all(DEPLOY / "crds" / "kustomization.yaml")
    assert k["resources"] == [CRD_FILE.name]


def test_crd_kustomize_build() -> None:
    (doc,) = kustomize(DEPLOY / "crds")
    assert doc == crd()


# --- deploy/manifests ------------------------------------------------------------------


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = by_kind(docs, kind)
    return doc


TENANT_ROLES = ("blooio-operator-view", "blooio-operator-edit")


def operator_cluster_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's ClusterRole (the tenants' ClusterRoles are tested in test_chart.py)."""
    (doc,) = [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] not in TENANT_ROLES]
    return doc


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(load_all(path))
    return docs


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }


# Trimmed (issue 12): no update verbs (the operator only patches), no events.k8s.io, no
# event patches, no namespaces (only --namespace globs would need them).
NAMESPACED_RULES = {
    *{("blooio.com", "blooiowebhooks", v) for v in ("get", "list", "watch", "patch")},
    *{("blooio.com", "blooiowebhooks/status", v) for v in ("get", "patch")},
    *{("", "secrets", v) for v in ("get", "create", "patch", "delete")},
    ("", "events", "create"),
}
CLUSTER_ONLY_RULES = {
    *{("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")},
    # /metrics: the scraper's token checked against the API server (issue 22).
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
}


def test_kustomizations_build() -> None:
    full = kustomize(DEPLOY)
    kinds = sorted(d["kind"] for d in full)
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            # The tenants' roles, aggregated to view (and, when labelled, edit/admin).
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "NetworkPolicy",
        ]
    )
    assert {d["metadata"].get("namespace") for d in full if d["kind"] not in CLUSTER_KINDS} == {
        "blooio-system"
    }


CLUSTER_KINDS = {"CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding"}


def test_cluster_role_is_exactly_least_privilege() -> None:
    role = operator_cluster_role(manifests())
    assert role["metadata"]["name"] == "blooio-operator"
    assert rule_set(role["rules"]) == NAMESPACED_RULES | CLUSTER_ONLY_RULES
    for r in role["rules"]:
        assert "*" not in r["apiGroups"] + r["resources"] + r["verbs"]
        assert "resourceNames" not in r


LEASE_RULES = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}


def leader_election_rbac(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (role,) = [d for d in by_kind(docs, "Role") if d["metadata"]["name"].endswith("-election")]
    (binding,) = [
        d for d in by_kind(docs, "RoleBinding") if d["metadata"]["name"].endswith("-election")
    ]
    return role, binding


def test_leases_only_in_the_operators_namespace() -> None:
    docs = manifests()
    role, binding = leader_election_rbac(docs)
    assert role["metadata"] == {
        "name": "blooio-operator-leader-election",
        "namespace": "blooio-system",
        "labels": role["metadata"]["labels"],
    }
    assert rule_set(role["rules"]) == LEASE_RULES
    assert binding["metadata"]["namespace"] == "blooio-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "blooio-operator-leader-election",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "blooio-operator", "namespace": "blooio-system"}
    ]
    # No Lease right anywhere else (the ClusterRole has none).
    cluster = rule_set(operator_cluster_role(docs)["rules"])
    assert not {r for r in cluster if r[0] == "coordination.k8s.io"}


def test_no_secret_list_or_watch_anywhere() -> None:
    for doc in manifests() + load_all(NAMESPACED / "rbac.yaml"):
        for group, resource, verb in rule_set(doc.get("rules", [])):
            if (group, resource) == ("", "secrets"):
                assert verb not in ("list", "watch", "*")


def test_cluster_role_binding_binds_the_service_account() -> None:
    docs = manifests()
    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "blooio-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "blooio-operator", "namespace": "blooio-system"}
    ]
    assert (sa["metadata"]["name"], sa["metadata"]["namespace"]) == (
        "blooio-operator",
        "blooio-system",
    )


def deployment() -> dict[str, Any]:
    return one(manifests(), "Deployment")


def test_deployment_shape() -> None:
    dep = deployment()
    spec = dep["spec"]
    # Two replicas with leader election (issue 20): a rollout starts the new pod before
    # stopping an old one, so there is always a leader or a standby to take over.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "blooio-operator"
    (c,) = pod["containers"]
    assert c["image"] == OPERATOR_IMAGE
    assert c["args"][:2] == ["run", "--all-namespaces"]
    assert {"--metrics-port=9090", "--health-port=8080", "--leader-elect"} <= set(c["args"])
    env = {e["name"]: e for e in c["env"]}
    # The Lease's namespace and the holder identity come from the downward API.
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["BLOOIO_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "blooio-credentials",
        "key": "api-key",
        "optional": False,
    }
    assert env["BLOOIO_API_URL"]["value"] == "https://api.blooio.com/v4"
    assert env["BLOOIO_LOG_FORMAT"]["value"] == "json"
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    # Readiness passes on the standby too (the role is in the body, /leader and the
    # metric tell them apart): a rollout waits for the new pod to be ready.
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        assert c[probe]["httpGet"]["path"] == path
        port = c[probe]["httpGet"]["port"]
        assert port in (8080, "health")
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_replicas_are_spread_and_protected_from_voluntary_disruption() -> None:
    dep = deployment()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    # Soft: a single-node cluster still runs both replicas.
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = one(manifests(), "PodDisruptionBudget")
    assert (pdb["metadata"]["name"], pdb["metadata"]["namespace"]) == (
        "blooio-operator",
        "blooio-system",
    )
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["replicas"] > pdb["spec"]["minAvailable"]  # a drain can proceed


def assert_restricted(pod: dict[str, Any]) -> None:
    """The Pod Security Standard "restricted" checks that apply to these pods."""
    psc = pod.get("securityContext", {})
    assert not pod.get("hostNetwork")
    assert not pod.get("hostPID")
    assert not pod.get("hostIPC")
    for v in pod.get("volumes", []):
        assert set(v) - {"name"} <= {"configMap", "secret", "emptyDir", "projected"}, v
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
        assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0
        assert sc.get("allowPrivilegeEscalation") is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        assert not sc.get("privileged")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost")
        assert sc.get("readOnlyRootFilesystem") is True  # beyond "restricted"
        assert not c.get("ports") or all("hostPort" not in p for p in c["ports"])


def test_operator_pod_is_restricted() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert_restricted(pod)
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["runAsGroup"] == 65532
    assert c["securityContext"]["runAsUser"] == 65532


def test_namespace_enforces_restricted() -> None:
    ns = one(manifests(), "Namespace")
    assert ns["metadata"]["name"] == "blooio-system"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_metrics_service_selects_the_operator() -> None:
    svc = one(manifests(), "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()


def test_network_policy() -> None:
    np = one(manifests(), "NetworkPolicy")
    spec = np["spec"]
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    ingress_ports = [(p["port"], p["protocol"]) for r in spec["ingress"] for p in r["ports"]]
    assert ingress_ports == [(9090, "TCP")]
    # Only from namespaces carrying the documented label (docs/operations.md, Monitoring).
    assert [r.get("from") for r in spec["ingress"]] == [
        [{"namespaceSelector": {"matchLabels": {"metrics.blooio.com/scrape": "true"}}}]
    ]
    egress_ports = {(p["port"], p["protocol"]) for r in spec["egress"] for p in r["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}


def test_credentials_secret_template_is_documented_but_not_applied() -> None:
    template = MANIFESTS / "credentials-secret.template.yaml"
    (secret,) = load_all(template)
    assert secret["kind"] == "Secret"
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (
        "blooio-credentials",
        "blooio-system",
    )
    assert set(secret["stringData"]) == {"api-key"}
    assert "REPLACE" in secret["stringData"]["api-key"]
    assert "kubectl -n blooio-system create secret generic blooio-credentials" in (
        template.read_text()
    )
    # Never part of `apply -k`: re-applying must not overwrite a real key.
    (k,) = load_all(MANIFESTS / "kustomization.yaml")
    assert template.name not in k["resources"]


# --- deploy/variants/namespaced ----------------------------------------------------------


def test_namespaced_variant_has_no_cluster_rbac() -> None:
    docs = kustomize(NAMESPACED)
    # No cluster-wide right for the operator: no ClusterRoleBinding at all, and the only
    # ClusterRoles are the tenants' (blooiowebhooks for users, bound by aggregation).
    assert sorted(d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")) == sorted(
        TENANT_ROLES
    )
    for role in by_kind(docs, "ClusterRole"):
        assert {(g, r) for g, r, _ in rule_set(role["rules"])} == {("blooio.com", "blooiowebhooks")}
    assert not by_kind(docs, "ClusterRoleBinding")
    lease_role, lease_binding = leader_election_rbac(docs)
    assert lease_role["metadata"]["namespace"] == "blooio-system"
    assert rule_set(lease_role["rules"]) == LEASE_RULES
    assert lease_binding["metadata"]["namespace"] == "blooio-system"
    roles = [r for r in by_kind(docs, "Role") if r is not lease_role]
    bindings = [b for b in by_kind(docs, "RoleBinding") if b is not lease_binding]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert rule_set(role["rules"]) == NAMESPACED_RULES
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "blooio-operator", "namespace": "blooio-system"}
        ]
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--all-namespaces" not in c["args"]
    served = sorted(a.split("=", 1)[1] for a in c["args"] if a.startswith("--namespace="))
    assert served == ["team-a", "team-b"]
    # The same high availability as the default install.
    assert "--leader-elect" in c["args"]
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


# --- Argo CD sync waves ------------------------------------------------------------------


def wave(doc: dict[str, Any]) -> int:
    return int(doc["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_sync_waves_order_crd_operator_resources() -> None:
    assert wave(crd()) == -1
    assert {wave(d) for d in manifests()} == {0}
    (example,) = load_all(EXAMPLES / "blooiowebhook.yaml")
    assert wave(example) == 1


# --- examples ----------------------------------------------------------------------------


def test_example_blooiowebhook() -> None:
    (obj,) = load_all(EXAMPLES / "blooiowebhook.yaml")
    assert (obj["metadata"]["name"], obj["metadata"]["namespace"]) == ("orders", "shop")
    assert obj["spec"]["url"] == "https://orders.shop.example.com/blooio"
    assert obj["spec"]["eventTypes"] == ["message.received", "message.delivered"]
    assert "channelId" not in obj["spec"]
    assert "channelType" not in obj["spec"]
    validate(obj)
    (ns,) = load_all(EXAMPLES / "namespace.yaml")
    assert ns["metadata"]["name"] == "shop"


def test_example_receiver_mounts_the_secret_as_a_volume() -> None:
    docs = load_all(EXAMPLES / "receiver-deployment.yaml")
    dep = one(docs, "Deployment")
    assert dep["metadata"]["namespace"] == "shop"
    annotations = dep["metadata"]["annotations"]
    assert annotations["secret.reloader.stakater.com/reload"] == "orders-blooio-webhook"
    pod = dep["spec"]["template"]["spec"]
    assert_restricted(pod)
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/blooio")
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # subPath mounts never see a rotated secret
    assert volumes[mount["name"]]["secret"]["secretName"] == "orders-blooio-webhook"
    # Not through the environment: env vars never change after a rotation.
    for e in c.get("env", []):
        assert "secretKeyRef" not in e.get("valueFrom", {})
    assert not c.get("envFrom")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BLOOIO_SIGNING_SECRET_FILE"] == "/etc/blooio/signing-secret"
    # Mode 0440 files are readable through the pod's fsGroup.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_examples_kustomization_builds() -> None:
    docs = kustomize(EXAMPLES)
    assert sorted(d["kind"] for d in docs) == sorted(
        ["Namespace", "BlooioWebhook", "Deployment", "Service", "ConfigMap"]
    )
    cm = one(docs, "ConfigMap")
    assert cm["data"]["receiver.py"] == (EXAMPLES / "receiver" / "receiver.py").read_text()
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "code", "configMap": {"name": cm["metadata"]["name"]}} in volumes


# --- docs agree with the code ------------------------------------------------------------

DOCS = ROOT / "docs"


def test_every_event_reason_is_in_troubleshooting() -> None:
    from blooio_operator.models import reasons

    text = (DOCS / "troubleshooting.md").read_text()
    missing = sorted(r for r in reasons.EVENT_REASONS if f"`{r}`" not in text)
    assert missing == []


def test_every_setting_is_documented() -> None:
    from blooio_operator.settings import Settings

    text = (DOCS / "configuration.md").read_text()
    testing_only = {"crash_point"}
    missing = sorted(
        f"BLOOIO_{name.upper()}"
        for name in Settings.model_fields
        if name not in testing_only and f"`BLOOIO_{name.upper()}`" not in text
    )
    assert missing == []
