"""The storm with two replicas (issue 20): every disruption targets the current leader.

``python -m tests.chaos.storm --replicas 2 --ha-mode kill-leader|partition --seed N``
runs the storm of ``storm.py`` (same fleet, changes, Blooio faults, apiserver restart,
same judging) against two ``blooio-operator run --leader-elect`` processes sharing one
Lease in blooio-system (the shipped Role of deploy/manifests/leader-election.yaml) with a
short term: Lease 4 s, renew deadline 3 s, retry period 0.5 s. Each process has its own
API key of the same Blooio organisation (``api_key_id`` in the simulator's call log tells
them apart) and the claim seal's key they share, as the Deployment's replicas do.

Instead of SIGKILLing "the operator", each of the ``--kills`` disruptions first finds the
current leader (the Lease's holder) and waits until the other process is up as a standby:

- ``kill-leader``: SIGKILL the leader and start it again at once, as a new standby (a
  new holder identity). The failover time is from the kill to the Lease naming the other
  process.
- ``partition``: SIGSTOP the leader for longer than the Lease (lease + 1-4 s, and at
  least until the standby has taken the Lease over), then SIGCONT. The resumed process
  must find its term over on its own clock and exit with status 3 without a Blooio call;
  it is then started again as a standby. Counted per partition: its exit status, the time
  from SIGCONT to its exit, and its Blooio calls between SIGCONT and its restart (must be
  0: its key is used by no one else in that window).

A "kubelet" thread restarts a process that exited on its own (a leader whose renewals
failed while the apiserver restarted exits 3 by design), as the Deployment would.
The storm fails if a fleet count is above zero (as ever), if a disruption found no
leader or saw no failover, or if a resumed leader did not exit 3 or sent anything.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s

from blooio_operator.leader import EXIT_TERM_OVER
from tests.chaos.run import World, local_world
from tests.chaos.storm import Storm, StormConfig, StormReport, stamp
from tests.helpers import wait_for
from tests.integration.conftest import API_KEY, OperatorProcess, Simulator

HA_MODES = ("kill-leader", "partition")
LEASE_NS = "blooio-system"
LEASE_NAME = "blooio-operator-storm"
OTHER_KEY = "bl_test_storm_second_replica_key_0123"
LEASE_SECONDS = 4.0
LEASE_ENV = {
    "BLOOIO_LEADER_ELECT": "true",
    "BLOOIO_LEADER_ELECTION_NAMESPACE": LEASE_NS,
    "BLOOIO_LEADER_ELECTION_LEASE_NAME": LEASE_NAME,
    "BLOOIO_LEASE_DURATION_SECONDS": f"{LEASE_SECONDS:g}",
    "BLOOIO_LEASE_RENEW_DEADLINE_SECONDS": "3",
    "BLOOIO_LEASE_RETRY_PERIOD_SECONDS": "0.5",
    # The claim seal's key, shared as the Deployment's replicas share their env (by
    # default it derives from the API key, and the two replicas' keys differ here).
    "BLOOIO_CLAIM_KEY": "storm-claim-key-shared-by-both-replicas-0123456789",
}
STANDBY_LINE = "standby: waiting for Lease"


class Replica:
    """One operator process of the pair (restarted in place: same key, same log)."""

    def __init__(self, name: str, op: OperatorProcess, key_id: str) -> None:
        self.name, self.op, self.key_id = name, op, key_id
        self.lock = threading.Lock()  # held while the disruptor or the kubelet acts on it
        self.unplanned_exits: list[int] = []
        self.starts = 1  # both are started before the pair is made

    def start(self) -> None:
        self.op.start()
        self.starts += 1

    def pid(self) -> int | None:
        proc = self.op.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def identity(self) -> str | None:
        """The running process's holder identity, once it has logged it (its log is
        appended to across restarts: the last of ``starts`` standby lines is its own)."""
        lines = [line for line in self.op.logs().splitlines() if STANDBY_LINE in line]
        if self.pid() is None or len(lines) < self.starts:
            return None
        return lines[-1].rsplit(" as ", 1)[-1].strip()


class Pair:
    """The two replicas and the Lease they share."""

    def __init__(self, api: k8s.ApiClient, replicas: list[Replica]) -> None:
        self.coordination = k8s.CoordinationV1Api(api)
        self.replicas = replicas
        self.stopping = threading.Event()
        self.kubelet = threading.Thread(target=self.restart_exited, name="kubelet", daemon=True)

    def holder(self) -> str:
        with contextlib.suppress(Exception):  # the apiserver restarting: no holder known
            lease = self.coordination.read_namespaced_lease(LEASE_NAME, LEASE_NS)
            return str((lease.spec and lease.spec.holder_identity) or "")
        return ""

    def of(self, identity: str) -> Replica | None:
        """The replica whose running process is ``identity`` (not a predecessor's)."""
        return next((r for r in self.replicas if identity and r.identity() == identity), None)

    def other(self, replica: Replica) -> Replica:
        return next(r for r in self.replicas if r is not replica)

    def restart_exited(self) -> None:
        """What the kubelet does for a Deployment: start a container that exited."""
        while not self.stopping.wait(0.5):  # pacing: a kubelet's look at its containers
            for replica in self.replicas:
                if not replica.lock.acquire(blocking=False):
                    continue  # the disruptor is at it (a kill, a partition)
                try:
                    proc = replica.op.proc
                    if proc is None or proc.poll() is None or self.stopping.is_set():
                        continue
                    replica.unplanned_exits.append(int(proc.returncode))
                    replica.start()
                finally:
                    replica.lock.release()

    def stop(self) -> None:
        self.stopping.set()
        if self.kubelet.is_alive():
            self.kubelet.join()
        for replica in self.replicas:
            pid = replica.pid()
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)  # a stopped process would not see SIGTERM
            replica.op.stop()


