"""Randomized crash and fault runs against one control plane, simulator and operator.

``python -m tests.chaos.run --iterations 100 --seed 7`` starts a local world (the
control plane built from tests/controlplane, the CRD and shipped RBAC, the simulator and
``blooio-operator run`` as the operator's ServiceAccount), then repeats: pick an
operation (create, update, replace, rotate, delete) and a disruption (SIGKILL at a crash
point that operation passes, SIGKILL at a random instant, a Blooio fault, a
kube-apiserver restart), apply both, let the operator converge, and check the
invariants of ``invariants.py`` for every live resource. It prints a summary and exits
non-zero when any count is above zero:

- duplicates: a second webhook at Blooio for a live resource;
- lost secrets: a Ready resource whose Secret is not the webhook's current secret;
- stuck finalizers: a deleted resource still present after the deadline;
- orphans: webhooks at Blooio no resource refers to, after a deletion;
- not converged: a resource that never became Ready for its spec (anything else).

Every problem is repaired after it is counted (duplicate deleted at Blooio, finalizer
released) so one defect is counted once and later runs start clean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from blooio_operator.devenv.dev import sigterm_is_ctrl_c
from tests.chaos.invariants import converged_state, remote_for
from tests.helpers import FAST_OPERATOR_ENV, wait_for
from tests.integration.conftest import OperatorProcess, Simulator
from tests.integration.webhooks import Webhooks

ROTATE = "blooio.com/rotate-secret"
CHANNELS: tuple[str | None, ...] = (None, "ch_a1b2c3d4", "ch_e5f6a7b8")
EVENT_TYPES = ("message.received", "message.sent", "poll.*", "group.*")
OPERATIONS = ("create", "update", "replace", "rotate", "delete")
# The step boundaries (operator/reconcile/crash.py) each operation passes.
CRASH_POINTS: dict[str, tuple[str, ...]] = {
    "create": ("before-create", "after-create", "after-secret"),
    "update": (),
    "replace": ("after-replace-create", "after-secret", "before-replace-delete"),
    "rotate": ("after-rotate",),
    "delete": ("after-remote-delete",),
}
POST = "POST /webhooks"
# Blooio faults; counts keep each one short-lived, so the world heals by itself.
FAULTS: dict[str, list[dict[str, Any]]] = {
    "commit-then-drop": [{"kind": "commit_then_drop", "endpoints": [POST], "count": 1}],
    # Committed after the client's 3 s timeout, inside the operator's recovery delay.
    "hang": [{"kind": "hang", "endpoints": [POST], "seconds": 3.5, "count": 1}],
    # Committed well after recovery listed and found nothing.
    "hang-long": [{"kind": "hang", "endpoints": [POST], "seconds": 6, "count": 1}],
    "connection-reset": [{"kind": "connection_reset", "probability": 0.5, "count": 2}],
    "503-storm": [{"kind": "error", "status": 503, "probability": 0.5, "count": 6}],
    "429-storm": [{"kind": "rate_limit", "probability": 0.6, "retry_after": 1, "count": 6}],
    "latency": [{"kind": "latency", "ms": 800, "jitter_ms": 400, "count": 8}],
}
DISRUPTIONS = ("crash-point", "random-kill", "fault", "apiserver-restart")
DISRUPTION_WEIGHTS = (50, 15, 30, 5)
MAX_LIVE = 6
CONVERGE_SECONDS = 45.0
DELETE_SECONDS = 30.0
EXIT_SECONDS = 20.0


@dataclass
class World:
    """What a chaos run drives: one namespace, the simulator, the operator process."""

    hooks: Webhooks
    sim: Simulator
    operator: OperatorProcess
    restart_apiserver: Callable[[], None] | None = None
    # Every namespace the operator watches (the storm spreads over them); hooks' first.
    namespaces: list[str] = field(default_factory=list)


@dataclass
class Problem:
    run: int
    kind: str
    resource: str
    scenario: str
    detail: str


@dataclass
class Summary:
    seed: int
    runs: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    scenarios: Counter[str] = field(default_factory=Counter)
    crash_points_missed: int = 0
    stopped_early: str = ""

    KINDS = ("duplicates", "lost secrets", "stuck finalizers", "orphans", "not converged")

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or self.runs == 0

    def render(self) -> str:
        lines = [f"chaos summary: seed {self.seed}, {self.runs} runs in {self.seconds:.0f}s"]
        if self.stopped_early:
            lines.append(f"  stopped early: {self.stopped_early}")
        lines.append(f"  {'runs':<18}{self.runs}")
        lines += [f"  {kind:<18}{self.count(kind)}" for kind in self.KINDS]
        lines.append(f"  crash point not reached (operator not killed): {self.crash_points_missed}")
        lines.append(
            "  scenarios: " + ", ".join(f"{k} {v}" for k, v in sorted(self.scenarios.items()))
        )
        for p in self.problems:
            lines.append(f"  ! run {p.run} [{p.scenario}] {p.resource}: {p.kind}: {p.detail}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "runs": self.runs,
            "seconds": round(self.seconds, 1),
            **{kind.replace(" ", "_"): self.count(kind) for kind in self.KINDS},
            "crash_points_missed": self.crash_points_missed,
            "scenarios": dict(self.scenarios),
            "problems": [p.__dict__ for p in self.problems],
            "stopped_early": self.stopped_early,
        }


@dataclass
class Live:
    """A resource the run created and has not deleted (yet)."""

    name: str
    url: str
    rotate_token: str | None = None


class Chaos:
    def __init__(self, world: World, seed: int, *, log: Callable[[str], None] = print) -> None:
        self.world = world
        self.hooks = world.hooks
        self.sim = world.sim
        self.rng = random.Random(seed)  # reproducible scenario choice, not crypto
        self.summary = Summary(seed=seed)
        self.live: dict[str, Live] = {}
        self.serial = 0
        self.log = log
        self.counted: set[str] = set()  # webhook ids already counted as duplicate/orphan

    # --- one run -------------------------------------------------------------------

    def run(self, iterations: int, *, max_seconds: float = 3600.0) -> Summary:
        started = time.monotonic()
        for i in range(1, iterations + 1):
            if time.monotonic() - started > max_seconds:
                self.summary.stopped_early = f"time budget of {max_seconds:.0f}s used up"
                break
            self.iteration(i)
            self.summary.runs = i
        self.finish(self.summary.runs)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def finish(self, run: int) -> None:
        """Delete what is left (checking deletion like any other) so the world ends empty."""
        self.log("cleanup: deleting the remaining resources")
        for live in list(self.live.values()):
            retrying(lambda name=live.name: delete_once(self.hooks, name))
            self.verify_deleted(run, "cleanup", live)
        self.verify_no_strays(run, "cleanup")

    def iteration(self, run: int) -> None:
        op = self.pick_operation()
        disruption = self.rng.choices(DISRUPTIONS, DISRUPTION_WEIGHTS)[0]
        if disruption == "apiserver-restart" and self.world.restart_apiserver is None:
            disruption = "fault"
        if disruption == "crash-point" and not CRASH_POINTS[op]:
            disruption = "random-kill"
        detail = ""
        if disruption == "crash-point":
            detail = self.rng.choice(CRASH_POINTS[op])
        elif disruption == "fault":
            detail = self.rng.choice(sorted(FAULTS))
        scenario = f"{op}/{disruption}{':' + detail if detail else ''}"
        self.summary.scenarios[scenario] += 1
        self.log(f"{time.strftime('%H:%M:%S')} run {run}: {scenario}")
        self.sim.admin.reset_calls()  # the in-flight check below looks at this run only

        operator = self.world.operator
        if disruption == "crash-point":
            operator.restart(BLOOIO_CRASH_POINT=detail)
        elif disruption == "fault":
            self.sim.admin.set_faults(rules=FAULTS[detail])
        target = self.apply(op, run)
        if disruption == "crash-point":
            try:
                code = operator.wait_exit(EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                code = None
            if code != -signal.SIGKILL:
                self.summary.crash_points_missed += 1
                self.log(f"  crash point {detail} not reached (exit code {code})")
            operator.stop()
            operator.start(BLOOIO_CRASH_POINT="")
        elif disruption == "random-kill":
            # The disruption itself, not a wait: SIGKILL at a random instant of the work.
            time.sleep(self.rng.uniform(0.0, 1.5))
            operator.kill()
            operator.start()
        elif disruption == "apiserver-restart":
            time.sleep(self.rng.uniform(0.0, 1.0))
            assert self.world.restart_apiserver is not None
            self.world.restart_apiserver()
        if not operator.alive():
            operator.start(BLOOIO_CRASH_POINT="")

        self.verify(run, scenario, op, target)
        self.sim.admin.clear_faults()

    def pick_operation(self) -> str:
        if not self.live:
            return "create"
        op = self.rng.choice(OPERATIONS)
        if op == "create" and len(self.live) >= MAX_LIVE:
            return "delete"
        return op

    # --- operations ----------------------------------------------------------------------

    def apply(self, op: str, run: int) -> Live:
        """Do ``op`` as a user would (through the Kubernetes API); return the resource."""
        if op == "create":
            self.serial += 1
            live = Live(f"chaos-{self.serial}", f"https://chaos.example.com/r{self.serial}")
            spec: dict[str, Any] = {"url": live.url, "eventTypes": self.event_types()}
            channel = self.rng.choice(CHANNELS)
            if channel:
                spec["channelId"] = channel
            retrying(lambda: self.hooks.get(live.name) or self.hooks.create(live.name, spec))
            self.live[live.name] = live
            return live
        live = self.live[self.rng.choice(sorted(self.live))]
        if op == "update":
            patch: dict[str, Any] = {"eventTypes": self.event_types()}
            if self.rng.random() < 0.5:
                live.url = f"https://chaos.example.com/r{live.name.split('-')[1]}/v{run}"
                patch["url"] = live.url
            retrying(lambda: self.hooks.patch(live.name, {"spec": patch}))
        elif op == "replace":
            current = ((self.hooks.get(live.name) or {}).get("spec") or {}).get("channelId")
            channel = self.rng.choice([c for c in CHANNELS if c != current])
            retrying(lambda: self.hooks.patch(live.name, {"spec": {"channelId": channel}}))
        elif op == "rotate":
            live.rotate_token = f"run-{run}"
            annotations = {ROTATE: live.rotate_token}
            retrying(
                lambda: self.hooks.patch(live.name, {"metadata": {"annotations": annotations}})
            )
        elif op == "delete":
            retrying(lambda: delete_once(self.hooks, live.name))
        return live

    def event_types(self) -> list[str]:
        return sorted(self.rng.sample(EVENT_TYPES, self.rng.randint(1, 3)))

    # --- checks ----------------------------------------------------------------------------

    def verify(self, run: int, scenario: str, op: str, target: Live) -> None:
        if op == "delete":
            self.verify_deleted(run, scenario, target)
        for live in list(self.live.values()):
            self.verify_live(run, scenario, live)
        if self.settle_blooio():
            # A request Blooio held (a hang) finished after the check: judge its effect
            # (a late commit) now, in the run that caused it.
            for live in list(self.live.values()):
                self.verify_live(run, scenario, live)
        self.verify_no_strays(run, scenario)

    def settle_blooio(self) -> bool:
        """Wait until Blooio holds no request any more; True if it held one."""

        def in_flight() -> int:
            return sum(1 for c in self.sim.calls() if c["duration_ms"] is None)

        if not in_flight():
            return False
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not in_flight(), timeout=20, interval=0.2, message="Blooio idle")
        return True

    def verify_live(self, run: int, scenario: str, live: Live) -> None:
        def probe() -> dict[str, Any]:
            status = converged_state(self.hooks, self.sim, live.name, live.url)
            if live.rotate_token is not None:
                assert status.get("rotateToken") == live.rotate_token, (
                    f"rotation {live.rotate_token} not done (status {status.get('rotateToken')})"
                )
            return status

        try:
            wait_for(probe, timeout=CONVERGE_SECONDS, interval=0.25, message=f"{live.name}")
        except AssertionError as exc:
            message = str(exc)
            remote = remote_for(self.sim, live.url)
            if len(remote) > 1:
                self.problem(run, "duplicates", live, scenario, message)
                obj = self.hooks.get(live.name) or {}
                keep = (obj.get("status") or {}).get("webhookId")
                for hook in remote:
                    if hook["id"] != keep:
                        self.counted.add(hook["id"])
                        self.sim.admin.remove(hook["id"])
            elif "signing-secret" in message:
                self.problem(run, "lost secrets", live, scenario, message)
            else:
                self.problem(run, "not converged", live, scenario, message)
            self.repair(live)

    def verify_deleted(self, run: int, scenario: str, live: Live) -> None:
        self.live.pop(live.name, None)
        try:
            wait_for(
                lambda: self.hooks.get(live.name) is None,
                timeout=DELETE_SECONDS,
                message=f"{live.name} deleted",
            )
        except AssertionError as exc:
            self.problem(run, "stuck finalizers", live, scenario, str(exc))
            self.release(live.name)
        left = [w["id"] for w in remote_for(self.sim, live.url)]
        if left:
            self.problem(run, "orphans", live, scenario, f"left at Blooio: {left}")
            for webhook_id in left:
                self.counted.add(webhook_id)
                self.sim.admin.remove(webhook_id)

    def verify_no_strays(self, run: int, scenario: str) -> None:
        """Every webhook at Blooio belongs to a live resource (late duplicates included)."""

        def strays() -> list[dict[str, Any]]:
            owned = set()
            for live in self.live.values():
                obj = self.hooks.get(live.name) or {}
                owned.add((obj.get("status") or {}).get("webhookId"))
            return [w for w in self.sim.webhooks() if w["id"] not in owned | self.counted]

        # The operator may still be sweeping up; give it a moment before judging.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not strays(), timeout=10, interval=0.5, message="no strays")
        urls = {live.url: live for live in self.live.values()}
        for hook in strays():
            owner = urls.get(hook["url"])
            kind = "duplicates" if owner is not None else "orphans"
            resource = owner or Live("(none)", hook["url"])
            self.problem(run, kind, resource, scenario, f"unreferenced webhook {hook['id']}")
            self.counted.add(hook["id"])
            self.sim.admin.remove(hook["id"])

    def problem(self, run: int, kind: str, live: Live, scenario: str, detail: str) -> None:
        self.summary.problems.append(Problem(run, kind, live.name, scenario, detail[:400]))
        self.log(f"  PROBLEM {kind}: {live.name}: {detail[:400]}")

    def repair(self, live: Live) -> None:
        """Take a broken resource out of the run so later runs are judged on their own."""
        self.live.pop(live.name, None)
        with contextlib.suppress(Exception):
            self.hooks.delete(live.name)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: self.hooks.get(live.name) is None, timeout=DELETE_SECONDS)
        if self.hooks.get(live.name) is not None:
            self.release(live.name)
        for hook in remote_for(self.sim, live.url):
            self.counted.add(hook["id"])
            self.sim.admin.remove(hook["id"])

    def release(self, name: str) -> None:
        """Drop the finalizer of a resource that is stuck (after it was counted)."""
        with contextlib.suppress(Exception):
            self.hooks.patch(name, {"metadata": {"finalizers": None}})
        with contextlib.suppress(AssertionError):
            wait_for(lambda: self.hooks.get(name) is None, timeout=10)


def delete_once(hooks: Webhooks, name: str) -> None:
    try:
        hooks.delete(name)
    except k8s.ApiException as exc:
        if exc.status != 404:  # a retried delete whose first answer was lost
            raise


def retrying(call: Callable[[], object]) -> None:
    """A user's kubectl retries while the apiserver restarts; so does the chaos run."""
    wait_for(lambda: call() or True, timeout=60, interval=0.5, message="Kubernetes API call")


