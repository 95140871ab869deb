"""SIGTERM (how `timeout`, supervisors and IDE stop buttons end a process) stops
`blooio-operator dev` and `blooio-operator controlplane` with every child they started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {p for p, pp in parents.items() if pp in frontier and p not in found}
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(args: list[str], ready_text: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "blooio_operator", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a SIGTERM to this process alone, as `timeout` sends it
    )
    wait_for(
        lambda: ready_text in log.read_text(errors="replace") or proc.poll() is not None,
        timeout=240,
        message=f"{args[0]} ready",
    )
    assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
    return proc


def stop_and_check(proc: subprocess.Popen[bytes], log: Path, expect_children: int) -> None:
    # The controller-manager may start a moment after "ready" is printed.
    def enough() -> set[int] | None:
        found = descendants(proc.pid)
        return found if len(found) >= expect_children else None

    children = wait_for(enough, timeout=30, message=f"{expect_children} child processes")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in children):
        time.sleep(0.2)
    left = sorted(p for p in children if alive(p))
    for pid in left:  # do not leak them into the rest of the suite either
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"left behind after SIGTERM: {left}\n{log.read_text()[-2000:]}"


def test_sigterm_stops_dev_and_all_its_children(tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    proc = start(
        ["dev", "--state-dir", str(tmp_path / "dev"), "--no-operator"],
        "local world ready",
        log,
    )
    # apiserver+etcd, its controller-manager, the simulator
    stop_and_check(proc, log, expect_children=3)


def test_sigterm_stops_controlplane_and_all_its_children(tmp_path: Path) -> None:
    log = tmp_path / "cp.log"
    proc = start(
        ["controlplane", "--state-dir", str(tmp_path / "cp")],
        "control plane ready",
        log,
    )
    stop_and_check(proc, log, expect_children=2)