@dataclass
class HAWorld(World):
    pair: Pair | None = None


def second_key(sim: Simulator) -> tuple[str, str]:
    """Add OTHER_KEY to API_KEY's organisation; the ids of both keys."""
    keys = f"{sim.admin.base_url.rstrip('/')}/_sim/keys"
    first = httpx.post(keys, json={"api_key": API_KEY}, timeout=10).json()
    second = httpx.post(
        keys, json={"api_key": OTHER_KEY, "organization": first["organization_id"]}, timeout=10
    ).json()
    assert second["organization_id"] == first["organization_id"]
    return str(first["api_key_id"]), str(second["api_key_id"])


def apply_lease_rbac(api: k8s.ApiClient) -> None:
    from tests.integration.conftest import MANIFESTS, load_yaml_docs

    rbac = k8s.RbacAuthorizationV1Api(api)
    for doc in load_yaml_docs(MANIFESTS / "leader-election.yaml"):
        namespace = doc["metadata"]["namespace"]
        if doc["kind"] == "Role":
            rbac.create_namespaced_role(namespace, doc)
        elif doc["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(namespace, doc)


def start_pair(api: k8s.ApiClient, a: Replica, b: Replica) -> Pair:
    """``a`` is running; once it leads, start ``b`` and wait until it stands by; then the
    kubelet thread. Call ``Pair.stop()`` before the processes are stopped otherwise."""
    pair = Pair(api, [a, b])
    wait_for(lambda: pair.holder().startswith(f"{a.name}_"), timeout=90, message=f"{a.name} leads")
    b.op.start()
    wait_for(b.identity, timeout=90, message=f"{b.name} stands by")
    pair.kubelet.start()
    return pair


@contextlib.contextmanager
def ha_world(work: Path, *, namespaces: Sequence[str], env: Mapping[str, str]) -> Iterator[HAWorld]:
    """``run.local_world`` with leader election: its operator is replica ``op-a``; the
    Lease Role, a second key and replica ``op-b`` are added; ``op-a`` leads first."""
    (work / "operator-b.log").unlink(missing_ok=True)
    a_env = {**env, **LEASE_ENV, "POD_NAME": "op-a"}
    with local_world(work, namespaces=namespaces, env=a_env) as world:
        apply_lease_rbac(world.hooks.api)
        a_id, b_id = second_key(world.sim)
        a = world.operator
        b_env = {**a.env, "BLOOIO_API_KEY": OTHER_KEY, "POD_NAME": "op-b"}
        b = OperatorProcess(a.kubeconfig, work / "operator-b.log", b_env, list(a.args))
        pair = Pair(world.hooks.api, [])
        try:
            pair = start_pair(world.hooks.api, Replica("op-a", a, a_id), Replica("op-b", b, b_id))
            yield HAWorld(
                world.hooks,
                world.sim,
                a,
                restart_apiserver=world.restart_apiserver,
                namespaces=world.namespaces,
                pair=pair,
            )
        finally:
            pair.stop()  # before local_world stops op-a: the kubelet must not restart it
            b.stop()


@dataclass
class Disruption:
    kind: str  # "kill" or "partition"
    victim: str
    failover_seconds: float | None = None  # from the kill/stop to the other's Lease
    paused_seconds: float | None = None
    exit_status: int | None = None  # partition: the resumed process's exit status
    exit_seconds: float | None = None  # from SIGCONT to its exit
    calls_after_resume: int | None = None  # its Blooio calls between SIGCONT and restart
    problem: str = ""

    def render(self) -> str:
        def sec(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}s"

        text = f"{self.kind} {self.victim}: failover {sec(self.failover_seconds)}"
        if self.kind == "partition":
            text += (
                f", paused {sec(self.paused_seconds)}, exit {self.exit_status} "
                f"{sec(self.exit_seconds)} after SIGCONT, calls after resume "
                f"{self.calls_after_resume}"
            )
        return text + (f"  ! {self.problem}" if self.problem else "")


@dataclass
class HAStormReport(StormReport):
    replicas: int = 2
    ha_mode: str = ""
    disruptions: list[Disruption] = field(default_factory=list)
    unplanned_exits: dict[str, list[int]] = field(default_factory=dict)

    @property
    def failovers(self) -> list[float]:
        return [d.failover_seconds for d in self.disruptions if d.failover_seconds is not None]

    @property
    def ha_problems(self) -> list[str]:
        return [f"{d.kind} {d.victim}: {d.problem}" for d in self.disruptions if d.problem]

    @property
    def failed(self) -> bool:
        return super().failed or bool(self.ha_problems)

    def render(self) -> str:
        failovers = self.failovers
        lines = [
            super().render(),
            f"  HA: 2 replicas, mode {self.ha_mode}, {len(self.disruptions)} disruptions of the "
            f"leader, failover min/mean/max "
            + (
                f"{min(failovers):.1f}/{sum(failovers) / len(failovers):.1f}/{max(failovers):.1f}s"
                if failovers
                else "-"
            ),
            "  exits on their own (restarted by the kubelet thread): "
            + (", ".join(f"{k} {v}" for k, v in self.unplanned_exits.items() if v) or "none"),
        ]
        lines += [f"    {d.render()}" for d in self.disruptions]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "replicas": self.replicas,
            "ha_mode": self.ha_mode,
            "disruptions": [d.__dict__ for d in self.disruptions],
            "failover_seconds": [round(f, 2) for f in self.failovers],
            "unplanned_exits": self.unplanned_exits,
            "ha_problems": self.ha_problems,
            "failed": self.failed,
        }


