"""What the soak counts in one fault class's window, and how it holds the counts to budget.

Counted from the outside only:

- Blooio calls: the simulator's call log (reset when the window opens), each call
  attributed to a resource by the webhook id in its path; the per-key list calls
  (``GET /webhooks``) by the key's fingerprint.
- Kubernetes writes by the operator: the kube-apiserver's audit log (``bench/audit.py``),
  filtered by the operator's ServiceAccount, so the soak's own writes never count.
  Writes of Events are counted as Events, not as writes.
- Events: the Events in the soak's namespaces whose reporting component is the operator,
  against a snapshot taken when the window opened: new objects, and the growth of their
  ``count`` (``series.count`` for events.k8s.io), Warning and Normal apart.
- Operator log lines: lines appended to its log file during the window.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.audit import AuditLog
from tests.chaos.invariants import Key
from tests.chaos.soak_budget import ACTION, Budget, log_lines_budget

COMPONENT = "blooio-operator"  # the operator's Events' reportingComponent / source
LIST = "GET /webhooks"
_ID_IN_PATH = re.compile(r"/webhooks/([^/]+)")


@dataclass
class Mark:
    """Where the window opened: offsets into the logs and the Events as they were."""

    started: float  # monotonic
    audit_offset: int
    log_offset: int
    events: dict[str, int]  # uid -> occurrences so far


@dataclass
class Counts:
    """Everything counted in one window (totals; ``judge`` turns them into rates)."""

    seconds: float = 0.0
    calls: Counter[Key] = field(default_factory=Counter)
    calls_unattributed: int = 0
    calls_by_endpoint: Counter[str] = field(default_factory=Counter)  # "GET /webhooks 503"
    lists_by_key: Counter[str] = field(default_factory=Counter)
    writes: Counter[Key] = field(default_factory=Counter)
    writes_other: int = 0  # by the operator, about nothing of the fleet (credential Secrets)
    writes_by_kind: Counter[str] = field(default_factory=Counter)  # "patch blooiowebhooks/status"
    event_writes: int = 0
    warnings: Counter[Key] = field(default_factory=Counter)  # new Event objects
    normals: Counter[Key] = field(default_factory=Counter)
    occurrences: Counter[str] = field(default_factory=Counter)  # Warning/Normal, count-summed
    events_by_reason: Counter[str] = field(default_factory=Counter)  # "Warning Reason"
    log_lines: int = 0
    log_levels: Counter[str] = field(default_factory=Counter)
    log_top: list[tuple[str, int]] = field(default_factory=list)

    @property
    def calls_total(self) -> int:
        return sum(self.calls.values()) + self.calls_unattributed

    @property
    def writes_total(self) -> int:
        return sum(self.writes.values()) + self.writes_other

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "calls_total": self.calls_total,
            "calls_unattributed": self.calls_unattributed,
            "calls_by_endpoint": dict(sorted(self.calls_by_endpoint.items())),
            "lists_by_key": dict(self.lists_by_key),
            "writes_total": self.writes_total,
            "writes_other": self.writes_other,
            "writes_by_kind": dict(sorted(self.writes_by_kind.items())),
            "event_writes": self.event_writes,
            "warning_objects": sum(self.warnings.values()),
            "normal_objects": sum(self.normals.values()),
            "occurrences": dict(self.occurrences),
            "events_by_reason": dict(sorted(self.events_by_reason.items())),
            "log_lines": self.log_lines,
            "log_levels": dict(self.log_levels),
            "log_top": [{"line": line, "count": n} for line, n in self.log_top],
        }


# --- reading --------------------------------------------------------------------------------


def event_occurrences(event: Mapping[str, Any]) -> int:
    series = event.get("series") or {}
    return int(series.get("count") or event.get("count") or 1)


def is_operators(event: Mapping[str, Any]) -> bool:
    source = (event.get("source") or {}).get("component")
    return COMPONENT in (event.get("reportingComponent"), source)


def attribute_calls(
    calls: Iterable[Mapping[str, Any]],
    ids: Mapping[str, Key],
    into: Counts,
    *,
    unknown_key: str = "(unknown key)",
) -> None:
    """Calls onto resources (by the webhook id in the path), list calls onto API keys;
    a list call with a key the simulator does not know (revoked) counts as ``unknown_key``."""
    for call in calls:
        endpoint = str(call.get("endpoint") or f"{call.get('method')} ?")
        into.calls_by_endpoint[f"{endpoint} {call.get('status') or 'none'}"] += 1
        if endpoint == LIST:
            into.lists_by_key[str(call.get("api_key_id") or unknown_key)] += 1
            continue
        match = _ID_IN_PATH.search(str(call.get("path") or ""))
        owner = ids.get(match.group(1)) if match else None
        if owner is None:
            into.calls_unattributed += 1
        else:
            into.calls[owner] += 1


def attribute_writes(
    writes: Iterable[Any],
    user: str,
    fleet: Collection[Key],
    secrets: Mapping[Key, Key],
    into: Counts,
) -> None:
    """Audit ``Write`` records (bench/audit.py) of ``user`` onto the fleet's resources."""
    for write in writes:
        if write.user != user:
            continue
        if write.resource.split("/")[0] == "events":
            into.event_writes += 1
            continue
        into.writes_by_kind[f"{write.verb} {write.resource}"] += 1
        key = (write.namespace, write.name)
        if write.resource.startswith("blooiowebhooks") and key in fleet:
            into.writes[key] += 1
        elif write.resource == "secrets" and key in secrets:
            into.writes[secrets[key]] += 1
        else:
            into.writes_other += 1


