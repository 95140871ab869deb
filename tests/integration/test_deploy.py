"""The shipped install (deploy/) against a real kube-apiserver: it is accepted as a
whole (server-side dry run), its pod passes Pod Security "restricted" admission, and
its RBAC grants what the operator needs and nothing more: no Secret listing, and in
the namespaced variant nothing outside the listed namespaces."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACED = DEPLOY / "variants" / "namespaced"
EXAMPLES = ROOT / "examples"
OPERATOR_NS = "blooio-system"


def kustomize(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def ensure_namespace(kube_api: k8s.ApiClient, name: str) -> None:
    try:
        k8s.CoreV1Api(kube_api).create_namespace(
            k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))
        )
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise


def status_of(call: Callable[[], object]) -> int:
    """HTTP status of an API call: 200 if it succeeds, else the error's status."""
    try:
        call()
    except k8s.ApiException as exc:
        return int(exc.status)
    return 200


# --- the install as a whole --------------------------------------------------------------


@pytest.mark.parametrize("path", [DEPLOY, NAMESPACED], ids=["default", "namespaced"])
def test_server_side_dry_run(crd: str, kube_api: k8s.ApiClient, kubectl: Any, path: Path) -> None:
    # A dry run creates nothing, so namespaced objects need their namespaces to exist:
    # the operator's own (which `apply -k` itself would create) and, for the variant,
    # the served namespaces (which the variant requires to exist).
    for ns in (OPERATOR_NS, "team-a", "team-b"):
        ensure_namespace(kube_api, ns)
    out = kubectl("apply", "--dry-run=server", "-k", str(path))
    applied = [line for line in out.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(kustomize(path)), out.stdout


def test_examples_server_side_dry_run(crd: str, kube_api: k8s.ApiClient, kubectl: Any) -> None:
    ensure_namespace(kube_api, "shop")
    out = kubectl("apply", "--dry-run=server", "-k", str(EXAMPLES))
    assert "blooiowebhook.blooio.com/orders" in out.stdout


# --- Pod Security "restricted" ------------------------------------------------------------


@pytest.fixture
def restricted_namespace(kube_api: k8s.ApiClient, namespace: str) -> str:
    k8s.CoreV1Api(kube_api).patch_namespace(
        namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )
    return namespace


def pod_from(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pss-{uuid.uuid4().hex[:6]}",
            "namespace": namespace,
            "labels": template["metadata"].get("labels", {}),
        },
        "spec": template["spec"],
    }


def create_pod_dry_run(kubectl: Any, pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    out: subprocess.CompletedProcess[str] = kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    return out


def shipped_deployment(path: Path) -> dict[str, Any]:
    (dep,) = of_kind(kustomize(path), "Deployment")
    return dep


def test_operator_pod_is_admitted_under_restricted(
    kube_api: k8s.ApiClient, kubectl: Any, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    # The pod names its ServiceAccount, which admission requires to exist.
    k8s.CoreV1Api(kube_api).create_namespaced_service_account(
        ns, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="blooio-operator"))
    )
    dep = shipped_deployment(DEPLOY)
    out = create_pod_dry_run(kubectl, pod_from(dep, ns))
    assert out.returncode == 0, out.stderr
    assert "violate" not in out.stderr  # no PodSecurity warnings either

    # The same pod without its hardening is refused: enforcement is live here.
    weak = pod_from(dep, ns)
    weak["spec"] = {**weak["spec"], "securityContext": {}}
    weak["spec"]["containers"] = [
        {k: v for k, v in c.items() if k != "securityContext"} for c in weak["spec"]["containers"]
    ]
    out = create_pod_dry_run(kubectl, weak)
    assert out.returncode != 0
    assert 'violates PodSecurity "restricted' in out.stderr


def test_deployment_is_admitted_under_restricted(kubectl: Any, restricted_namespace: str) -> None:
    dep = shipped_deployment(DEPLOY)
    dep["metadata"]["namespace"] = restricted_namespace
    out = kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(dep), check=False)
    assert out.returncode == 0, out.stderr
    # PodSecurity only warns on workload objects; there must be nothing to warn about.
    assert "PodSecurity" not in out.stderr, out.stderr


