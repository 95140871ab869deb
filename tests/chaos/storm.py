"""Storm: hundreds of resources, every kind of change at once, kills, faults, then count.

``python -m tests.chaos.storm --seed 7 [--resources 300 --namespaces 3 --kills 12]
[--report out.json]`` builds a local world of its own (``run.local_world``: control
plane, CRD, shipped RBAC, simulator, operator as its ServiceAccount watching every
storm namespace), and then, all at the same time:

- creates ``--resources`` BlooioWebhooks spread over the namespaces, paced over
  ``--create-seconds`` from a few threads (random eventTypes, channel, some suspended);
- from a few other threads, while creation is still going on, 10-30 (``--ops``) of each:
  deletes, url edits, eventTypes edits, channel changes (replacements), rotations
  (annotation ``blooio.com/rotate-secret``), Secret deletions and suspend toggles;
- SIGKILLs the operator ``--kills`` times, 2-6 s apart, starting it again each time,
  with one kube-apiserver restart half way;
- with probabilistic Blooio faults on every endpoint the whole time (commit-then-drop on
  create, rotate, PATCH and DELETE, 4 s hangs that commit after the client's 3 s
  timeout, 503s, connection resets, 429s) plus bursts of 429s and 503s.

After the last kill the faults stay on while the operator works through the fleet, until
90% of it is Ready (at most ``--tail-seconds``): between kills 2-6 s apart it gets little
done, and the bulk of its work should meet the faults too. Then the faults are switched
off and the fleet is judged from the outside only (the Kubernetes API and the simulator's
admin API, ``invariants.fleet_problems``) every 2 s until every count is zero and stays
zero for 8 s (longer than a 4 s hang's late commit), or ``--converge-seconds`` are up.
Counts: duplicates, orphans, shared webhooks, not deleted, not ready (at its generation),
rotations not done, spec mismatches, lost secrets. It prints a summary (seed, kills,
faults fired, time to converge) and exits non-zero when any count is above zero.

Operator settings: FAST_OPERATOR_ENV, except the periodic Secret check, which is scaled
with the fleet (``resources / 30`` seconds, at least 2 s): every resource costs one Secret
GET per interval, and at 300 resources a 2 s interval is 150 GETs/s against an apiserver
that shares two cores with everything else; at 10 s it is 30/s, and a deleted Secret is
still restored within seconds of the storm's end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from blooio_operator.devenv.dev import sigterm_is_ctrl_c
from tests.chaos.invariants import (
    FLEET_KINDS,
    ROTATE_ANNOTATION,
    FleetProblem,
    Key,
    fleet_problems,
    key_of,
    secret_name_of,
)
from tests.chaos.run import CHANNELS, EVENT_TYPES, World, delete_once, local_world, retrying
from tests.helpers import FAST_OPERATOR_ENV
from tests.integration.webhooks import GROUP, PLURAL, VERSION, Webhooks

OP_KINDS = ("delete", "url", "event-types", "channel", "rotate", "secret-delete", "suspend")
ALL = None  # a fault rule without "endpoints" applies to every /v4 request
CREATE, ROTATE = "POST /webhooks", "POST /webhooks/{id}/secret/rotate"
PATCH, DELETE = "PATCH /webhooks/{id}", "DELETE /webhooks/{id}"
GET_ONE, LIST = "GET /webhooks/{id}", "GET /webhooks"


def base_faults() -> list[dict[str, Any]]:
    """Faults on every endpoint for the whole storm; probabilities drawn by the simulator."""

    def rule(kind: str, probability: float, endpoints: list[str] | None, **extra: Any) -> Any:
        return {
            "kind": kind,
            "probability": probability,
            **({"endpoints": endpoints} if endpoints else {}),
            **extra,
        }

    return [
        # Late commits: held 4 s, then processed after the client (3 s timeout) gave up.
        rule("hang", 0.05, [CREATE], seconds=4),
        rule("hang", 0.03, [ROTATE, PATCH, DELETE, GET_ONE, LIST], seconds=4),
        rule("error", 0.05, ALL, status=503),
        rule("connection_reset", 0.03, ALL),
        rule("rate_limit", 0.04, ALL, retry_after=1),
        # Committed, answer lost.
        rule("commit_then_drop", 0.10, [CREATE]),
        rule("commit_then_drop", 0.12, [ROTATE]),
        rule("commit_then_drop", 0.05, [PATCH, DELETE]),
    ]


def operator_env(resources: int) -> dict[str, str]:
    """FAST_OPERATOR_ENV with the Secret check interval scaled to the fleet (module doc)."""
    interval = max(2.0, resources / 30)
    return {**FAST_OPERATOR_ENV, "BLOOIO_SECRET_CHECK_INTERVAL_SECONDS": f"{interval:g}"}


@dataclass
class StormConfig:
    resources: int = 300
    namespaces: int = 3
    kills: int = 12
    kill_gap: tuple[float, float] = (2.0, 6.0)
    apiserver_restarts: int = 1
    create_seconds: float = 40.0
    create_threads: int = 3
    ops: tuple[int, int] = (10, 30)  # resources per kind of operation
    op_threads: int = 3
    faults: bool = True
    converge_seconds: float = 300.0
    stable_seconds: float = 8.0
    poll_seconds: float = 2.0
    # After the kills, faults stay on until this share of the live fleet is Ready (or for
    # tail_seconds at most), so that the bulk of the work meets them: the operator does
    # little between kills 2-6 s apart.
    tail_ready_share: float = 0.9
    tail_seconds: float = 120.0


@dataclass
class Resource:
    ns: str
    name: str
    serial: int
    created: bool = False
    deleted: bool = False
    url_version: int = 0

    @property
    def key(self) -> Key:
        return (self.ns, self.name)

    @property
    def url(self) -> str:
        return f"https://storm.example.com/{self.ns}/{self.name}/v{self.url_version}"


@dataclass
class StormReport:
    seed: int
    commit: str = ""
    operator_env: dict[str, str] = field(default_factory=dict)
    resources: int = 0
    namespaces: int = 0
    kills: int = 0
    apiserver_restarts: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    ops_skipped: Counter[str] = field(default_factory=Counter)
    op_errors: list[str] = field(default_factory=list)
    fault_bursts: int = 0
    faults_fired: dict[str, int] = field(default_factory=dict)
    blooio_calls: dict[str, int] = field(default_factory=dict)
    storm_seconds: float = 0.0
    tail_seconds: float = 0.0
    ready_share_at_faults_off: float = 0.0
    converge_seconds: float | None = None
    judged_seconds: float = 0.0
    problems: list[FleetProblem] = field(default_factory=list)
    operator_log_errors: int = 0
    operator_log_tracebacks: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for p in self.problems if p.kind == kind)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or self.converge_seconds is None

    def render(self) -> str:
        converged = (
            f"{self.converge_seconds:.1f}s after faults off"
            if self.converge_seconds is not None
            else f"NOT converged ({self.judged_seconds:.0f}s after faults off)"
        )
        lines = [
            f"storm summary: seed {self.seed}, {self.resources} resources in "
            f"{self.namespaces} namespaces, {self.kills} operator kills, "
            f"{self.apiserver_restarts} apiserver restart(s), storm {self.storm_seconds:.0f}s "
            f"+ {self.tail_seconds:.0f}s with faults until "
            f"{self.ready_share_at_faults_off:.0%} Ready, {converged}",
            "  operations: " + ", ".join(f"{k} {self.ops[k]}" for k in OP_KINDS),
        ]
        if self.commit:
            lines.insert(1, f"  tree: {self.commit}")
        if self.ops_skipped:
            lines.append(
                "  skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops_skipped.items()))
            )
        lines.append(
            f"  faults fired ({sum(self.faults_fired.values())}, {self.fault_bursts} bursts): "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.faults_fired.items()))
        )
        lines.append(
            "  Blooio calls: " + ", ".join(f"{k} {v}" for k, v in sorted(self.blooio_calls.items()))
        )
        lines.append(
            f"  operator log: {self.operator_log_errors} ERROR lines, "
            f"{self.operator_log_tracebacks} tracebacks"
        )
        lines += [f"  {kind:<20}{self.count(kind)}" for kind in FLEET_KINDS]
        for error in self.op_errors[:10]:
            lines.append(f"  storm op error: {error}")
        for p in self.problems[:40]:
            lines.append(f"  ! {p.kind}: {p.resource}: {p.detail}")
        if len(self.problems) > 40:
            lines.append(f"  ... and {len(self.problems) - 40} more")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "commit": self.commit,
            "operator_env": self.operator_env,
            "resources": self.resources,
            "namespaces": self.namespaces,
            "kills": self.kills,
            "apiserver_restarts": self.apiserver_restarts,
            "ops": dict(self.ops),
            "ops_skipped": dict(self.ops_skipped),
            "op_errors": self.op_errors,
            "fault_bursts": self.fault_bursts,
            "faults_fired": self.faults_fired,
            "blooio_calls": self.blooio_calls,
            "storm_seconds": round(self.storm_seconds, 1),
            "tail_seconds": round(self.tail_seconds, 1),
            "ready_share_at_faults_off": round(self.ready_share_at_faults_off, 3),
            "converge_seconds": (
                None if self.converge_seconds is None else round(self.converge_seconds, 1)
            ),
            "judged_seconds": round(self.judged_seconds, 1),
            "counts": {kind.replace(" ", "_"): self.count(kind) for kind in FLEET_KINDS},
            "problems": [p.__dict__ for p in self.problems],
            "operator_log_errors": self.operator_log_errors,
            "operator_log_tracebacks": self.operator_log_tracebacks,
            "failed": self.failed,
        }


class Storm:
    def __init__(
        self,
        world: World,
        config: StormConfig,
        seed: int,
        *,
        log: Callable[[str], None] = print,
        dump_dir: Path | None = None,
    ) -> None:
        self.world = world
        self.config = config
        self.seed = seed
        self.log = log
        self.dump_dir = dump_dir  # journal and final state go here, for diagnosis
        self.journal: list[str] = []  # what the storm did, when (kept for the dump)
        self.rng = random.Random(seed)  # reproducible plan; thread timing is not
        self.lock = threading.Lock()
        self.namespaces = world.namespaces or [world.hooks.ns]
        self.hooks = {ns: Webhooks(world.hooks.api, ns) for ns in self.namespaces}
        self.report = StormReport(
            seed=seed, resources=config.resources, namespaces=len(self.namespaces)
        )
        self.resources = [
            Resource(self.namespaces[i % len(self.namespaces)], f"storm-{i}", i)
            for i in range(config.resources)
        ]
        self.created = 0
        self.creators_left = config.create_threads
        self.done = threading.Event()  # the storm's work is over: stop kills and bursts
        # Ctrl-C or SIGTERM: every thread stops at its next step, before the world goes.
        self.aborted = threading.Event()
        self.rotations = 0

    # --- the storm --------------------------------------------------------------------------

    def run(self) -> StormReport:
        sim = self.world.sim
        if self.config.faults:
            sim.admin.set_faults(seed=self.seed, rules=base_faults())
        started = time.monotonic()
        threads = [
            threading.Thread(target=self.creator, args=(i,), name=f"create-{i}")
            for i in range(self.config.create_threads)
        ]
        plan = self.plan_ops()
        threads += [
            threading.Thread(target=self.operator_of_changes, args=(plan,), name=f"ops-{i}")
            for i in range(self.config.op_threads)
        ]
        disruptor = threading.Thread(target=self.disruptor, name="kills")
        weather = threading.Thread(target=self.fault_bursts, name="bursts")
        progress = threading.Thread(target=self.progress, args=(started,), name="progress")
        everyone = [*threads, disruptor, weather, progress]
        for thread in everyone:
            thread.start()
        try:
            for thread in threads:
                thread.join()
            disruptor.join()  # every kill is done (they go on after creation if it was quick)
            self.operators_up()
            self.report.storm_seconds = time.monotonic() - started
            if self.config.faults:
                self.fault_tail()
        except BaseException:  # KeyboardInterrupt (Ctrl-C, SIGTERM): no thread may outlive
            self.aborted.set()  # the world, or restart an operator or apiserver after it
            raise
        finally:
            self.done.set()
            for thread in everyone:
                while thread.is_alive():
                    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C or SIGTERM
                        thread.join()
        if self.config.faults:
            faults = sim.admin.faults()
            sim.admin.clear_faults()
            fired: Counter[str] = Counter()
            for rule in faults.get("rules", []):
                where = ",".join(rule.get("endpoints") or []) or "*"
                fired[f"{rule['kind']}[{where}]"] += int(rule.get("fired") or 0)
            self.report.faults_fired = {k: v for k, v in fired.items() if v}
        self.log(f"{stamp()} storm over after {time.monotonic() - started:.0f}s; faults off")
        self.judge()
        self.report.blooio_calls = dict(sim.admin.counts())
        logs = self.operator_logs()
        self.report.operator_log_errors = sum(
            1 for line in logs.splitlines() if " ERROR " in line or line.startswith("ERROR")
        )
        self.report.operator_log_tracebacks = logs.count("Traceback (most recent call last)")
        return self.report

    def operators_up(self) -> None:
        """After the disruptions: every operator process runs (storm_ha has two)."""
        if not self.world.operator.alive():
            self.world.operator.start()

    def operator_logs(self) -> str:
        return self.world.operator.logs()

    def plan_ops(self) -> list[tuple[float, str]]:
        """(share of the fleet created before it may run, kind), in the order to run them."""
        lo, hi = self.config.ops
        plan = []
        for kind in OP_KINDS:
            count = self.rng.randint(lo, hi)
            if kind == "delete":
                count = min(count, self.config.resources // 4)
            plan += [(self.rng.uniform(0.05, 1.0), kind) for _ in range(count)]
        plan.sort()
        return plan

    def creator(self, index: int) -> None:
        try:
            self.create_share(index)
        finally:
            with self.lock:
                self.creators_left -= 1

    def create_share(self, index: int) -> None:
        mine = self.resources[index :: self.config.create_threads]
        gap = self.config.create_seconds / max(1, len(mine))
        rng = random.Random(self.seed * 1000 + index)
        for resource in mine:
            if self.aborted.is_set():
                return
            spec: dict[str, Any] = {"url": resource.url}
            if rng.random() < 0.8:
                spec["eventTypes"] = sorted(rng.sample(EVENT_TYPES, rng.randint(1, 3)))
            channel = rng.choice(CHANNELS)
            if channel:
                spec["channelId"] = channel
            if rng.random() < 0.1:
                spec["suspend"] = True
            try:
                self.create_one(resource, spec)
            except AssertionError as exc:
                self.op_error(f"create {resource.name}: {exc}")
                continue
            with self.lock:
                resource.created = True
                self.created += 1
            if self.aborted.wait(rng.uniform(0.5, 1.5) * gap):  # pacing: creation spread over time
                return

    def create_one(self, resource: Resource, spec: dict[str, Any]) -> None:
        hooks = self.hooks[resource.ns]
        retrying(lambda: hooks.get(resource.name) or hooks.create(resource.name, spec))
        self.note("create", resource, json.dumps(spec, sort_keys=True))

    def operator_of_changes(self, plan: list[tuple[float, str]]) -> None:
        """Take the next planned change; run it once enough of the fleet exists."""
        while not self.aborted.is_set():
            with self.lock:
                if not plan:
                    return
                share, kind = plan.pop(0)
            while self.created < share * self.config.resources and self.creators_left:
                if self.aborted.wait(0.2):  # pacing: a change waits for its share of the fleet
                    return
            self.change(kind)
            time.sleep(self.rng.uniform(0.0, 0.3))

    def pick(self, kind: str) -> Resource | None:
        with self.lock:
            choices = [r for r in self.resources if r.created and not r.deleted]
            if not choices:
                return None
            resource = self.rng.choice(choices)
            if kind == "delete":
                resource.deleted = True  # judged as deleted from now on
            elif kind == "url":
                resource.url_version += 1
            return resource

    def change(self, kind: str) -> None:
        if kind == "secret-delete":
            if self.delete_some_secret():
                with self.lock:
                    self.report.ops[kind] += 1
            else:
                self.report.ops_skipped["secret-delete (no Secret in 90 s)"] += 1
            return
        resource = self.pick(kind)
        if resource is None:
            self.report.ops_skipped[kind] += 1
            return
        hooks = self.hooks[resource.ns]
        name = resource.name
        detail = ""
        try:
            if kind == "delete":
                retrying(lambda: delete_once(hooks, name))
            elif kind == "url":
                detail = resource.url
                self.patch(resource, {"spec": {"url": resource.url}})
            elif kind == "event-types":
                types = sorted(self.rng.sample(EVENT_TYPES, self.rng.randint(1, 3)))
                detail = str(types)
                self.patch(resource, {"spec": {"eventTypes": types}})
            elif kind == "channel":
                spec = self.spec_of(resource)
                channel = self.rng.choice([c for c in CHANNELS if c != spec.get("channelId")])
                detail = f"{spec.get('channelId')} -> {channel}"
                self.patch(resource, {"spec": {"channelId": channel}})
            elif kind == "rotate":
                with self.lock:
                    self.rotations += 1
                    token = f"storm-{self.seed}-{self.rotations}"
                detail = token
                self.patch(resource, {"metadata": {"annotations": {ROTATE_ANNOTATION: token}}})
            elif kind == "suspend":
                suspended = not self.spec_of(resource).get("suspend")
                detail = f"suspend {suspended}"
                self.patch(resource, {"spec": {"suspend": suspended}})
        except (AssertionError, k8s.ApiException) as exc:
            if kind == "delete":
                resource.deleted = False  # not judged as deleted: the storm's delete failed
            self.op_error(f"{kind} {resource.ns}/{name}: {exc}")
            return
        self.note(kind, resource, detail)
        with self.lock:
            self.report.ops[kind] += 1

    def note(self, what: str, resource: Resource | None, detail: str = "") -> None:
        when = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
        who = f"{resource.ns}/{resource.name}" if resource else "-"
        with self.lock:
            self.journal.append(f"{when} {what} {who} {detail}".rstrip())

    def spec_of(self, resource: Resource) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            obj = self.hooks[resource.ns].get(resource.name)
            assert obj is not None or resource.deleted, f"{resource.name} is gone"
            return obj or {}

        obj: dict[str, Any] = {}
        retrying(lambda: obj.update(read()))
        spec: dict[str, Any] = obj.get("spec") or {}
        return spec

    def patch(self, resource: Resource, body: dict[str, Any]) -> None:
        def call() -> None:
            try:
                self.hooks[resource.ns].patch(resource.name, body)
            except k8s.ApiException as exc:
                if exc.status != 404 or not resource.deleted:  # deleted by another thread
                    raise

        retrying(call)

    def delete_some_secret(self) -> bool:
        """Delete the Secret of a random live resource that has one (waiting for one)."""
        deadline = time.monotonic() + 90.0
        core = self.world.hooks.core
        while time.monotonic() < deadline:
            ns = self.rng.choice(self.namespaces)
            try:
                names = {
                    s.metadata.name for s in core.list_namespaced_secret(ns).items if s.metadata
                }
                with self.lock:
                    candidates = [
                        r
                        for r in self.resources
                        if r.ns == ns and r.created and not r.deleted and secret_of(r) in names
                    ]
                if candidates:
                    victim = self.rng.choice(candidates)
                    core.delete_namespaced_secret(secret_of(victim), ns)
                    self.note("secret-delete", victim, secret_of(victim))
                    return True
            except Exception as exc:  # the apiserver restarting, a Secret gone meanwhile
                self.log(f"  secret-delete in {ns}: {exc!r}"[:200])
            time.sleep(1.0)  # pacing: the operator has written no Secret here yet
        return False

    def op_error(self, message: str) -> None:
        with self.lock:
            self.report.op_errors.append(message[:300])
        self.log(f"  storm op error: {message[:300]}")

    def disruptor(self) -> None:
        """SIGKILL the operator every 2-6 s and start it again; restart the apiserver once."""
        while self.created < 0.05 * self.config.resources:
            if self.aborted.wait(0.2):  # pacing: the first kill hits a fleet being created
                return
        rng = random.Random(self.seed + 1)
        restart_at = {
            (i + 1) * self.config.kills // (self.config.apiserver_restarts + 1)
            for i in range(self.config.apiserver_restarts)
        }
        operator = self.world.operator
        for kill in range(1, self.config.kills + 1):
            if self.aborted.wait(rng.uniform(*self.config.kill_gap)):  # the disruption's rhythm
                return
            operator.kill()
            operator.start()
            self.report.kills = kill
            self.note("kill", None, f"operator SIGKILLed and started again ({kill})")
            self.log(f"{stamp()} kill {kill}: operator SIGKILLed and started again")
            if kill in restart_at and self.world.restart_apiserver is not None:
                began = time.monotonic()
                self.note("apiserver-restart", None, "begin")
                self.world.restart_apiserver()
                self.note("apiserver-restart", None, "done")
                self.report.apiserver_restarts += 1
                self.log(f"{stamp()} kube-apiserver restarted ({time.monotonic() - began:.1f}s)")

    def fault_bursts(self) -> None:
        """Now and then a burst: a 429 storm or a run of 503s on every endpoint."""
        if not self.config.faults:
            return
        rng = random.Random(self.seed + 2)
        while not self.done.wait(rng.uniform(6.0, 12.0)):
            # 20-60 requests at 300 resources; scaled with the fleet, or a small fleet's
            # few calls would be all burst (the smoke saw 62% of its calls faulted).
            count = max(5, round(rng.randint(20, 60) * self.config.resources / 300))
            with contextlib.suppress(Exception):
                if rng.random() < 0.6:
                    self.world.sim.admin.add_fault(
                        "rate_limit", probability=0.8, retry_after=1, count=count
                    )
                else:
                    self.world.sim.admin.add_fault(
                        "error", status=503, probability=0.7, count=count
                    )
                self.report.fault_bursts += 1
                self.note("fault-burst", None, f"count {count}")

    def progress(self, started: float) -> None:
        while not self.done.wait(10.0):
            self.log(
                f"{stamp()} +{time.monotonic() - started:.0f}s: created {self.created}/"
                f"{self.config.resources}, changes {sum(self.report.ops.values())}, "
                f"kills {self.report.kills}"
            )

    def fault_tail(self) -> None:
        began = time.monotonic()
        share = 0.0
        self.log(f"{stamp()} kills over; faults stay on while the operator works")
        while time.monotonic() - began < self.config.tail_seconds:
            with contextlib.suppress(Exception):
                share = self.ready_share()
            if share >= self.config.tail_ready_share:
                break
            time.sleep(self.config.poll_seconds)  # pacing between outside looks
        self.report.tail_seconds = time.monotonic() - began
        self.report.ready_share_at_faults_off = share

    def ready_share(self) -> float:
        with self.lock:
            deleted = {r.key for r in self.resources if r.deleted}
        live = ready = 0
        for ns in self.namespaces:
            listed: Any = self.world.hooks.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL
            )
            for obj in listed["items"]:
                if key_of(obj) in deleted:
                    continue
                live += 1
                status = obj.get("status") or {}
                ready += (
                    any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in status.get("conditions", [])
                    )
                    and status.get("observedGeneration") == obj["metadata"]["generation"]
                )
        return ready / live if live else 1.0

    # --- judging from the outside ---------------------------------------------------------------

    def observe(self) -> list[FleetProblem]:
        objects: list[dict[str, Any]] = []
        secrets: dict[Key, dict[str, str]] = {}
        api = self.world.hooks
        for ns in self.namespaces:
            listed: Any = api.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
            objects += listed["items"]
            for secret in api.core.list_namespaced_secret(ns).items:
                data = secret.data or {}
                assert secret.metadata is not None
                secrets[(ns, str(secret.metadata.name))] = {
                    k: base64.b64decode(v).decode() for k, v in data.items()
                }
        webhooks = self.world.sim.webhooks()
        with self.lock:
            deleted = {r.key for r in self.resources if r.deleted}
        return fleet_problems(objects, secrets, webhooks, deleted)

    def judge(self) -> None:
        """Count until every count is zero for ``stable_seconds``, or the deadline passes."""
        off = time.monotonic()
        deadline = off + self.config.converge_seconds
        zero_since: float | None = None
        last_log = 0.0
        problems: list[FleetProblem] = []
        while True:
            now = time.monotonic()
            try:
                problems = self.observe()
            except Exception as exc:  # an apiserver hiccup is not a count
                self.log(f"  observe failed: {exc!r}")
                problems = [FleetProblem("not ready", "(observe)", repr(exc)[:200])]
            if problems:
                zero_since = None
            elif zero_since is None:
                zero_since = now
            elif now - zero_since >= self.config.stable_seconds:
                self.report.converge_seconds = zero_since - off
                break
            if now > deadline:
                break
            if now - last_log >= 10.0:
                last_log = now
                counts = Counter(p.kind for p in problems)
                self.log(
                    f"{stamp()} +{now - off:.0f}s after faults off: "
                    + (", ".join(f"{k} {v}" for k, v in counts.items()) or "all zero")
                )
            time.sleep(self.config.poll_seconds)  # pacing between outside looks
        self.report.judged_seconds = time.monotonic() - off
        self.report.problems = problems
        if self.dump_dir is not None:
            with contextlib.suppress(Exception):
                self.dump(self.dump_dir)

    def dump(self, where: Path) -> None:
        """The storm's journal and the final state as seen from outside (signing secrets
        as fingerprints only), so a non-zero count can be traced after the world is gone."""
        where.mkdir(parents=True, exist_ok=True)
        (where / "storm-journal.txt").write_text("\n".join(self.journal) + "\n")
        objects = []
        for ns in self.namespaces:
            listed: Any = self.world.hooks.custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL
            )
            for obj in listed["items"]:
                obj["metadata"].pop("managedFields", None)
                objects.append(obj)
        webhooks = [
            {**w, "signing_secret": fingerprint(w.get("signing_secret") or "")}
            for w in self.world.sim.webhooks()
        ]
        state = {
            "objects": objects,
            "webhooks": webhooks,
            "calls": self.world.sim.calls(),
            "problems": [p.__dict__ for p in self.report.problems],
        }
        (where / "final-state.json").write_text(json.dumps(state, indent=1))


def fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def secret_of(resource: Resource) -> str:
    return secret_name_of({"metadata": {"name": resource.name}})


def git_commit() -> str:
    """The tree the storm ran against (a dirty tree is marked), for the report."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "operator"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty operator/" if dirty else "")


