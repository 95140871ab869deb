"""A real single-node cluster on this machine, for the end-to-end test (``make e2e``).

Pieces: the control plane of tests/controlplane (etcd + kube-apiserver + a
controller-manager running the controllers Deployments need), containerd and runc from
Debian, a kubelet and a kube-scheduler built from tests/node (the same
``k8s.io/kubernetes`` module set), the CNI bridge plugin, and a pause image built here.

Everything lives under one work directory: containerd's root, state and socket, the
kubelet's root and pod logs, the CNI configuration and IPAM state, logs. Outside it, and
removed again by :meth:`LocalNode.down` (only what this node created):

- the bridge ``blooioe2e0`` (pods 10.213.0.0/24, gateway 10.213.0.1, also the node IP);
- the nat chain ``BLOOIO-E2E``: it sends the ``kubernetes`` Service (10.0.0.1:443) from
  pods to the API server on 127.0.0.1 (``route_localnet`` on the bridge only). There is
  no kube-proxy and no cluster DNS: other Services do not route, pods are reached by IP;
- cgroups under ``/blooio-e2e`` in every hierarchy (the kubelet's ``cgroupRoot``);
- paths built into kubelet and containerd: ``/var/lib/kubelet/device-plugins``,
  ``/var/log/containers``, ``/run/containerd/s`` (only if they did not exist before).

``state.json`` in the work directory records what was created and the daemons' pids, so
a run killed with SIGKILL is cleaned up by the next :meth:`LocalNode.up` (or ``down``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from blooio_operator.devenv.controlplane import (
    K8S_VERSION,
    ControlPlane,
    ControlPlaneError,
    cache_dir,
)

NODE_NAME = "blooio-e2e"
BRIDGE = "blooioe2e0"
POD_SUBNET = "10.213.0.0/24"
NODE_IP = "10.213.0.1"  # the bridge's address: gateway of the pods and the node's IP
SERVICE_RANGE = "10.0.0.0/24"  # tests/controlplane's --service-cluster-ip-range
KUBERNETES_SERVICE_IP = "10.0.0.1"
CGROUP_ROOT = "blooio-e2e"
NAT_CHAIN = "BLOOIO-E2E"
PAUSE_IMAGE = "localhost/blooio-pause:e2e"
SYNC_FREQUENCY = "10s"  # how often the kubelet refreshes mounted Secrets (default 1m)
NODE_CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "node-lifecycle-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
)
_SOURCES = ("go.mod", "go.sum", "main.go", "pause/main.go")
_BUILT_IN_PATHS = ("/var/lib/kubelet/device-plugins", "/var/log/containers", "/run/containerd/s")
_PR_SET_PDEATHSIG = 1


class NodeError(RuntimeError):
    """The node could not be built, started or cleaned up."""


def find_node_source(start: Path | None = None) -> Path:
    for parent in [start or Path.cwd(), *(start or Path.cwd()).parents]:
        if (parent / "tests" / "node" / "go.mod").is_file():
            return parent / "tests" / "node"
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "tests" / "node" / "go.mod").is_file():
            return parent / "tests" / "node"
    raise NodeError("tests/node/go.mod not found: run from a source checkout")


def ensure_node_binaries(src: Path | None = None) -> tuple[Path, Path]:
    """Build ``node`` (kubelet + scheduler) and ``pause`` once per source hash."""
    src = src or find_node_source()
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode())
        digest.update((src / name).read_bytes())
    target = cache_dir() / "node" / digest.hexdigest()[:16]
    node, pause = target / "node", target / "pause"
    if node.is_file() and pause.is_file():
        return node, pause
    go = shutil.which("go")
    if go is None:
        raise NodeError("Go 1.26+ is required to build tests/node (go not on PATH)")
    target.mkdir(parents=True, exist_ok=True)
    pkg = "k8s.io/component-base/version"
    ldflags = f"-s -w -X {pkg}.gitVersion={K8S_VERSION} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor=36"
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    for out, pkg_path in ((node, "."), (pause, "./pause")):
        tmp = out.with_suffix(".tmp")
        cmd = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), pkg_path]
        res = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise NodeError(f"go build {pkg_path} failed:\n{res.stderr[-4000:]}")
        tmp.rename(out)
    return node, pause


def pause_image_archive(pause_binary: Path, dest: Path, name: str = PAUSE_IMAGE) -> Path:
    """Write an OCI archive of a one-file image (``/pause``), deterministic bytes."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = pause_binary.read_bytes()
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    layer = layer_buf.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    files = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": index,
        f"blobs/sha256/{layer_digest[7:]}": layer,
        f"blobs/sha256/{config_digest[7:]}": config,
        f"blobs/sha256/{manifest_digest[7:]}": manifest,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path, blob in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(blob), 0o644, 0
            tar.addfile(info, io.BytesIO(blob))
    return dest