def test_example_receiver_pod_is_admitted_under_restricted(
    kubectl: Any, restricted_namespace: str
) -> None:
    dep = next(d for d in kustomize(EXAMPLES) if d["kind"] == "Deployment")
    out = create_pod_dry_run(kubectl, pod_from(dep, restricted_namespace))
    assert out.returncode == 0, out.stderr


# --- RBAC: what the operator's ServiceAccount may and may not do ------------------------


def cleanup(kube_api: k8s.ApiClient, names: list[str]) -> None:
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    for name in names:
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            try:
                delete(name)
            except k8s.ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def operator_client(
    crd: str, kube_api: k8s.ApiClient, namespace: str, sa_api_client: Any
) -> Iterator[k8s.ApiClient]:
    """A client authenticated as a ServiceAccount bound to the shipped ClusterRole's rules.

    The ClusterRole is created under a unique name (with the shipped rules, verbatim)
    so tests neither depend on nor disturb a real install in the same cluster.
    """
    (role,) = [
        r
        for r in of_kind(kustomize(DEPLOY), "ClusterRole")
        if r["metadata"]["name"] == "blooio-operator"  # not the tenants' roles
    ]
    name = f"blooio-operator-test-{namespace}"
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    rbac.create_cluster_role({**role, "metadata": {"name": name}})
    rbac.create_cluster_role_binding(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "blooio-operator", "namespace": namespace}
            ],
        }
    )
    api = sa_api_client(namespace, "blooio-operator")
    # Wait until the RBAC authorizer has seen the binding.
    wait_for(
        lambda: (
            status_of(
                lambda: k8s.CustomObjectsApi(api).list_cluster_custom_object(
                    "blooio.com", "v1alpha1", "blooiowebhooks"
                )
            )
            == 200
        ),
        timeout=30,
        message="ClusterRoleBinding effective",
    )
    try:
        yield api
    finally:
        cleanup(kube_api, [name])


def bwh_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"name": name},
        "spec": {"url": "https://orders.shop.example.com/blooio"},
    }


def operator_can_do_its_job(admin: k8s.ApiClient, api: k8s.ApiClient, ns: str) -> None:
    """Everything the operator does to a resource in `ns`, as `api`."""
    custom_admin = k8s.CustomObjectsApi(admin)
    custom_admin.create_namespaced_custom_object(
        "blooio.com", "v1alpha1", ns, "blooiowebhooks", bwh_body("orders")
    )
    custom = k8s.CustomObjectsApi(api)
    core = k8s.CoreV1Api(api)
    args = ("blooio.com", "v1alpha1", ns, "blooiowebhooks")
    assert custom.list_namespaced_custom_object(*args)["items"]
    custom.get_namespaced_custom_object(*args, "orders")
    custom.patch_namespaced_custom_object(
        *args, "orders", {"metadata": {"finalizers": ["blooio.com/finalizer"]}}
    )
    custom.patch_namespaced_custom_object_status(
        *args, "orders", {"status": {"webhookId": "wh_1", "remoteStatus": "active"}}
    )
    secret = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name="orders-blooio-webhook"),
        string_data={"signing-secret": "whsec_x"},
    )
    core.create_namespaced_secret(ns, secret)
    core.read_namespaced_secret("orders-blooio-webhook", ns)
    core.patch_namespaced_secret(
        "orders-blooio-webhook", ns, {"stringData": {"webhook-id": "wh_1"}}
    )
    # The finalizer the operator puts on credentials Secrets in use.
    core.patch_namespaced_secret(
        "orders-blooio-webhook", ns, {"metadata": {"finalizers": ["blooio.com/credentials-in-use"]}}
    )
    core.patch_namespaced_secret(
        "orders-blooio-webhook",
        ns,
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["blooio.com/credentials-in-use"]}},
    )
    core.delete_namespaced_secret("orders-blooio-webhook", ns)
    core.create_namespaced_event(
        ns,
        k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=f"orders.{uuid.uuid4().hex[:8]}"),
            involved_object=k8s.V1ObjectReference(
                api_version="blooio.com/v1alpha1", kind="BlooioWebhook", name="orders", namespace=ns
            ),
            reason="Created",
            message="test",
            type="Normal",
        ),
    )
    custom.patch_namespaced_custom_object(*args, "orders", {"metadata": {"finalizers": None}})
    operator_cannot_use_removed_verbs(admin, api, ns)


