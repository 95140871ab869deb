"""kube-apiserver audit logging for exact Kubernetes write counts.

The policy logs, at Metadata level (no bodies, so no secret material), only the write
verbs on the objects the operator touches — BlooioWebhooks (and /status), Secrets,
Events — plus every write of any kind by the operator's and the floor's users, so an
unexpected write (a Lease, a namespace, ...) is counted too. ``RequestReceived`` is
omitted: each request is one ``ResponseComplete`` line.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def policy_yaml(users: list[str]) -> str:
    user_list = ", ".join(json.dumps(u) for u in users)
    verbs = ", ".join(WRITE_VERBS)
    return f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: [{user_list}]
    verbs: [{verbs}]
  - level: Metadata
    verbs: [{verbs}]
    resources:
      - group: blooio.com
        resources: [blooiowebhooks, blooiowebhooks/status]
      - group: ""
        resources: [secrets, events]
      - group: events.k8s.io
        resources: [events]
  - level: None
"""


def apiserver_args(policy: Path, log: Path) -> list[str]:
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={log}",
        "--audit-log-maxsize=0",
        "--audit-log-maxbackup=0",
        "--audit-log-mode=blocking",
        "--audit-log-format=json",
    ]


@dataclass(frozen=True)
class Write:
    user: str
    verb: str
    resource: str  # "blooiowebhooks/status", "secrets", ...
    namespace: str
    name: str
    code: int
    ts: float  # stageTimestamp, epoch seconds
    user_agent: str

    @property
    def key(self) -> str:
        return f"{self.verb} {self.resource}"


def _parse_ts(value: str) -> float:
    # 2026-11-28T10:14:05.856800Z
    from datetime import UTC, datetime

    value = value.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in value else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()


def parse_line(line: str) -> Write | None:
    try:
        event: dict[str, Any] = json.loads(line)
    except ValueError:
        return None
    if event.get("stage") != "ResponseComplete" or event.get("verb") not in WRITE_VERBS:
        return None
    ref = event.get("objectRef") or {}
    resource = str(ref.get("resource") or "?")
    if ref.get("subresource"):
        resource += "/" + str(ref["subresource"])
    return Write(
        user=str((event.get("user") or {}).get("username") or ""),
        verb=str(event["verb"]),
        resource=resource,
        namespace=str(ref.get("namespace") or ""),
        name=str(ref.get("name") or ""),
        code=int((event.get("responseStatus") or {}).get("code") or 0),
        ts=_parse_ts(str(event.get("stageTimestamp") or event["requestReceivedTimestamp"])),
        user_agent=str(event.get("userAgent") or ""),
    )


class AuditLog:
    """Reads the audit log incrementally; ``mark()`` / ``since(mark)`` bracket a phase."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, offset: int) -> list[Write]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
        # Only complete lines: the apiserver may be writing the last one right now.
        end = data.rfind(b"\n")
        out: list[Write] = []
        for raw in data[: end + 1].splitlines():
            write = parse_line(raw.decode("utf-8", "replace"))
            if write is not None:
                out.append(write)
        return out

    def wait_quiet(
        self, offset: int, user: str, *, quiet: float = 2.0, timeout: float = 30.0
    ) -> list[Write]:
        """Wait until ``user`` has made no new write for ``quiet`` seconds; all writes since."""
        deadline = time.monotonic() + timeout
        last_count = -1
        last_change = time.monotonic()
        while True:
            writes = self.since(offset)
            count = sum(1 for w in writes if w.user == user)
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change >= quiet or now > deadline:
                return writes
            time.sleep(0.25)


def summarize(writes: list[Write], user: str, namespaces: set[str] | None = None) -> dict[str, Any]:
    """Writes of ``user`` (optionally only in ``namespaces``): by verb+resource, failures."""
    mine = [
        w for w in writes if w.user == user and (namespaces is None or w.namespace in namespaces)
    ]
    by_key = Counter(w.key for w in mine)
    failed = Counter(f"{w.key} -> {w.code}" for w in mine if w.code >= 400)
    return {
        "total": len(mine),
        "by_verb_resource": dict(sorted(by_key.items())),
        "failed": dict(sorted(failed.items())),
        "failed_total": sum(failed.values()),
    }