def _pdeathsig() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise NodeError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()[-2000:]}")
    return res


def _cgroup_mounts() -> list[Path]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split(" ")[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(pre.split(" ")[4]))
    return mounts


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4].replace("\\040", " ")
        if point.startswith(prefix) or point == str(root):
            points.append(point)
    return points


class LocalNode:
    """Control plane + containerd + kubelet + scheduler under ``work_dir`` (root only)."""

    def __init__(self, work_dir: Path, *, ready_timeout: float = 180.0) -> None:
        self.work_dir = work_dir.resolve()
        self.ready_timeout = ready_timeout
        self.logs = self.work_dir / "logs"
        self.controlplane: ControlPlane | None = None
        self.timings: dict[str, float] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._state: dict[str, Any] = {}
        self._node_bin: Path | None = None
        self._pause_bin: Path | None = None

    # ----------------------------------------------------------------- paths

    @property
    def kubeconfig(self) -> Path:
        if self.controlplane is None:
            raise NodeError("node not started")
        return self.controlplane.kubeconfig

    @property
    def containerd_socket(self) -> Path:
        return self.work_dir / "containerd" / "containerd.sock"

    @property
    def _state_file(self) -> Path:
        return self.work_dir / "state.json"

    def _save_state(self) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=2))
        tmp.rename(self._state_file)

    # ------------------------------------------------------------------- up

    def build(self) -> None:
        t0 = time.monotonic()
        self._node_bin, self._pause_bin = ensure_node_binaries()
        self.timings["node_binaries_s"] = time.monotonic() - t0

    def up(self) -> Self:
        if os.geteuid() != 0:
            raise NodeError("the local node needs root (containerd, mounts, cgroups, bridge)")
        for tool in ("containerd", "ctr", "runc", "iptables", "ip"):
            if shutil.which(tool) is None:
                raise NodeError(f"{tool} not found (Debian: containerd, runc, iptables, iproute2)")
        if not Path("/usr/lib/cni/bridge").is_file():
            raise NodeError("CNI plugins not found (Debian: containernetworking-plugins)")
        if self._state_file.is_file():  # a previous run that could not clean up
            self.down()
        if self._node_bin is None:
            self.build()
        t0 = time.monotonic()
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.logs.mkdir(parents=True)
        self._state = {
            "created": [p for p in _BUILT_IN_PATHS if not os.path.lexists(p)],
            "pids": {},
        }
        self._save_state()
        self._setup_network()
        self._setup_cgroups()
        self._start_containerd()
        self.import_image(
            pause_image_archive(self._pause_path, self.work_dir / "images" / "pause.oci.tar")
        )
        self._start_controlplane()
        self._start_kubelet_and_scheduler()
        self._wait_node_ready()
        self.timings["node_up_s"] = time.monotonic() - t0
        return self

    @property
    def _pause_path(self) -> Path:
        if self._pause_bin is None:
            raise NodeError("binaries not built")
        return self._pause_bin

    def _setup_network(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise NodeError(f"bridge {BRIDGE} already exists (another node running?)")
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._state["bridge"] = BRIDGE
        self._save_state()
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")
        cni = self.work_dir / "cni"
        (cni / "net.d").mkdir(parents=True)
        conf = {
            "cniVersion": "1.0.0",
            "name": "blooio-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    # The bridge already has NODE_IP; isGateway would also switch on
                    # the host's net.ipv4.ip_forward, which nothing here needs (pods
                    # talk to each other over the bridge and to this host only).
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                        # No default route: pods reach this machine only.
                        "routes": [{"dst": SERVICE_RANGE}],
                        "dataDir": str(cni / "ipam"),
                    },
                }
            ],
        }
        (cni / "net.d" / "10-blooio-e2e.conflist").write_text(json.dumps(conf, indent=2))

    def _setup_nat(self, apiserver_port: int) -> None:
        _run("iptables", "-t", "nat", "-N", NAT_CHAIN)
        self._state["nat_chain"] = NAT_CHAIN
        self._save_state()
        _run(
            "iptables", "-t", "nat", "-A", NAT_CHAIN, "-d", KUBERNETES_SERVICE_IP, "-p", "tcp",
            "--dport", "443", "-j", "DNAT", "--to-destination", f"127.0.0.1:{apiserver_port}",
        )  # fmt: skip
        _run("iptables", "-t", "nat", "-I", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN)

    def _setup_cgroups(self) -> None:
        made = []
        for mount in _cgroup_mounts():
            path = mount / CGROUP_ROOT
            if not path.exists():
                path.mkdir()
            made.append(str(path))
        self._state["cgroups"] = made
        self._save_state()

    def _spawn(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                list(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig,  # single-threaded launcher
                env=env,
            )
        finally:
            log.close()
        self._procs[name] = proc
        self._state["pids"][name] = proc.pid
        self._save_state()

    def _check_alive(self, name: str) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-40:]
            raise NodeError(f"{name} exited with {proc.returncode}:\n" + "\n".join(tail))

    def _start_containerd(self) -> None:
        root = self.work_dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this machine does not give.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc")}"
  Root = "{root}/runc"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.work_dir}/cni/net.d"
