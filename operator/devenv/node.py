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

This module runs the node (:class:`LocalNode`: up, down, state). Beside it:
``node_config`` (names, addresses and each daemon's configuration, with the reasons for
the machine-specific knobs), ``node_build`` (the Go binaries and the pause image) and
``node_host`` (commands, cgroups, mounts and leftover processes).

``state.json`` in the work directory records what was created and the daemons' pids, so
a run killed with SIGKILL is cleaned up by the next :meth:`LocalNode.up` (or ``down``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from blooio_operator.devenv.controlplane import ControlPlane, ControlPlaneError
from blooio_operator.devenv.node_build import PAUSE_IMAGE, ensure_node_binaries, pause_image_archive
from blooio_operator.devenv.node_config import (
    BRIDGE,
    CGROUP_ROOT,
    KUBERNETES_SERVICE_IP,
    NAT_CHAIN,
    NODE_CONTROLLERS,
    NODE_IP,
    NODE_NAME,
    cni_conflist,
    containerd_toml,
    kubelet_config,
)
from blooio_operator.devenv.node_host import (
    NodeError,
    cgroup_mounts,
    free_port,
    kill_cgroup_procs,
    kill_shims,
    mounts_under,
    pdeathsig,
    remove_cgroup,
    run,
)

__all__ = ["BRIDGE", "CGROUP_ROOT", "NAT_CHAIN", "PAUSE_IMAGE", "LocalNode", "NodeError"]

# Paths built into the kubelet and containerd, outside the work dir: removed by down()
# only if up() created them.
_BUILT_IN_PATHS = ("/var/lib/kubelet/device-plugins", "/var/log/containers", "/run/containerd/s")


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
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._state["bridge"] = BRIDGE
        self._save_state()
        run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")
        cni = self.work_dir / "cni"
        (cni / "net.d").mkdir(parents=True)
        conf = cni_conflist(cni)
        (cni / "net.d" / "10-blooio-e2e.conflist").write_text(json.dumps(conf, indent=2))

    def _setup_nat(self, apiserver_port: int) -> None:
        run("iptables", "-t", "nat", "-N", NAT_CHAIN)
        self._state["nat_chain"] = NAT_CHAIN
        self._save_state()
        run(
            "iptables", "-t", "nat", "-A", NAT_CHAIN, "-d", KUBERNETES_SERVICE_IP, "-p", "tcp",
            "--dport", "443", "-j", "DNAT", "--to-destination", f"127.0.0.1:{apiserver_port}",
        )  # fmt: skip
        run("iptables", "-t", "nat", "-I", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN)

    def _setup_cgroups(self) -> None:
        made = []
        for mount in cgroup_mounts():
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
                preexec_fn=pdeathsig,  # single-threaded launcher
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
        config = containerd_toml(root, self.containerd_socket, self.work_dir / "cni" / "net.d")
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
        return run("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args,
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
        self.kubelet_healthz = free_port()
        config = kubelet_config(
            work_dir=self.work_dir,
            containerd_socket=self.containerd_socket,
            client_ca=self.controlplane.info.ca_file,
            healthz_port=self.kubelet_healthz,
        )
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
        return run("kubectl", "--kubeconfig", str(self.kubeconfig), *args, check=check)

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
        kill_cgroup_procs(state.get("cgroups", []))
        kill_shims(self.containerd_socket)
        for point in sorted(mounts_under(self.work_dir), key=len, reverse=True):
            if run("umount", point, check=False).returncode != 0:
                run("umount", "-l", point, check=False)
        if leftover := mounts_under(self.work_dir):
            problems.append(f"mounts left: {leftover}")
        for path in state.get("cgroups", []):
            problems += remove_cgroup(Path(path))
        if state.get("nat_chain"):
            run("iptables", "-t", "nat", "-D", "PREROUTING", "-i", BRIDGE, "-j", NAT_CHAIN,
                 check=False)  # fmt: skip
            run("iptables", "-t", "nat", "-F", NAT_CHAIN, check=False)
            if run("iptables", "-t", "nat", "-X", NAT_CHAIN, check=False).returncode != 0:
                problems.append(f"iptables chain {NAT_CHAIN} not removed")
        bridge_left = Path(f"/sys/class/net/{BRIDGE}").exists()
        if (
            state.get("bridge")
            and bridge_left
            and run("ip", "link", "del", BRIDGE, check=False).returncode
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

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()
