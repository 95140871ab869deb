"""The operator's image, built from this tree and run the way the shipped Deployment runs it.

The image is built first, exactly as `make image` builds it (hack/image/build.sh: podman,
on a Debian base made with mmdebstrap, cached), so the test always exercises the current
Dockerfile and source. Then one container runs against the local control plane and the
simulator with what deploy/manifests/deployment.yaml gives the pod, read from the
manifest so that the test follows it:

- the image's own ENTRYPOINT with the manifest's args, and the manifest's env (a
  ``secretKeyRef`` resolved from the cluster, as the kubelet does; only the Blooio URL
  points at the simulator instead);
- its securityContext: uid/gid, read-only root filesystem, no capabilities, no privilege
  escalation, and an in-memory ``/tmp`` of the emptyDir's size; its resource limits;
- in-cluster configuration: a TokenRequest token for blooio-system/blooio-operator, bound
  by the shipped RBAC, the cluster CA and the namespace where the kubelet mounts them,
  and ``KUBERNETES_SERVICE_HOST``/``PORT``;
- ``--network host``: the container reaches the control plane and the simulator on the
  host's loopback, and its ports are the manifest's ports on the host.

Skipped only when podman is not installed (`bash .ci/run` installs it as root).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client as k8s

from blooio_operator.devenv.controlplane import ControlPlane
from tests.helpers import wait_for
from tests.integration.conftest import API_KEY, Simulator, token_for
from tests.integration.webhooks import Webhooks

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ROOT / "hack" / "image" / "podman.sh"
MANIFESTS = ROOT / "deploy" / "manifests"
IMAGE = os.environ.get("BLOOIO_TEST_IMAGE", "localhost/blooio-operator:dev")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
URL = "https://orders.shop.example.com/blooio"
SIZE_LIMIT_MB = 250  # on the Debian base (docs/operations.md, "The image")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("podman") is None,
        reason="podman is not installed; on Debian: apt-get install podman buildah runc "
        "uidmap fuse-overlayfs slirp4netns mmdebstrap skopeo (bash .ci/run does it as root)",
    ),
]


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(PODMAN), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return out


# --- what the manifest says ------------------------------------------------------------------


def manifest_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


class Pod:
    """The parts of the shipped Deployment's pod that decide how the container runs."""

    def __init__(self) -> None:
        (dep,) = [d for d in manifest_docs("deployment.yaml") if d["kind"] == "Deployment"]
        self.namespace: str = dep["metadata"]["namespace"]
        spec = dep["spec"]["template"]["spec"]
        self.service_account: str = spec["serviceAccountName"]
        self.grace: int = spec["terminationGracePeriodSeconds"]
        self.pod_security: dict[str, Any] = spec.get("securityContext", {})
        (self.container,) = spec["containers"]
        self.volumes = {v["name"]: v for v in spec.get("volumes", [])}
        c = self.container
        assert "command" not in c, "the test runs the image's ENTRYPOINT, as the manifest does"
        self.args: list[str] = c["args"]
        self.env: list[dict[str, Any]] = c.get("env", [])
        self.ports: dict[str, int] = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.security: dict[str, Any] = {**self.pod_security, **c["securityContext"]}

    def probe_endpoints(self) -> set[tuple[int, str]]:
        found = set()
        for key in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = self.container[key]["httpGet"]
            port = get["port"]
            found.add((self.ports[port] if isinstance(port, str) else int(port), get["path"]))
        return found

    def startup_timeout(self) -> float:
        probe = self.container["startupProbe"]
        return float(probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))

    def metrics_endpoint(self) -> tuple[int, str]:
        (svc,) = [d for d in manifest_docs("service.yaml") if d["kind"] == "Service"]
        annotations = svc["metadata"]["annotations"]
        (port,) = [p for p in svc["spec"]["ports"] if p["name"] == "metrics"]
        target = port["targetPort"]
        number = self.ports[target] if isinstance(target, str) else int(target)
        assert int(annotations["prometheus.io/port"]) == number
        return number, annotations["prometheus.io/path"]

    def user(self) -> str:
        return f"{self.security['runAsUser']}:{self.security['runAsGroup']}"

    def run_flags(self) -> list[str]:
        """podman flags for the container's securityContext, mounts and limits."""
        sec = self.security
        assert sec["runAsNonRoot"] is True
        assert sec["readOnlyRootFilesystem"] is True
        assert sec["allowPrivilegeEscalation"] is False
        assert sec["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sec["capabilities"]
        assert sec["seccompProfile"]["type"] == "RuntimeDefault"  # podman's default profile
        flags = [
            f"--user={self.user()}",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
        ]
        for mount in self.container.get("volumeMounts", []):
            volume = self.volumes[mount["name"]]
            assert "emptyDir" in volume, f"volume {mount['name']}: only emptyDir is handled"
            size = volume["emptyDir"].get("sizeLimit", "64Mi").replace("Mi", "m")
            flags.append(f"--tmpfs={mount['mountPath']}:rw,size={size},mode=1777")
        limits = self.container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            flags.append(f"--memory={limits['memory'].replace('Mi', 'm')}")
        if "cpu" in limits:
            cpu = str(limits["cpu"])
            flags.append(f"--cpus={int(cpu[:-1]) / 1000 if cpu.endswith('m') else float(cpu)}")
        return flags


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> str:
    """Build the image as `make image` does (a cache hit when nothing changed)."""
    started = time.monotonic()
    out = subprocess.run(
        [str(ROOT / "hack" / "image" / "build.sh")],
        cwd=ROOT,
        env={**os.environ, "IMAGE": IMAGE},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert out.returncode == 0, f"make image failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    print(f"image {IMAGE} built in {time.monotonic() - started:.1f} s")
    return IMAGE


@pytest.fixture(scope="module")
def pod() -> Pod:
    return Pod()


@pytest.fixture
def credentials(kube_api: k8s.ApiClient, operator_kubeconfig: Path, pod: Pod) -> dict[str, str]:
    """The Secret the env's secretKeyRefs name, created as the README says (key = simulator's)."""
    core = k8s.CoreV1Api(kube_api)
    wanted: dict[str, dict[str, str]] = {}
    for var in pod.env:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            wanted.setdefault(ref["name"], {})[ref["key"]] = API_KEY
    for name, data in wanted.items():
        body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data=data)
        try:
            core.create_namespaced_secret(pod.namespace, body)
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_secret(name, pod.namespace, body)
    return {name: data[key] for name, data in wanted.items() for key in data}


def container_env(
    kube_api: k8s.ApiClient, pod: Pod, simulator: Simulator, server: str
) -> dict[str, str]:
    """The manifest's env, resolved as the kubelet resolves it, plus the service env."""
    core = k8s.CoreV1Api(kube_api)
    env: dict[str, str] = {}
    for var in pod.env:
        name = var["name"]
        if "value" in var:
            env[name] = str(var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            secret = core.read_namespaced_secret(ref["name"], pod.namespace)
            env[name] = base64.b64decode(secret.data[ref["key"]]).decode()
        elif "fieldRef" in var.get("valueFrom", {}):
            # The downward API (POD_NAME, POD_NAMESPACE for leader election).
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": "blooio-operator-image-test",
                "metadata.namespace": pod.namespace,
            }
            env[name] = fields[path]
        else:
            raise AssertionError(f"env {name}: this kind of valueFrom is not handled: {var}")
    # The one deliberate difference: Blooio is the simulator.
    assert "BLOOIO_API_URL" in env
    env["BLOOIO_API_URL"] = simulator.url
    parts = urlsplit(server)
    assert parts.hostname
    assert parts.port
    env["KUBERNETES_SERVICE_HOST"] = parts.hostname
    env["KUBERNETES_SERVICE_PORT"] = str(parts.port)
    return env


def service_account_dir(
    tmp_path: Path, kube_api: k8s.ApiClient, control_plane: ControlPlane, pod: Pod
) -> tuple[Path, str]:
    """token, ca.crt and namespace, as the kubelet projects them (world-readable files)."""
    token = token_for(kube_api, pod.namespace, pod.service_account)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token)
    shutil.copyfile(control_plane.info.ca_file, sa / "ca.crt")
    (sa / "namespace").write_text(pod.namespace)
    sa.chmod(0o755)
    for f in sa.iterdir():
        f.chmod(0o644)
    return sa, token