"""
        root.mkdir(parents=True)
        (root / "config.toml").write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(root / "config.toml")])
        deadline = time.monotonic() + 30
        while self._ctr("version", check=False).returncode != 0:
            self._check_alive("containerd")
            if time.monotonic() > deadline:
                raise NodeError("containerd did not answer within 30 s")
            time.sleep(0.2)

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args,
                    check=check)  # fmt: skip

    def import_image(self, archive: Path, name: str | None = None) -> None:
        """Import an OCI/docker archive into containerd's ``k8s.io`` namespace."""
        t0 = time.monotonic()
        args = ["images", "import"]
        if name is not None:
            args += ["--base-name", name.rsplit(":", 1)[0]]
        self._ctr(*args, str(archive))
        self.timings[f"import_{archive.name}_s"] = time.monotonic() - t0

    def images(self) -> list[str]:
        return self._ctr("images", "ls", "-q").stdout.split()

    def _start_controlplane(self) -> None:
        self.controlplane = ControlPlane(
            self.work_dir / "controlplane",
            extra_args=["--node", "--controllers", ",".join(NODE_CONTROLLERS)],
        )
        try:
            self.controlplane.start()
        except ControlPlaneError as exc:
            raise NodeError(str(exc)) from exc
        self._state["pids"]["controlplane"] = self.controlplane.pid
        self._save_state()
        port = int(self.controlplane.server.rsplit(":", 1)[1])
        self._setup_nat(port)

    def _start_kubelet_and_scheduler(self) -> None:
        if self.controlplane is None or self._node_bin is None:
            raise NodeError("control plane not started")
        kubelet_dir = self.work_dir / "kubelet"
        kubelet_dir.mkdir()
        self.kubelet_healthz = _free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine: cgroup v1 (hybrid), no CAP_SYS_RESOURCE, nofile hard limit 20000.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": "/" + CGROUP_ROOT,
            "failSwapOn": False,
            "maxOpenFiles": 20000,
            "makeIPTablesUtilChains": False,
            "enforceNodeAllocatable": [],
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            # Images exist only locally (no registry): never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": SYNC_FREQUENCY,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP,
            "port": _free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.controlplane.info.ca_file)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.work_dir / "pod-logs"),
            "volumePluginDir": str(kubelet_dir / "volume-plugins"),
            "resolvConf": "",
            "serializeImagePulls": False,
        }
        (kubelet_dir / "config.yaml").write_text(json.dumps(config, indent=2))
        self._spawn(
            "kubelet",
            [
                str(self._node_bin),
                "kubelet",
                f"--config={kubelet_dir / 'config.yaml'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={kubelet_dir / 'root'}",
                f"--cert-dir={kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )
        self._spawn(
            "scheduler",
            [
                str(self._node_bin),
                "scheduler",
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("kubectl", "--kubeconfig", str(self.kubeconfig), *args, check=check)

    def _wait_node_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
        while True:
            for name in ("kubelet", "scheduler"):
                self._check_alive(name)
            res = self.kubectl("get", "node", NODE_NAME, "-o", f"jsonpath={jsonpath}", check=False)
            if res.returncode == 0 and res.stdout.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise NodeError(f"node {NODE_NAME} not Ready within {self.ready_timeout}s")
            time.sleep(0.5)

    # ----------------------------------------------------------------- down

    def down(self) -> list[str]:
        """Stop everything and remove what :meth:`up` created; returns the problems left."""
        if not self._state and self._state_file.is_file():
            self._state = json.loads(self._state_file.read_text())
        state = self._state
        problems: list[str] = []
        pids: dict[str, int] = state.get("pids", {})
        for name in ("scheduler", "kubelet"):
            self._stop_pid(name, pids.get(name), timeout=10)
        if self.containerd_socket.exists() and pids.get("containerd"):
            self._remove_containers()
        if self.controlplane is not None:
            self.controlplane.stop(timeout=5)
        else:
            self._stop_pid("controlplane", pids.get("controlplane"), timeout=5, group=True)
        self._stop_pid("containerd", pids.get("containerd"), timeout=10)
        self._kill_cgroup_procs(state.get("cgroups", []))
        self._kill_shims()
        for point in sorted(_mounts_under(self.work_dir), key=len, reverse=True):
            if _run("umount", point, check=False).returncode != 0:
                _run("umount", "-l", point, check=False)
        if leftover := _mounts_under(self.work_dir):
            problems.append(f"mounts left: {leftover}")
        for path in state.get("cgroups", []):
            problems += self._remove_cgroup(Path(path))
        if state.get("nat_chain"):
            _run("iptables", "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN,
                 check=False)  # fmt: skip
            _run("iptables", "-t", "nat", "-F", NAT_CHAIN, check=False)
            if _run("iptables", "-t", "nat", "-X", NAT_CHAIN, check=False).returncode != 0:
                problems.append(f"iptables chain {NAT_CHAIN} not removed")
        bridge_left = Path(f"/sys/class/net/{BRIDGE}").exists()
        if (
            state.get("bridge")
            and bridge_left
            and _run("ip", "link", "del", BRIDGE, check=False).returncode
        ):
            problems.append(f"bridge {BRIDGE} not removed")
        for path in state.get("created", []):
            shutil.rmtree(path, ignore_errors=True)
            parent = Path(path).parent
            if parent.name in ("kubelet", "containerd") and parent.is_dir():
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only if empty: /var/lib/kubelet, /run/containerd
        cp_log = self.work_dir / "controlplane" / "controlplane.log"
        if cp_log.is_file():
            self.logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(cp_log, self.logs / "controlplane.log")
        if not problems:
            for sub in ("containerd", "kubelet", "controlplane", "cni", "images"):
                shutil.rmtree(self.work_dir / sub, ignore_errors=True)
            self._state_file.unlink(missing_ok=True)
        self._state = {}
        self._procs = {}
        return problems

    def _stop_pid(self, name: str, pid: int | None, *, timeout: float, group: bool = False) -> None:
        proc = self._procs.get(name)
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return
        if pid is None or not self._is_ours(pid):
            return
        try:
            os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _is_ours(self, pid: int) -> bool:
        """A pid from state.json still runs one of our binaries with our work dir."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return str(self.work_dir) in cmdline.replace("\0", " ")

    def _remove_containers(self) -> None:
        tasks = self._ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self._ctr("tasks", "kill", "-a", "-s", "SIGKILL", task, check=False)
        for task in tasks:
            self._ctr("tasks", "delete", "-f", task, check=False)
        containers = self._ctr("containers", "ls", "-q", check=False).stdout.split()
        if containers:
            self._ctr("containers", "delete", *containers, check=False)

    def _kill_cgroup_procs(self, cgroups: list[str]) -> None:
        for _ in range(50):
            pids: set[int] = set()
            for base in cgroups:
                for procs in Path(base).rglob("cgroup.procs"):
                    try:
                        pids.update(int(p) for p in procs.read_text().split())
                    except OSError:
                        continue
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def _kill_shims(self) -> None:
        marker = str(self.containerd_socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "containerd-shim" in cmdline and marker in cmdline:
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    @staticmethod
    def _remove_cgroup(root: Path) -> list[str]:
        if not root.exists():
            return []
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
        for path in [*reversed(dirs), root]:
            for _ in range(20):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
        return [f"cgroup {root} not removed"] if root.exists() else []

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()