def operator_cannot_use_removed_verbs(admin: k8s.ApiClient, api: k8s.ApiClient, ns: str) -> None:
    """The grants trimmed in issue 12 are really gone: update (PUT), events.k8s.io."""
    core = k8s.CoreV1Api(api)
    core_admin = k8s.CoreV1Api(admin)
    name = f"probe-{uuid.uuid4().hex[:8]}"
    core_admin.create_namespaced_secret(
        ns, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data={"k": "v"})
    )
    current = core.read_namespaced_secret(name, ns)
    assert status_of(lambda: core.replace_namespaced_secret(name, ns, current)) == 403
    custom = k8s.CustomObjectsApi(api)
    args = ("blooio.com", "v1alpha1", ns, "blooiowebhooks")
    obj = custom.get_namespaced_custom_object(*args, "orders")
    assert status_of(lambda: custom.replace_namespaced_custom_object(*args, "orders", obj)) == 403
    assert (
        status_of(lambda: custom.replace_namespaced_custom_object_status(*args, "orders", obj))
        == 403
    )
    event = k8s.EventsV1Event(
        metadata=k8s.V1ObjectMeta(name=f"orders.{uuid.uuid4().hex[:8]}"),
        event_time=datetime.now(UTC),
        reporting_controller="blooio.com/operator",
        reporting_instance="test",
        action="Reconcile",
        reason="Created",
        regarding=k8s.V1ObjectReference(
            api_version="blooio.com/v1alpha1", kind="BlooioWebhook", name="orders", namespace=ns
        ),
        type="Normal",
    )
    assert status_of(lambda: k8s.EventsV1Api(api).create_namespaced_event(ns, event)) == 403
    core_admin.delete_namespaced_secret(name, ns)


def test_operator_role_is_sufficient(
    kube_api: k8s.ApiClient, namespace: str, operator_client: k8s.ApiClient
) -> None:
    operator_can_do_its_job(kube_api, operator_client, namespace)
    # Cluster-wide watches kopf uses with --all-namespaces.
    k8s.CustomObjectsApi(operator_client).list_cluster_custom_object(
        "blooio.com", "v1alpha1", "blooiowebhooks"
    )
    k8s.ApiextensionsV1Api(operator_client).read_custom_resource_definition(
        "blooiowebhooks.blooio.com"
    )
    k8s.ApiextensionsV1Api(operator_client).list_custom_resource_definition()
    # Namespaces are needed only for --namespace globs, which the ClusterRole does not serve.
    assert status_of(lambda: k8s.CoreV1Api(operator_client).list_namespace()) == 403