class HAStorm(Storm):
    """The storm, with the disruptor aimed at the current leader of a pair."""

    def __init__(self, world: HAWorld, config: StormConfig, seed: int, mode: str, **kw: Any):
        super().__init__(world, config, seed, **kw)
        assert world.pair is not None
        assert mode in HA_MODES
        self.pair = world.pair
        self.mode = mode
        base = self.report
        self.report = HAStormReport(
            seed=base.seed, resources=base.resources, namespaces=base.namespaces, ha_mode=mode
        )

    def run(self) -> StormReport:
        report = super().run()
        assert isinstance(report, HAStormReport)
        report.unplanned_exits = {r.name: list(r.unplanned_exits) for r in self.pair.replicas}
        return report

    def operators_up(self) -> None:
        for replica in self.pair.replicas:
            with replica.lock:
                if not replica.op.alive():
                    replica.start()

    def operator_logs(self) -> str:
        return "".join(r.op.logs() for r in self.pair.replicas)

    def disruptor(self) -> None:
        """Every ``kill_gap``: find the leader, then kill or partition it (module doc)."""
        while self.created < 0.05 * self.config.resources:
            if self.aborted.wait(0.2):  # pacing: the first disruption hits a fleet being made
                return
        rng = random.Random(self.seed + 1)
        restart_at = {
            (i + 1) * self.config.kills // (self.config.apiserver_restarts + 1)
            for i in range(self.config.apiserver_restarts)
        }
        for n in range(1, self.config.kills + 1):
            if self.aborted.wait(rng.uniform(*self.config.kill_gap)):  # the disruptions' rhythm
                return
            disruption = self.disrupt_leader(rng.uniform(1.0, 4.0))
            self.report.kills = n
            assert isinstance(self.report, HAStormReport)
            self.report.disruptions.append(disruption)
            self.note(disruption.kind, None, disruption.render())
            self.log(f"{stamp()} disruption {n}: {disruption.render()}")
            if n in restart_at and self.world.restart_apiserver is not None:
                began = time.monotonic()
                self.note("apiserver-restart", None, "begin")
                self.world.restart_apiserver()
                self.note("apiserver-restart", None, "done")
                self.report.apiserver_restarts += 1
                self.log(f"{stamp()} kube-apiserver restarted ({time.monotonic() - began:.1f}s)")

    def current_leader(self) -> tuple[str, Replica] | None:
        """The holder and its replica, once the other replica stands by (at most 60 s)."""
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not self.aborted.is_set():
            holder = self.pair.holder()
            leader = self.pair.of(holder)
            if leader is not None and self.pair.other(leader).identity() is not None:
                return holder, leader
            time.sleep(0.2)  # pacing: a new leader or a restarted standby is on its way
        return None

    def disrupt_leader(self, extra_pause: float) -> Disruption:
        kind = "kill" if self.mode == "kill-leader" else "partition"
        found = self.current_leader()
        if found is None:
            return Disruption(kind, "-", problem="no leader with a standby within 60 s")
        holder, leader = found
        disruption = Disruption(kind, leader.name)
        with leader.lock:  # the kubelet thread keeps its hands off the victim
            began = time.monotonic()
            if kind == "kill":
                leader.op.kill()
                leader.start()
                disruption.failover_seconds = self.wait_failover(holder, began)
            else:
                self.partition(leader, holder, began, extra_pause, disruption)
        if disruption.failover_seconds is None and not disruption.problem:
            disruption.problem = "the Lease was not taken over within 60 s"
        return disruption

    def wait_failover(self, old: str, since: float) -> float | None:
        deadline = since + 60.0
        while time.monotonic() < deadline and not self.aborted.is_set():
            holder = self.pair.holder()
            if holder and holder != old:
                return time.monotonic() - since
            time.sleep(0.1)  # pacing: the failover is what is measured
        return None

    def partition(
        self, leader: Replica, holder: str, began: float, extra: float, d: Disruption
    ) -> None:
        pid = leader.pid()
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            d.failover_seconds = self.wait_failover(holder, began)
            resume_at = began + LEASE_SECONDS + extra
            if self.aborted.wait(max(0.0, resume_at - time.monotonic())):  # paused longer
                return  # than the Lease, by design
        finally:
            resumed_wall, resumed = time.time(), time.monotonic()
            os.kill(pid, signal.SIGCONT)
        d.paused_seconds = resumed - began
        try:
            d.exit_status = leader.op.wait_exit(30)
            d.exit_seconds = time.monotonic() - resumed
        except subprocess.TimeoutExpired:
            d.problem = "still running 30 s after SIGCONT"
            leader.op.kill()
        restarted_wall = time.time()
        leader.start()
        d.calls_after_resume = sum(
            1
            for c in self.world.sim.calls()
            if c.get("api_key_id") == leader.key_id and resumed_wall <= c["ts"] < restarted_wall
        )
        if d.exit_status is not None and d.exit_status != EXIT_TERM_OVER:
            d.problem = f"exited {d.exit_status}, not {EXIT_TERM_OVER}"
        if d.calls_after_resume:
            d.problem = f"{d.calls_after_resume} Blooio calls after SIGCONT"