def wait_port_free(port: int, timeout: float = 60) -> None:
    def free() -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return False
            return True

    wait_for(free, timeout=timeout, interval=1, message=f"host port {port} free (--network host)")


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=5
        ) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def metrics_reader_token(kube_api: k8s.ApiClient, namespace: str) -> str:
    """A token of ServiceAccount NS/scraper bound to the shipped metrics-reader ClusterRole
    (deploy/monitoring/metrics-reader.yaml, under a name of this test's own)."""
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    reader = ROOT / "deploy" / "monitoring" / "metrics-reader.yaml"
    (role,) = [d for d in yaml.safe_load_all(reader.read_text()) if d["kind"] == "ClusterRole"]
    name = role["metadata"]["name"] = f"{role['metadata']['name']}-{namespace}"
    rbac.create_cluster_role(role)
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
            "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": namespace}],
        }
    )
    return token_for(kube_api, namespace, "scraper")


class Container:
    def __init__(self, name: str) -> None:
        self.name = name

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def exec(self, *cmd: str) -> str:
        return podman("exec", self.name, *cmd).stdout

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def operator_container(
    image: str,
    pod: Pod,
    credentials: dict[str, str],
    kube_api: k8s.ApiClient,
    control_plane: ControlPlane,
    simulator: Simulator,
    tmp_path: Path,
) -> Iterator[tuple[Container, str, float]]:
    sa, token = service_account_dir(tmp_path, kube_api, control_plane, pod)
    env = container_env(kube_api, pod, simulator, control_plane.server)
    for port in pod.ports.values():
        wait_port_free(port)
    name = f"blooio-image-test-{uuid.uuid4().hex[:8]}"
    cmd = [
        "run",
        "--detach",
        f"--name={name}",
        "--network=host",
        *pod.run_flags(),
        f"--volume={sa}:{SA_DIR}:ro",
        f"--stop-timeout={pod.grace}",
    ]
    for key, value in env.items():
        cmd.append(f"--env={key}={value}")
    container = Container(name)
    started = time.monotonic()
    podman(*cmd, image, *pod.args)
    try:
        yield container, token, started
    finally:
        logs = container.logs()
        container.remove()
        # Shown by pytest only when the test failed.
        print(f"--- container log (tail) ---\n{logs[-6000:]}")


