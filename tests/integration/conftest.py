"""Fixtures for tests against the real local control plane (tests/controlplane).

One control plane per test session, a fresh namespace per test, the CRD applied from
deploy/crds exactly as a user applies it, and API clients authenticated as
ServiceAccounts through the TokenRequest API so the shipped RBAC is what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from blooio_operator.devenv.controlplane import ControlPlane, ControlPlaneError, ensure_binary
from tests.helpers import FAST_OPERATOR_ENV, wait_for

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
        lambda: (
            custom.list_cluster_custom_object("blooio.com", "v1alpha1", "blooiowebhooks")
            is not None
        ),
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
    """A kubeconfig that authenticates with ``token`` against the control plane."""
    return control_plane.write_token_kubeconfig(token, path)


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


# --- the simulator and the operator, as separate processes --------------------------

API_KEY = "bl_test_integration_key_0123456789"
MANIFESTS = ROOT / "deploy" / "manifests"


class Simulator:
    """A running simulator process plus its admin client."""

    def __init__(self, state_dir: Path, api_keys: list[str], extra: list[str] | None = None):
        from blooio_operator.devenv.dev import SimulatorProcess
        from blooio_operator.simulator.admin import SimulatorAdmin

        self.proc = SimulatorProcess(state_dir, api_keys, extra).start()
        self.url = self.proc.url
        self.admin = SimulatorAdmin(self.proc.admin)

    def calls(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.admin.calls()
        return [c for c in calls if endpoint is None or c["endpoint"] == endpoint]

    def count(self, endpoint: str) -> int:
        return len(self.calls(endpoint))

    def webhooks(self) -> list[dict[str, Any]]:
        hooks: list[dict[str, Any]] = self.admin.webhooks()
        return hooks

    def webhook(self, webhook_id: str) -> dict[str, Any] | None:
        return next((w for w in self.webhooks() if w["id"] == webhook_id), None)

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    sim = Simulator(tmp_path / "simulator", [API_KEY, "bl_test_other_key_abcdefghijkl"])
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def operator_kubeconfig(
    control_plane: ControlPlane,
    kube_api: k8s.ApiClient,
    crd: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A kubeconfig for ServiceAccount blooio-system/blooio-operator bound by the SHIPPED RBAC."""
    core = k8s.CoreV1Api(kube_api)
    try:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="blooio-system")))
    except k8s.ApiException as exc:
        if exc.status != 409:
            raise
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    docs = load_yaml_docs(MANIFESTS / "rbac.yaml")
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            rbac.create_cluster_role(doc)
        elif doc["kind"] == "ClusterRoleBinding":
            rbac.create_cluster_role_binding(doc)
    assert any(d["kind"] == "ClusterRole" for d in docs), "deploy/manifests/rbac.yaml has no role"
    # Leader election: the Role for Leases in the operator's own namespace.
    for doc in load_yaml_docs(MANIFESTS / "leader-election.yaml"):
        namespace = doc["metadata"]["namespace"]
        if doc["kind"] == "Role":
            rbac.create_namespaced_role(namespace, doc)
        elif doc["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(namespace, doc)
    token = token_for(kube_api, "blooio-system", "blooio-operator")
    return kubeconfig_for_token(
        control_plane, token, tmp_path_factory.mktemp("operator") / "kubeconfig"
    )


class OperatorProcess:
    """``blooio-operator run`` as its own process, authenticated as the operator's SA."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str], args: list[str]):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env_overrides: str) -> OperatorProcess:
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig), **env_overrides}
        env = {k: v for k, v in env.items() if v != ""}
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "blooio_operator", "run", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self, **env_overrides: str) -> OperatorProcess:
        self.stop()
        return self.start(**env_overrides)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def start_operator(
    operator_kubeconfig: Path, simulator: Simulator, namespace: str, tmp_path: Path
) -> Iterator[OperatorFactory]:
    started: list[OperatorProcess] = []

    def start(
        *, namespaces: list[str] | None = None, args: list[str] | None = None, **env: str
    ) -> OperatorProcess:
        base = {
            "BLOOIO_API_URL": simulator.url,
            "BLOOIO_API_KEY": API_KEY,
            **FAST_OPERATOR_ENV,
        }
        base.update(env)
        argv: list[str] = []
        for ns in namespaces or [namespace]:
            argv += ["--namespace", ns]
        argv += args or []  # e.g. --health-port for several operators at once
        op = OperatorProcess(
            operator_kubeconfig, tmp_path / f"operator-{len(started)}.log", base, argv
        ).start()
        started.append(op)
        return op

    yield start
    for i, op in enumerate(started):
        op.stop()
        # Shown by pytest only when the test failed.
        print(f"--- operator {i} log (tail) ---\n{op.logs()[-6000:]}")
