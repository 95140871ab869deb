"""Soak: faults that last, one class at a time, for a compressed hour each; then count.

``python -m tests.chaos.soak [--resources 100 --namespaces 2 --hour-seconds 180
--classes abcdef --report out.json]`` builds a local world of its own (``soak_world``:
control plane with audit logging, CRD, shipped RBAC, simulator, the operator as its
ServiceAccount) whose operator runs with every interval of ``operator/settings.py``
divided by one factor (``soak_budget.Scale``: 1 h -> ``--hour-seconds``). It creates the
fleet (a quarter of it on a second API key through ``credentialsRef``), waits until all
of it is Ready, and then, for each fault class of ``soak_faults`` in turn:

1. tops the fleet up and waits until it is all Ready again, and the operator is quiet;
2. opens the window (call log reset, audit and log offsets, Events snapshot), switches
   the fault on for one scaled hour, with the class's actions and a drift at Blooio;
3. switches it off and waits (``--converge-seconds``) until every count of the storm's
   invariants (``invariants.fleet_problems``) and the class's own checks are zero;
4. closes the window and counts, per resource per scaled hour: Blooio calls, Kubernetes
   writes by the operator, Warning and Normal Events (per episode), operator log lines,
   list calls per key; each against ``soak_budget.BUDGETS``;
5. proves the operator still works: one new resource and one edit handled within
   ``--proof-seconds``, by the same operator process (never restarted by the soak).

It prints a table (``soak_report``) and exits non-zero on any budget breach or problem.
Today's operator may breach budgets; the soak reports the measured figures as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from blooio_operator.devenv.dev import sigterm_is_ctrl_c
from blooio_operator.simulator import api_key_fingerprint
from tests.chaos import soak_measure as measure
from tests.chaos.invariants import (
    FleetProblem,
    Key,
    converged_state,
    key_of,
    secret_name_of,
)
from tests.chaos.run import retrying
from tests.chaos.soak_budget import BUDGETS, Scale
from tests.chaos.soak_faults import FaultClass, fault_classes
from tests.chaos.soak_fleet import SoakConfig, SoakFleet
from tests.chaos.soak_report import ClassResult, SoakReport
from tests.chaos.soak_world import OPERATOR_USER, soak_world
from tests.chaos.storm import git_commit, stamp
from tests.helpers import FAST_OPERATOR_ENV, wait_for


def operator_env(scale: Scale, log_level: str) -> dict[str, str]:
    """The fast test settings, with every interval the soak is about scaled instead."""
    return {**FAST_OPERATOR_ENV, **scale.env(), "BLOOIO_LOG_LEVEL": log_level}


class Soak(SoakFleet):
    """The soak: each fault class in turn over the fleet, counted and judged."""

    # --- the soak ------------------------------------------------------------------------------

    def run(self) -> SoakReport:
        report = SoakReport(config=self.config.__dict__, scale=self.scale.describe())
        classes = fault_classes()
        for key in self.config.classes:
            fc = classes[key]
            try:
                report.classes.append(self.run_class(fc))
            except Exception as exc:  # the world broke: recorded, and the next class tries
                self.log(f"{stamp()} class {key} broke off: {exc!r}")
                broken = ClassResult(fc.key, fc.title, budget=BUDGETS[fc.key])
                broken.errors.append(f"broke off: {exc!r}"[:400])
                report.classes.append(broken)
        return report

    def run_class(self, fc: FaultClass) -> ClassResult:
        result = ClassResult(fc.key, fc.title, budget=BUDGETS[fc.key])
        self.touched, self.created_in_window, self.class_problems = set(), [], []
        self.journal = []
        hour = self.config.hour_seconds
        try:
            self.top_up()
            settle = self.converge(None, self.config.settle_seconds)
            if settle[0] is None:
                result.problems = settle[1]
                result.errors.append("the fleet was not all Ready before the fault")
                return result
            fc.prepare(self)
            self.world.audit.wait_quiet(self.world.audit.mark(), OPERATOR_USER, timeout=30)
            objects = self.objects()
            fleet = {key_of(o) for o in objects if key_of(o) in self.members}
            ids = self.ids(objects)
            pid = self.world.operator_pid
            self.world.sim.admin.reset_calls()
            opened = measure.mark(self.world.audit, self.world.operator.log_path, self.events())
            self.log(f"{stamp()} class {fc.key} ({fc.title}): fault on for {hour:g}s")
            fc.on(self)
            actions = [*fc.actions(self), (1 / 3, "drift", self.drift)]
            for at, what, do in sorted(actions, key=lambda a: a[0]):
                time.sleep(max(0.0, opened.started + at * hour - time.monotonic()))
                try:
                    do()
                except Exception as exc:  # the soak failed to do its part: a failure
                    result.errors.append(f"{what}: {exc!r}"[:300])
                    self.note(f"{what} failed: {exc!r}"[:300])
            time.sleep(max(0.0, opened.started + hour - time.monotonic()))  # the hour's rest
            fc.off(self)
            self.note("fault off")
            result.converge_seconds, result.problems = self.converge(
                fc, self.config.converge_seconds
            )
            result.class_problems = list(self.class_problems)
            result.counts = self.count(opened, ids, fleet)
            fleet |= set(self.created_in_window)
            keys = 1 + any(m.other_key for m in self.members.values())
            result.cells = measure.judge(
                result.counts,
                BUDGETS[fc.key],
                fleet=fleet,
                touched=self.touched,
                keys=keys,
                hours=result.counts.seconds / hour,
            )
            result.resources, result.touched = len(fleet), len(self.touched)
            result.proof_seconds, proof_error = self.prove(fc.key)
            if proof_error:
                result.errors.append(proof_error)
            if self.world.operator_pid != pid or pid is None:
                result.errors.append("the operator process exited or was restarted")
        finally:
            fc.cleanup(self)
            result.journal = self.journal
        return result

    def count(self, opened: measure.Mark, ids: dict[str, Key], fleet: set[Key]) -> measure.Counts:
        counts = measure.Counts(seconds=time.monotonic() - opened.started)
        ids = {**ids, **self.ids(self.objects())}
        # A key the simulator does not know is the revoked default key (class d).
        revoked = api_key_fingerprint(self.world.default_key)
        measure.attribute_calls(self.world.sim.admin.calls(), ids, counts, unknown_key=revoked)
        secrets = {
            (m.ns, secret_name_of({"metadata": {"name": m.name}})): m.key
            for m in self.members.values()
        }
        writes = self.world.audit.since(opened.audit_offset)
        members = set(self.members)
        measure.attribute_writes(writes, OPERATOR_USER, members, secrets, counts)
        measure.attribute_events(self.events(), opened.events, counts)
        measure.read_log(self.world.operator.log_path, opened.log_offset, counts)
        return counts

    def converge(self, fc: FaultClass | None, seconds: float) -> tuple[float | None, list[Any]]:
        """Judge from outside every ``poll_seconds`` until all counts are zero for
        ``stable_seconds`` (seconds it took), or the deadline (None); the last problems."""
        began = time.monotonic()
        zero_since: float | None = None
        problems: list[FleetProblem] = []
        last_log = began
        while True:
            now = time.monotonic()
            try:
                problems = self.problems() + (fc.problems(self) if fc else [])
            except Exception as exc:  # an apiserver hiccup is not a count
                problems = [FleetProblem("not ready", "(observe)", repr(exc)[:200])]
            if problems:
                zero_since = None
            elif zero_since is None:
                zero_since = now
            elif now - zero_since >= self.config.stable_seconds:
                return zero_since - began, []
            if now - began > seconds:
                return None, problems
            if now - last_log >= 15:
                last_log = now
                kinds: dict[str, int] = {}
                for p in problems:
                    kinds[p.kind] = kinds.get(p.kind, 0) + 1
                self.log(f"{stamp()}   +{now - began:.0f}s: {kinds or 'all zero'}")
            time.sleep(self.config.poll_seconds)  # pacing between outside looks

    def prove(self, tag: str) -> tuple[float | None, str]:
        """One new resource and one edit, handled within ``proof_seconds``."""
        began = time.monotonic()
        new = self.new_member(self.world.namespaces[0], f"soak-new-{tag}")
        self.create(new)
        (edited,) = self.pick(1, touch=False)
        edited.version += 1
        patch = {"spec": {"url": edited.url}}
        retrying(lambda: self.world.hooks(edited.ns).patch(edited.name, patch))

        def both() -> bool:
            for m in (new, edited):
                converged_state(self.world.hooks(m.ns), self.world.sim, m.name, m.url)
            return True

        try:
            wait_for(both, timeout=self.config.proof_seconds, interval=0.5, message="proof")
        except AssertionError as exc:
            return None, f"new change not handled: {exc}"[:400]
        return time.monotonic() - began, ""


def main(argv: list[str] | None = None) -> int:
    sigterm_is_ctrl_c()  # SIGTERM stops the world it started, as Ctrl-C does
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    defaults = SoakConfig()
    for name, value in defaults.__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep logs here")
    parser.add_argument("--report", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    config = SoakConfig(**{k: getattr(args, k) for k in defaults.__dict__})
    if unknown := set(config.classes) - set(fault_classes()):
        parser.error(f"unknown classes {sorted(unknown)}; known: {''.join(fault_classes())}")
    scale = Scale(config.hour_seconds)
    env = operator_env(scale, config.log_level)
    namespaces = [f"soak-{i}" for i in range(config.namespaces)]
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        print(
            f"soak: {config.resources} resources in {namespaces}, classes {config.classes}, "
            f"logs in {work}\n{scale.describe()}",
            flush=True,
        )
        try:
            with soak_world(work, namespaces=namespaces, env=env) as world:
                soak = Soak(world, config, args.seed, log=lambda line: print(line, flush=True))
                report = soak.run()
        except KeyboardInterrupt:
            print("soak: interrupted; everything it started is stopped", flush=True)
            return 130
        report.commit, report.operator_env = git_commit(), env
        print(report.render(), flush=True)
        if args.report is not None:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(json.dumps(report.to_json(), indent=2))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
