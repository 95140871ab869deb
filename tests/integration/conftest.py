"""Fixtures for tests against the real local control plane (tests/controlplane).

One control plane per test session, a fresh namespace per test, the CRD applied from
deploy/crds exactly as a user applies it, and API clients authenticated as
ServiceAccounts through the TokenRequest API so the shipped RBAC is what is tested.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from blooio_operator.devenv.controlplane import ControlPlane, ControlPlaneError, ensure_binary
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "deploy" / "crds"

KubectlFn = Callable[..., "subprocess.CompletedProcess[str]"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        binary = ensure_binary()
    except ControlPlaneError as exc:
        # `make test` builds the binary first and fails loudly; a bare pytest run on a
        # machine without Go cannot run these tests at all.
        pytest.fail(f"control plane unavailable: {exc}")
    work = tmp_path_factory.mktemp("controlplane")
    cp = ControlPlane(work, binary=binary)
    cp.start()
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)
    try:
        yield cp
    finally:
        cp.stop()
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(control_plane.kubeconfig))


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> KubectlFn:
    def run(
        *args: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--kubeconfig", str(control_plane.kubeconfig), *args]
        out = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    return run


@pytest.fixture(scope="session")
def crd(kubectl: KubectlFn, kube_api: k8s.ApiClient) -> str:
    kubectl("apply", "-f", str(CRD_DIR / "blooio.com_blooiowebhooks.yaml"))
    ext = k8s.ApiextensionsV1Api(kube_api)
    name = "blooiowebhooks.blooio.com"

    def established() -> bool:
        obj = ext.read_custom_resource_definition(name)
        conds = obj.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    wait_for(established, timeout=60, message="CRD Established")
    # Discovery can lag Established by a moment; wait until the resource is served.
    custom = k8s.CustomObjectsApi(kube_api)
    wait_for(
        lambda: custom.list_cluster_custom_object("blooio.com", "v1alpha1", "blooiowebhooks")
        is not None,
        timeout=30,
        message="blooiowebhooks served",
    )
    return name


@pytest.fixture
def namespace(kube_api: k8s.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(kube_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except k8s.ApiException:
        pass


def token_for(kube_api: k8s.ApiClient, namespace: str, name: str) -> str:
    """Create the ServiceAccount if needed and mint a token for it (TokenRequest)."""
    core = k8s.CoreV1Api(kube_api)
    try:
        core.create_namespaced_service_account(
            namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
        )
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
    req = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)
    )
    resp = core.create_namespaced_service_account_token(name, namespace, req)
    return str(resp.status.token)


def kubeconfig_for_token(control_plane: ControlPlane, token: str, path: Path) -> Path:
    """Write a kubeconfig that authenticates with ``token`` against the control plane."""
    cfg: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": control_plane.server,
                    "certificate-authority": str(control_plane.info.ca_file),
                },
            }
        ],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def sa_api_client(
    control_plane: ControlPlane, kube_api: k8s.ApiClient
) -> Callable[[str, str], k8s.ApiClient]:
    def make(namespace: str, name: str) -> k8s.ApiClient:
        token = token_for(kube_api, namespace, name)
        conf = k8s.Configuration()
        conf.host = control_plane.server
        conf.ssl_ca_cert = str(control_plane.info.ca_file)
        conf.api_key = {"authorization": token}
        conf.api_key_prefix = {"authorization": "Bearer"}
        return k8s.ApiClient(conf)

    return make


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
