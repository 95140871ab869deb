"""Host plumbing for the local node: commands, cgroups, mounts, leftover processes."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class NodeError(RuntimeError):
    """The node could not be built, started or cleaned up."""


def pdeathsig() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise NodeError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()[-2000:]}")
    return res


def cgroup_mounts() -> list[Path]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split(" ")[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(pre.split(" ")[4]))
    return mounts


def mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split(" ")[4].replace("\\040", " ")
        if point.startswith(prefix) or point == str(root):
            points.append(point)
    return points


def kill_cgroup_procs(cgroups: list[str]) -> None:
    """SIGKILL every process in these cgroups (and below) until none is left."""
    for _ in range(50):
        pids: set[int] = set()
        for base in cgroups:
            for procs in Path(base).rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def kill_shims(containerd_socket: Path) -> None:
    """SIGKILL the containerd shims started for this socket (they outlive containerd)."""
    marker = str(containerd_socket)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "containerd-shim" in cmdline and marker in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def remove_cgroup(root: Path) -> list[str]:
    if not root.exists():
        return []
    dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts))
    for path in [*reversed(dirs), root]:
        for _ in range(20):
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
    return [f"cgroup {root} not removed"] if root.exists() else []