# --- a local world of its own ------------------------------------------------------------------


@contextlib.contextmanager
def local_world(
    work: Path,
    *,
    crd: Path | None = None,
    namespaces: Sequence[str] = ("chaos",),
    env: Mapping[str, str] | None = None,
) -> Iterator[World]:
    """Control plane + CRD + shipped RBAC + simulator + operator, torn down afterwards.

    The operator watches ``namespaces`` (one ``--namespace`` each); ``env`` overrides
    FAST_OPERATOR_ENV (the storm scales its periodic check with the resource count).
    Every world starts empty: what a previous run left in ``work`` (etcd data, the
    simulator's state, logs) is removed first, so ``make storm`` can run again.
    """
    from kubernetes import config as k8s_config

    for leftover in ("controlplane", "simulator"):
        shutil.rmtree(work / leftover, ignore_errors=True)
    (work / "operator.log").unlink(missing_ok=True)  # appended to across restarts

    from blooio_operator.devenv.controlplane import ControlPlane, ensure_binary
    from tests.integration.conftest import (
        API_KEY,
        CRD_DIR,
        MANIFESTS,
        kubeconfig_for_token,
        load_yaml_docs,
        token_for,
    )

    cp = ControlPlane(work / "controlplane", binary=ensure_binary()).start()
    sim: Simulator | None = None
    operator: OperatorProcess | None = None
    try:
        api = k8s_config.new_client_from_config(config_file=str(cp.kubeconfig))
        crd = crd or CRD_DIR / "blooio.com_blooiowebhooks.yaml"
        kubectl = ["kubectl", "--kubeconfig", str(cp.kubeconfig)]
        subprocess.run([*kubectl, "apply", "-f", str(crd)], check=True, timeout=60)
        custom = k8s.CustomObjectsApi(api)
        wait_for(
            lambda: (
                custom.list_cluster_custom_object("blooio.com", "v1alpha1", "blooiowebhooks")
                is not None
            ),
            timeout=60,
            message="blooiowebhooks served",
        )
        core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
        for ns in ("blooio-system", *namespaces):
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        for doc in load_yaml_docs(MANIFESTS / "rbac.yaml"):
            if doc["kind"] == "ClusterRole":
                rbac.create_cluster_role(doc)
            elif doc["kind"] == "ClusterRoleBinding":
                rbac.create_cluster_role_binding(doc)
        token = token_for(api, "blooio-system", "blooio-operator")
        kubeconfig = kubeconfig_for_token(cp, token, work / "operator-kubeconfig")
        sim = Simulator(work / "simulator", [API_KEY])
        operator_env = {
            **FAST_OPERATOR_ENV,
            **(env or {}),
            "BLOOIO_API_URL": sim.url,
            "BLOOIO_API_KEY": API_KEY,
        }
        args = [arg for ns in namespaces for arg in ("--namespace", ns)]
        operator = OperatorProcess(kubeconfig, work / "operator.log", operator_env, args)
        operator.start()
        yield World(
            Webhooks(api, namespaces[0]),
            sim,
            operator,
            restart_apiserver=cp.restart,
            namespaces=list(namespaces),
        )
    finally:
        if operator is not None:
            operator.stop()
        if sim is not None:
            sim.stop()
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    sigterm_is_ctrl_c()  # SIGTERM stops the world it started, as Ctrl-C does
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__)
    parser.add_argument("--iterations", type=int, default=100, help="runs to do (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="scenario seed (default: random)")
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="stop after this long (default 3600)"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="keep logs here")
    parser.add_argument("--report", type=Path, default=None, help="write the summary as JSON")
    parser.add_argument(
        "--crd", type=Path, default=None, help="apply this CRD instead of deploy/crds (a draft)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        print(f"chaos: seed {seed}, {args.iterations} iterations, logs in {work}", flush=True)
        with local_world(work, crd=args.crd) as world:
            chaos = Chaos(world, seed, log=lambda line: print(line, flush=True))
            summary = chaos.run(args.iterations, max_seconds=args.max_seconds)
        print(summary.render())
        if args.report is not None:
            args.report.write_text(json.dumps(summary.to_json(), indent=2))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