# --- tests ------------------------------------------------------------------------------------


def test_image_matches_the_deployment_and_carries_no_build_tools(image: str, pod: Pod) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    # The image runs as the manifest's user by itself (docker run, runAsNonRoot checks).
    assert config["User"] == pod.user(), "Dockerfile USER differs from the Deployment"
    exposed = {int(p.split("/")[0]) for p in config.get("ExposedPorts", {})}
    assert exposed == set(pod.ports.values()), "Dockerfile EXPOSE differs from the ports"
    labels = config["Labels"]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"].startswith(head)
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.version"]

    # The OCI archive other tools import (containerd: ctr images import) is this image.
    archive = ROOT / ".build" / "image" / "blooio-operator.oci.tar"
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index = json.load(member)
    (manifest,) = index["manifests"]
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == image
    image_id = podman("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    assert (archive.parent / f"{archive.name}.id").read_text().split()[0] == image_id

    probe = (
        "import importlib.util as u, shutil; "
        "print([m for m in ('pip', 'setuptools', 'wheel', 'ensurepip') if u.find_spec(m)], "
        "[t for t in ('pip', 'pip3', 'gcc', 'cc', 'make', 'g++') if shutil.which(t)])"
    )
    for python in ("/opt/venv/bin/python", "python3"):
        out = podman("run", "--rm", "--network=none", "--entrypoint", python, image, "-c", probe)
        assert out.stdout.strip() == "[] []", f"{python}: {out.stdout}"


def test_a_rebuild_at_another_commit_carries_that_commit(image: str, tmp_path: Path) -> None:
    # Same files, new revision: every layer is a cache hit, and the label must still be
    # the new one (buildah reused the old LABEL step: containers/buildah#5501).
    revision = f"rebuild-{uuid.uuid4().hex[:12]}"
    tag = "localhost/blooio-operator:revision-check"
    out = subprocess.run(
        [str(ROOT / "hack" / "image" / "build.sh")],
        cwd=ROOT,
        env={
            **os.environ,
            "IMAGE": tag,
            "REVISION": revision,
            "ARCHIVE": str(tmp_path / "image.oci.tar"),
        },
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    try:
        assert out.returncode == 0, f"build failed:\n{out.stderr[-4000:]}"
        labels = json.loads(podman("image", "inspect", tag).stdout)[0]["Config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == revision
    finally:
        podman("rmi", "--force", tag, check=False)


def test_image_keeps_its_base_ca_bundle_and_size(image: str) -> None:
    size = podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip()
    size_mb = int(size) / 1e6
    print(f"image size {size_mb:.0f} MB")
    if not os.environ.get("PYTHON_IMAGE"):  # the Debian base made by build-base.sh
        assert size_mb <= SIZE_LIMIT_MB, f"image is {size_mb:.0f} MB"
        base = subprocess.run(
            [str(ROOT / "hack" / "image" / "build-base.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout.splitlines()[-1]
        bundle = "/etc/ssl/certs/ca-certificates.crt"

        def digest(img: str) -> str:
            return podman(
                "run", "--rm", "--network=none", "--entrypoint", "sha256sum", img, bundle
            ).stdout.split()[0]

        # The host's bundle is mounted into the build's RUN steps only, never stored.
        assert digest(image) == digest(base)


def test_runs_as_the_deployment_runs_it(
    operator_container: tuple[Container, str, float],
    pod: Pod,
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
) -> None:
    container, token, started = operator_container

    # Health: every probe endpoint answers 200 within the startup probe's budget.
    endpoints = pod.probe_endpoints()

    def healthy_or_exited() -> str | None:
        if not container.running():
            return "exited"
        if all(http_get(port, path)[0] == 200 for port, path in endpoints):
            return "healthy"
        return None

    outcome = wait_for(
        healthy_or_exited,
        timeout=pod.startup_timeout(),
        interval=0.5,
        message=f"probes {endpoints}",
    )
    assert outcome == "healthy", f"the container exited:\n{container.logs()[-3000:]}"
    print(f"probes answered 200 after {time.monotonic() - started:.1f} s")

    # The container runs with the securityContext in effect.
    status = container.exec("cat", "/proc/1/status")
    uid = str(pod.security["runAsUser"])
    assert any(line.split()[:2] == ["Uid:", uid] for line in status.splitlines()), status
    assert "CapEff:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    root_mount = next(
        line
        for line in container.exec("cat", "/proc/1/mountinfo").splitlines()
        if line.split()[4] == "/"
    )
    assert " ro," in f" {root_mount.split()[5]},", root_mount

    # A BlooioWebhook becomes Ready, its Secret holding the simulator's current secret.
    hooks = Webhooks(kube_api, namespace)
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})

    def is_ready() -> str | None:
        obj = hooks.get("orders") or {}
        cond = hooks.condition("orders", "Ready")
        generation = obj.get("metadata", {}).get("generation")
        observed = obj.get("status", {}).get("observedGeneration")
        if cond and cond["status"] == "True" and observed == generation:
            return "ready"
        return None

    wait_for(is_ready, timeout=120, interval=0.5, message="orders Ready")
    ready = hooks.status("orders")
    remote = simulator.webhook(ready["webhookId"])
    assert remote is not None
    secret = hooks.secret_data(ready["secretName"])
    assert secret["signing-secret"] == remote["signing_secret"]
    print(f"Ready after {time.monotonic() - started:.1f} s from container start")

    # Metrics on the manifest's (and Service's) port and path, behind a bearer token
    # (issue 22): none -> 401; one allowed by the shipped metrics-reader role -> 200.
    port, path = pod.metrics_endpoint()
    assert http_get(port, path)[0] == 401
    scraper = metrics_reader_token(kube_api, namespace)
    body = wait_for(
        lambda: (lambda r: r[1] if r[0] == 200 else None)(http_get(port, path, token=scraper)),
        timeout=30,
        message="/metrics with the scraper's token",
    )
    assert "blooio_" in body

    # SIGTERM, as the kubelet sends it: the container stops within the grace period.
    assert container.running()
    stop = time.monotonic()
    podman("kill", "--signal", "TERM", container.name)
    waited = podman("wait", container.name, timeout=pod.grace + 30)
    took = time.monotonic() - stop
    print(f"stopped {took:.1f} s after SIGTERM (grace {pod.grace} s), exit {waited.stdout.strip()}")
    assert took <= pod.grace, f"took {took:.1f} s to stop after SIGTERM"
    assert waited.stdout.strip() == "0", "non-zero exit after SIGTERM"

    # Logs: every line a JSON object; no API key, signing secret or token in them.
    log = container.logs()
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) >= 3, log
    for number, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"log line {number} is not JSON: {line[:300]!r}")
        assert isinstance(rec, dict)
        for field in ("level", "logger", "message"):
            assert isinstance(rec.get(field), str), f"line {number} lacks {field}: {line[:300]}"
    assert any("orders" in line for line in lines), "the webhook's handling is not logged"
    for secret_value in {API_KEY, remote["signing_secret"], token, scraper}:
        for form in (secret_value, base64.b64encode(secret_value.encode()).decode()):
            assert form not in log, f"secret material ({form[:8]}...) in the container log"
