"""The soak's results: one ``ClassResult`` per fault class, the table, the JSON report."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.chaos.invariants import FleetProblem
from tests.chaos.soak_budget import Budget, budget_table
from tests.chaos.soak_measure import Cell, Counts

COLUMNS = ("calls", "writes", "warnings", "normals", "log lines", "lists/key")
HEADER = (
    "Per resource per scaled hour (the fault's hour and the recovery after it); Warning and\n"
    "Normal Events per resource per episode (each class is one); log lines per resource\n"
    "per hour (their budget is per API key plus per resource); lists per API key per hour.\n"
    "Cells: measured/budget, '!' = over. 'max' rows: the resource with the most of each\n"
    "count against its own ceiling (the budget, plus the allowance of a resource the soak\n"
    "changed itself: drifted, rotated, deleted, adopted)."
)


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


@dataclass
class ClassResult:
    key: str
    title: str
    budget: Budget
    resources: int = 0
    touched: int = 0
    counts: Counts = field(default_factory=Counts)
    cells: list[Cell] = field(default_factory=list)
    converge_seconds: float | None = None
    problems: list[FleetProblem] = field(default_factory=list)
    class_problems: list[FleetProblem] = field(default_factory=list)
    proof_seconds: float | None = None
    errors: list[str] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)

    @property
    def breaches(self) -> list[str]:
        return [c.name for c in self.cells if not c.ok]

    @property
    def failed(self) -> bool:
        return bool(
            not self.cells
            or self.breaches
            or self.problems
            or self.class_problems
            or self.errors
            or self.converge_seconds is None
            or self.proof_seconds is None
        )

    def row(self) -> list[str]:
        lines = [f"{self.key} {self.title:<19}{self.resources:>5}  "]
        worst = [" " * 23 + "max  "]
        for cell in self.cells:
            mark = " " if cell.mean <= cell.budget + 1e-9 else "!"  # the max row marks its own
            lines.append(f"{_num(cell.mean) + '/' + _num(cell.budget) + mark:<14}")
            if cell.per_resource:
                flag = " " if cell.worst <= cell.worst_ceiling + 1e-9 else "!"
                worst.append(f"{_num(cell.worst) + '/' + _num(cell.worst_ceiling) + flag:<14}")
            else:
                worst.append(" " * 14)
        converge = f"{self.converge_seconds:.0f}s" if self.converge_seconds is not None else "NO"
        proof = f"{self.proof_seconds:.1f}s" if self.proof_seconds is not None else "NO"
        lines.append(f"{converge:>9} {proof:>6}  {'FAIL' if self.failed else 'PASS'}")
        return ["".join(lines), "".join(worst).rstrip()]

    def details(self) -> list[str]:
        c = self.counts
        out = [f"class {self.key} ({self.title}): {c.seconds:.0f}s window, {self.touched} touched"]
        out.append(
            f"  calls {c.calls_total} ({c.calls_unattributed} not about one resource): "
            + ", ".join(f"{k} {v}" for k, v in c.calls_by_endpoint.most_common(8))
        )
        out.append(
            "  lists per key: "
            + (", ".join(f"{k} {v}" for k, v in c.lists_by_key.items()) or "none")
        )
        out.append(
            f"  writes {c.writes_total} (+{c.event_writes} of Events): "
            + ", ".join(f"{k} {v}" for k, v in c.writes_by_kind.most_common(8))
        )
        out.append(
            "  events: "
            + (", ".join(f"{k} {v}" for k, v in c.events_by_reason.most_common(8)) or "none")
        )
        out.append(
            f"  log: {c.log_lines} lines ("
            + ", ".join(f"{k} {v}" for k, v in c.log_levels.most_common())
            + ")"
        )
        out += [f"    {n:>6} x {line}" for line, n in c.log_top[:5]]
        kinds = Counter(p.kind for p in [*self.problems, *self.class_problems])
        if kinds:
            out.append("  problems: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
            out += [f"    ! {p.kind}: {p.resource}: {p.detail}" for p in self.problems[:8]]
            out += [f"    ! {p.kind}: {p.resource}: {p.detail}" for p in self.class_problems[:8]]
        out += [f"  error: {e}" for e in self.errors]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.key,
            "title": self.title,
            "budget": asdict(self.budget),
            "resources": self.resources,
            "touched": self.touched,
            "cells": {cell.name: cell.to_json() for cell in self.cells},
            "counts": self.counts.to_json(),
            "converge_seconds": (
                None if self.converge_seconds is None else round(self.converge_seconds, 1)
            ),
            "problems": [p.__dict__ for p in self.problems],
            "class_problems": [p.__dict__ for p in self.class_problems],
            "proof_seconds": None if self.proof_seconds is None else round(self.proof_seconds, 1),
            "errors": self.errors,
            "journal": self.journal,
            "failed": self.failed,
        }


@dataclass
class SoakReport:
    config: dict[str, Any]
    scale: str
    commit: str = ""
    operator_env: dict[str, str] = field(default_factory=dict)
    classes: list[ClassResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return not self.classes or any(c.failed for c in self.classes)

    def table(self) -> str:
        head = f"{'class':<21}{'res':>5}  " + "".join(f"{c:<14}" for c in COLUMNS)
        head += f"{'converge':>9} {'proof':>6}  result"
        lines = [head, "-" * len(head)]
        for result in self.classes:
            lines += result.row()
        return "\n".join(lines)

    def render(self) -> str:
        lines = [
            f"soak summary: {self.config.get('resources')} resources in "
            f"{self.config.get('namespaces')} namespaces, classes {self.config.get('classes')}"
            + (f", tree {self.commit}" if self.commit else ""),
            self.scale,
            HEADER,
            "",
            self.table(),
            "",
        ]
        for result in self.classes:
            lines += result.details()
        lines.append(f"soak: {'FAIL' if self.failed else 'PASS'}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "config": self.config,
            "scale": self.scale,
            "operator_env": self.operator_env,
            "budgets": budget_table(),
            "classes": [c.to_json() for c in self.classes],
            "failed": self.failed,
        }