def attribute_events(
    events: Iterable[Mapping[str, Any]], before: Mapping[str, int], into: Counts
) -> None:
    for event in events:
        if not is_operators(event):
            continue
        uid = str(event["metadata"]["uid"])
        grown = event_occurrences(event) - before.get(uid, 0)
        if grown <= 0:
            continue
        kind = "Warning" if event.get("type") == "Warning" else "Normal"
        involved = event.get("involvedObject") or {}
        key = (str(involved.get("namespace")), str(involved.get("name")))
        into.occurrences[kind] += grown
        into.events_by_reason[f"{kind} {event.get('reason')}"] += grown
        if uid not in before:
            (into.warnings if kind == "Warning" else into.normals)[key] += 1


_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_NOISE = [
    (re.compile(r"^\S+ \S+ "), ""),  # timestamp
    (re.compile(r"\[[^\]]*/[^\]]*\]"), "[ns/name]"),  # kopf's [namespace/name]
    (re.compile(r"\b[\w.-]+/[\w.-]+-\d+\b"), "ns/name"),  # our namespace/name
    (re.compile(r"\bwh_\w+"), "wh_…"),
    (re.compile(r"\bkey_\w+"), "key_…"),
    (re.compile(r"\b[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b"), "…"),  # hex ids
    (re.compile(r"\d+(\.\d+)?"), "N"),
]


def log_template(line: str) -> str:
    """A log line without what varies between resources, to count lines by kind."""
    for pattern, replacement in _NOISE:
        line = pattern.sub(replacement, line)
    return line[:160]


def read_log(path: Path, offset: int, into: Counts) -> None:
    if not path.exists():
        return
    with path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode("utf-8", "replace")
    lines = text.splitlines()
    into.log_lines = len(lines)
    templates: Counter[str] = Counter()
    for line in lines:
        level = _LEVEL.search(line[:80])
        into.log_levels[level.group(1) if level else "other"] += 1
        templates[log_template(line)] += 1
    into.log_top = templates.most_common(8)


def log_offset(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def mark(audit: AuditLog, log: Path, events: Iterable[Mapping[str, Any]]) -> Mark:
    return Mark(
        started=time.monotonic(),
        audit_offset=audit.mark(),
        log_offset=log_offset(log),
        events={str(e["metadata"]["uid"]): event_occurrences(e) for e in events if is_operators(e)},
    )


# --- judging --------------------------------------------------------------------------------


@dataclass
class Cell:
    """One count of one class against its budget."""

    name: str
    mean: float  # per resource (per hour for rates)
    budget: float  # the mean's budget (touched resources' allowance included)
    worst: float = 0.0  # the one resource with the most, against its own ceiling
    worst_ceiling: float = 0.0
    worst_who: str = ""
    per_resource: bool = True  # False: only the total is judged (log lines, lists per key)

    @property
    def ok(self) -> bool:
        return self.mean <= self.budget + 1e-9 and (
            not self.per_resource or self.worst <= self.worst_ceiling + 1e-9
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mean": round(self.mean, 3),
            "budget": round(self.budget, 3),
            "ok": self.ok,
        }
        if self.per_resource:
            out.update(
                worst=round(self.worst, 3),
                worst_ceiling=round(self.worst_ceiling, 3),
                worst_resource=self.worst_who,
            )
        return out


def judge(
    counts: Counts,
    budget: Budget,
    *,
    fleet: Collection[Key],
    touched: Collection[Key],
    keys: int,
    hours: float,
) -> list[Cell]:
    """Each count per resource (rates per scaled hour of the window, Events per episode).

    A rate's budget holds for every hour of the window; what a resource the soak changed
    may add (``ACTION``) is a one-off, not a rate: it is not stretched by a longer window.
    """
    n = max(1, len(fleet))
    hours = max(hours, 1e-9)
    cells = []
    for name, per, rate in (
        ("calls", counts.calls, True),
        ("writes", counts.writes, True),
        ("warnings", counts.warnings, False),
        ("normals", counts.normals, False),
    ):
        scale = hours if rate else 1.0
        allowed, extra = getattr(budget, name), getattr(ACTION, name) / scale
        total = (
            sum(per.values())
            + (counts.calls_unattributed if name == "calls" else 0)
            + (counts.writes_other if name == "writes" else 0)
        )
        cell = Cell(name, total / n / scale, allowed + extra * len(touched) / n)
        worst_margin = None
        for key in {*fleet, *per}:
            ceiling = allowed + (extra if key in touched else 0.0)
            value = per.get(key, 0) / scale
            if worst_margin is None or value - ceiling > worst_margin:
                worst_margin = value - ceiling
                cell.worst, cell.worst_ceiling, cell.worst_who = value, ceiling, "/".join(key)
        cells.append(cell)
    log_budget = log_lines_budget(keys, n, len(touched), hours)
    cells.append(
        Cell("log lines", counts.log_lines / n / hours, log_budget / n / hours, per_resource=False)
    )
    worst_key = max(counts.lists_by_key.values(), default=0)
    cells.append(Cell("lists/key", worst_key / hours, budget.lists_per_key, per_resource=False))
    return cells