def stamp() -> str:
    return time.strftime("%H:%M:%S")


def world_of(
    args: argparse.Namespace, work: Path, namespaces: list[str], env: dict[str, str]
) -> contextlib.AbstractContextManager[World]:
    if args.replicas == 1:
        return local_world(work, namespaces=namespaces, env=env)
    from tests.chaos.storm_ha import ha_world

    return ha_world(work, namespaces=namespaces, env=env)


def storm_of(
    args: argparse.Namespace, world: World, config: StormConfig, seed: int, work: Path
) -> Storm:
    def log(line: str) -> None:
        print(line, flush=True)

    if args.replicas == 1:
        return Storm(world, config, seed, log=log, dump_dir=work)
    from tests.chaos.storm_ha import HAStorm, HAWorld

    assert isinstance(world, HAWorld)
    return HAStorm(world, config, seed, args.ha_mode, log=log, dump_dir=work)


def main(argv: list[str] | None = None) -> int:
    sigterm_is_ctrl_c()  # SIGTERM stops the world it started, as Ctrl-C does
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.storm", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument("--resources", type=int, default=300)
    parser.add_argument("--namespaces", type=int, default=3)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--apiserver-restarts", type=int, default=1)
    parser.add_argument("--create-seconds", type=float, default=40.0)
    parser.add_argument("--ops", type=str, default="10-30", help="resources per kind, LO-HI")
    parser.add_argument("--no-faults", action="store_true", help="no Blooio faults")
    parser.add_argument("--converge-seconds", type=float, default=300.0)
    parser.add_argument(
        "--tail-seconds", type=float, default=120.0, help="faults on after the kills, at most"
    )
    parser.add_argument("--secret-check-interval", type=float, default=None)
    parser.add_argument("--log-level", default=None, help="operator log level (default DEBUG)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep logs here")
    parser.add_argument("--report", type=Path, default=None, help="write the summary as JSON")
    parser.add_argument(
        "--replicas", type=int, choices=(1, 2), default=1, help="2: leader election (storm_ha)"
    )
    parser.add_argument(
        "--ha-mode",
        choices=("kill-leader", "partition"),
        default="kill-leader",
        help="with --replicas 2: SIGKILL the leader, or SIGSTOP it past the Lease",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    lo, _, hi = args.ops.partition("-")
    config = StormConfig(
        resources=args.resources,
        namespaces=args.namespaces,
        kills=args.kills,
        apiserver_restarts=args.apiserver_restarts,
        create_seconds=args.create_seconds,
        ops=(int(lo), int(hi or lo)),
        faults=not args.no_faults,
        converge_seconds=args.converge_seconds,
        tail_seconds=args.tail_seconds,
    )
    env = operator_env(config.resources)
    if args.secret_check_interval is not None:
        env["BLOOIO_SECRET_CHECK_INTERVAL_SECONDS"] = f"{args.secret_check_interval:g}"
    if args.log_level:
        env["BLOOIO_LOG_LEVEL"] = args.log_level
    namespaces = [f"storm-{i}" for i in range(config.namespaces)]
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        print(
            f"storm: seed {seed}, {config.resources} resources in {namespaces}, "
            f"{config.kills} kills, {args.replicas} replica(s)"
            + (f" ({args.ha_mode})" if args.replicas > 1 else "")
            + ", secret check every "
            f"{env['BLOOIO_SECRET_CHECK_INTERVAL_SECONDS']}s, logs in {work}",
            flush=True,
        )
        try:
            with world_of(args, work, namespaces, env) as world:
                storm = storm_of(args, world, config, seed, work)
                storm.report.commit = git_commit()
                storm.report.operator_env = env
                report = storm.run()
        except KeyboardInterrupt:
            print("storm: interrupted; everything it started is stopped", flush=True)
            return 130
        print(report.render(), flush=True)
        if args.report is not None:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(json.dumps(report.to_json(), indent=2))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