def test_operator_role_cannot_list_secrets_or_escalate(
    crd: str, namespace: str, operator_client: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(operator_client)
    assert status_of(lambda: core.list_secret_for_all_namespaces()) == 403
    assert status_of(lambda: core.list_namespaced_secret(namespace)) == 403
    assert (
        status_of(lambda: core.list_namespaced_secret(namespace, watch=True, timeout_seconds=1))
        == 403
    )
    assert status_of(lambda: core.list_namespaced_pod(namespace)) == 403
    assert status_of(lambda: core.list_config_map_for_all_namespaces()) == 403
    assert status_of(lambda: core.delete_namespace(namespace)) == 403
    custom = k8s.CustomObjectsApi(operator_client)
    # Create/delete of the resources belongs to users, not to the operator.
    assert (
        status_of(
            lambda: custom.create_namespaced_custom_object(
                "blooio.com", "v1alpha1", namespace, "blooiowebhooks", bwh_body("x")
            )
        )
        == 403
    )
    rbac = k8s.RbacAuthorizationV1Api(operator_client)
    assert (
        status_of(
            lambda: rbac.create_cluster_role(
                {"metadata": {"name": f"escalate-{namespace}"}, "rules": []}
            )
        )
        == 403
    )
    ext = k8s.ApiextensionsV1Api(operator_client)
    assert status_of(lambda: ext.delete_custom_resource_definition(crd)) == 403


# --- RBAC of the namespaced variant --------------------------------------------------------


@pytest.fixture
def served_namespaces(kube_api: k8s.ApiClient, namespace: str) -> Iterator[list[str]]:
    """Two served namespaces (the fixture's and one more) plus an unserved third."""
    core = k8s.CoreV1Api(kube_api)
    extra = [f"{namespace}-b", f"{namespace}-c"]
    for name in extra:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        yield [namespace, *extra]
    finally:
        for name in extra:
            with contextlib.suppress(k8s.ApiException):
                core.delete_namespace(name)


def test_namespaced_variant_rbac_confines_the_operator(
    crd: str,
    kube_api: k8s.ApiClient,
    namespace: str,
    served_namespaces: list[str],
    sa_api_client: Any,
) -> None:
    served_a, served_b, unserved = served_namespaces
    docs = kustomize(NAMESPACED)
    # The only ClusterRoles are the tenants' (test_chart.py), bound to nobody here.
    assert {r["metadata"]["name"] for r in of_kind(docs, "ClusterRole")} == {
        "blooio-operator-view",
        "blooio-operator-edit",
    }
    assert not of_kind(docs, "ClusterRoleBinding")
    # The served namespaces' Roles (the leader-election Role for Leases in blooio-system
    # is the default install's, checked in test_manifests).
    roles = {
        r["metadata"]["namespace"]: r
        for r in of_kind(docs, "Role")
        if r["metadata"]["namespace"] != OPERATOR_NS
    }
    bindings = {
        b["metadata"]["namespace"]: b
        for b in of_kind(docs, "RoleBinding")
        if b["metadata"]["namespace"] != OPERATOR_NS
    }
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b"]

    # The variant's Roles and RoleBindings, verbatim, with team-a/team-b mapped to two
    # fresh namespaces and the subject to a ServiceAccount of this test.
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    for shipped_ns, target in (("team-a", served_a), ("team-b", served_b)):
        role = {**roles[shipped_ns], "metadata": {"name": "blooio-operator", "namespace": target}}
        binding = {
            **bindings[shipped_ns],
            "metadata": {"name": "blooio-operator", "namespace": target},
            "subjects": [
                {"kind": "ServiceAccount", "name": "blooio-operator", "namespace": served_a}
            ],
        }
        rbac.create_namespaced_role(target, role)
        rbac.create_namespaced_role_binding(target, binding)

    api = sa_api_client(served_a, "blooio-operator")
    custom = k8s.CustomObjectsApi(api)
    wait_for(
        lambda: (
            status_of(
                lambda: custom.list_namespaced_custom_object(
                    "blooio.com", "v1alpha1", served_b, "blooiowebhooks"
                )
            )
            == 200
        ),
        timeout=30,
        message="RoleBindings effective",
    )

    for ns in (served_a, served_b):
        operator_can_do_its_job(kube_api, api, ns)

    core = k8s.CoreV1Api(api)
    secret = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), string_data={"k": "v"})
    assert status_of(lambda: core.create_namespaced_secret(unserved, secret)) == 403
    assert status_of(lambda: core.read_namespaced_secret("any", unserved)) == 403
    args = ("blooio.com", "v1alpha1", unserved, "blooiowebhooks")
    assert status_of(lambda: custom.list_namespaced_custom_object(*args)) == 403
    assert status_of(lambda: custom.list_cluster_custom_object(*args[:2], args[3])) == 403
    assert status_of(lambda: core.list_secret_for_all_namespaces()) == 403
    assert status_of(lambda: core.list_namespaced_secret(served_a)) == 403
    assert status_of(lambda: core.list_namespace()) == 403
    assert status_of(lambda: k8s.ApiextensionsV1Api(api).list_custom_resource_definition()) == 403
