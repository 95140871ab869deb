"""The world one bench size runs in: control plane (audit on), simulator, RBAC, processes.

Each size gets a fresh world (own etcd, audit log and simulator), so sizes do not see
each other's objects. The operator runs as ServiceAccount ``blooio-system/blooio-operator``
bound by the shipped ``deploy/manifests/rbac.yaml``; the floor as
``blooio-bench/blooio-floor`` bound to the same ClusterRole. Their usernames are what the
audit log is filtered by.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

from bench import audit
from bench.kube import Kube
from blooio_operator.devenv.controlplane import ControlPlane, ensure_binary
from blooio_operator.devenv.dev import SimulatorProcess
from blooio_operator.simulator.admin import SimulatorAdmin

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "deploy" / "crds" / "blooio.com_blooiowebhooks.yaml"
RBAC_FILE = ROOT / "deploy" / "manifests" / "rbac.yaml"

OPERATOR_NS, OPERATOR_SA = "blooio-system", "blooio-operator"
FLOOR_NS, FLOOR_SA = "blooio-bench", "blooio-floor"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
FLOOR_USER = f"system:serviceaccount:{FLOOR_NS}:{FLOOR_SA}"
# Two simulator keys = two organisations: the floor's webhooks never show up in the
# operator's drift-check list, and calls can be told apart.
OPERATOR_KEY = "bl_bench_operator_key_0123456789"
FLOOR_KEY = "bl_bench_floor_key_0123456789abcd"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sample:
    t: float  # monotonic
    rss: int
    cpu: float  # user + system seconds
    fds: int = 0  # open file descriptors (sockets, mostly)


class ManagedProcess:
    """A child process (operator or floor) with psutil sampling of RSS and CPU time."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.samples: list[Sample] = []
        self._ps: psutil.Process | None = None
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self.started_at = 0.0
        self.hwm_bytes = 0

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.started_at = time.monotonic()
        self._ps = psutil.Process(self.proc.pid)
        self.samples = []
        self._stop_sampling.clear()
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read_hwm(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return self.hwm_bytes

    def _sample_loop(self) -> None:
        assert self._ps is not None
        while not self._stop_sampling.is_set():
            try:
                with self._ps.oneshot():
                    rss = self._ps.memory_info().rss
                    cpu = self._ps.cpu_times()
                    fds = self._ps.num_fds()
                self.samples.append(Sample(time.monotonic(), rss, cpu.user + cpu.system, fds))
                self.hwm_bytes = max(self.hwm_bytes, self._read_hwm())
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                return
            self._stop_sampling.wait(0.2)

    def sample_now(self) -> Sample:
        assert self._ps is not None
        with self._ps.oneshot():
            rss = self._ps.memory_info().rss
            cpu = self._ps.cpu_times()
        sample = Sample(time.monotonic(), rss, cpu.user + cpu.system)
        self.samples.append(sample)
        self.hwm_bytes = max(self.hwm_bytes, self._read_hwm())
        return sample

    def window(self, t0: float, t1: float) -> dict[str, float]:
        """Peak sampled RSS and CPU seconds used between two monotonic times."""
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        before = [s for s in self.samples if s.t <= t0]
        if not inside:
            return {"peak_rss_mib": 0.0, "cpu_s": 0.0}
        start_cpu = before[-1].cpu if before else inside[0].cpu
        step = max(1, len(inside) // 300)  # at most ~300 points for the chart
        return {
            "peak_rss_mib": round(max(s.rss for s in inside) / 2**20, 1),
            "cpu_s": round(inside[-1].cpu - start_cpu, 2),
            "peak_fds": max(s.fds for s in inside),
            "rss_timeline": [[round(s.t - t0, 2), round(s.rss / 2**20, 1)] for s in inside[::step]],
        }

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> float:
        """Signal the process and wait; returns seconds it took to exit."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0.0
        try:
            self.sample_now()
        except psutil.Error:
            pass
        t = time.monotonic()
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(2)
        return time.monotonic() - t

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def cpu_snapshot(pids: Mapping[str, int | None]) -> dict[str, float]:
    """CPU seconds (user+system) so far of each named process, and of the machine.

    Only ``controlplane`` is counted with its children (the controller-manager); the
    bench's own children (operator, simulator, ...) are named separately.
    """
    out: dict[str, float] = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        total = 0.0
        try:
            root = psutil.Process(pid)
            tree = root.children(recursive=True) if name == "controlplane" else []
            for proc in [root, *tree]:
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        out[name] = total
    machine = psutil.cpu_times()
    out["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process tree between two snapshots; ``other`` = everyone else."""
    delta = {k: round(after[k] - before[k], 2) for k in after if k in before}
    ours = sum(v for k, v in delta.items() if k != "machine")
    delta["other"] = round(max(0.0, delta.get("machine", 0.0) - ours), 2)
    return delta


def wait_http_ok(url: str, timeout: float, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if int(resp.status) == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name}: {url} not OK within {timeout}s:\n{proc.tail()}")


class World:
    """Control plane + simulator + CRD + RBAC for one bench size."""

    def __init__(self, work: Path, *, latency_ms: float) -> None:
        self.work = work
        self.latency_ms = latency_ms
        self.audit_path = work / "audit.log"
        self.audit = audit.AuditLog(self.audit_path)
        self.cp: ControlPlane | None = None
        self.sim: SimulatorProcess | None = None
        self.admin: SimulatorAdmin | None = None
        self.operator_kubeconfig = work / "operator.kubeconfig"
        self.floor_kubeconfig = work / "floor.kubeconfig"
        self.processes: list[ManagedProcess] = []  # stopped by stop(), whatever happened

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        policy = self.work / "audit-policy.yaml"
        policy.write_text(audit.policy_yaml([OPERATOR_USER, FLOOR_USER]))
        self.cp = ControlPlane(
            self.work / "controlplane",
            binary=ensure_binary(),
            extra_apiserver_args=audit.apiserver_args(policy, self.audit_path),
        ).start()
        self.sim = SimulatorProcess(
            self.work / "simulator",
            [OPERATOR_KEY, FLOOR_KEY],
            extra=["--latency-ms", f"{self.latency_ms:g}", "--log-level", "WARNING"],
        ).start()
        self.admin = SimulatorAdmin(self.sim.admin)
        self._kubectl("apply", "-f", str(CRD_FILE))
        self._kubectl(
            "wait",
            "--for=condition=Established",
            "crd/blooiowebhooks.blooio.com",
            "--timeout=60s",
        )

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop(timeout=20)
        if self.admin is not None:
            self.admin.close()
        if self.sim is not None:
            self.sim.stop()
        if self.cp is not None:
            self.cp.stop()

    def pids(self, **extra: int) -> dict[str, int | None]:
        """Process trees whose CPU time is accounted: control plane, simulator, bench, extra."""
        return {
            "controlplane": self.cp.pid if self.cp else None,
            "simulator": self.sim.proc.pid if self.sim and self.sim.proc else None,
            "bench": os.getpid(),
            **extra,
        }

    def _kubectl(self, *args: str) -> None:
        assert self.cp is not None
        subprocess.run(
            ["kubectl", "--kubeconfig", str(self.cp.kubeconfig), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def admin_kube(self, *, limit: int = 64) -> Kube:
        assert self.cp is not None
        info = self.cp.info
        return Kube(info.server, str(info.ca_file), info.token, limit=limit)

    async def setup_identities(self, kube: Kube) -> None:
        """Shipped RBAC for the operator's SA; the floor's SA bound to the same role."""
        assert self.cp is not None
        for ns in (OPERATOR_NS, FLOOR_NS):
            await kube.create_namespace(ns)
        role_name = ""
        for doc in yaml.safe_load_all(RBAC_FILE.read_text()):
            if not doc:
                continue
            if doc["kind"] == "ClusterRole":
                role_name = doc["metadata"]["name"]
                await kube.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", doc)
            elif doc["kind"] == "ClusterRoleBinding":
                await kube.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", doc)
        floor_binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "blooio-bench-floor"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role_name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": FLOOR_SA, "namespace": FLOOR_NS}],
        }
        await kube.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", floor_binding)
        op_token = await kube.service_account_token(OPERATOR_NS, OPERATOR_SA)
        floor_token = await kube.service_account_token(FLOOR_NS, FLOOR_SA)
        self.cp.write_token_kubeconfig(op_token, self.operator_kubeconfig)
        self.cp.write_token_kubeconfig(floor_token, self.floor_kubeconfig)

    # --- the processes -------------------------------------------------------------------

    def operator(self, env_overrides: Mapping[str, str], log_path: Path) -> OperatorHandle:
        assert self.sim is not None
        return OperatorHandle(self, env_overrides, log_path)

    def floor(
        self, namespace: str, log_path: Path, *, blooio_concurrency: int, kube_concurrency: int
    ) -> ManagedProcess:
        assert self.sim is not None
        ready = self.work / f"floor-{namespace}.ready"
        ready.unlink(missing_ok=True)
        env = {**os.environ, "BLOOIO_API_KEY": FLOOR_KEY}
        cmd = [
            sys.executable,
            "-m",
            "bench.floor",
            "--kubeconfig",
            str(self.floor_kubeconfig),
            "--namespace",
            namespace,
            "--api-url",
            self.sim.url,
            "--blooio-concurrency",
            str(blooio_concurrency),
            "--kube-concurrency",
            str(kube_concurrency),
            "--ready-file",
            str(ready),
            "--summary-file",
            str(self.work / f"floor-{namespace}.summary.json"),
        ]
        proc = ManagedProcess("floor", cmd, env, log_path)
        self.processes.append(proc)
        proc.start()
        deadline = time.monotonic() + 60
        while not ready.exists():
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"floor did not start:\n{proc.tail()}")
            time.sleep(0.05)
        return proc


class OperatorHandle:
    """Starts/stops ``python -m blooio_operator run --all-namespaces`` (production entry)."""

    def __init__(self, world: World, env_overrides: Mapping[str, str], log_path: Path) -> None:
        assert world.sim is not None
        self.world = world
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BLOOIO_")},
            "KUBECONFIG": str(world.operator_kubeconfig),
            "BLOOIO_API_URL": world.sim.url,
            "BLOOIO_API_KEY": OPERATOR_KEY,
            **env_overrides,
        }
        self.current: ManagedProcess | None = None

    def start(self, ready_timeout: float = 90.0) -> tuple[ManagedProcess, float]:
        """Start and wait for kopf's liveness endpoint; returns (process, seconds to ready)."""
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "blooio_operator",
            "run",
            "--all-namespaces",
            "--health-port",
            str(port),
        ]
        # cwd: not the checkout, whose operator/ directory would shadow the stdlib module.
        proc = ManagedProcess("operator", cmd, self.env, self.log_path, cwd=self.world.work)
        self.world.processes.append(proc)
        proc.start()
        self.current = proc
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", ready_timeout, proc)
        return proc, time.monotonic() - proc.started_at

    def stop(self) -> float:
        if self.current is None:
            return 0.0
        return self.current.stop(signal.SIGTERM)
