"""``python -m bench.run --sizes 100,1000 [--latency-ms 50] [--out bench/results]``.

For each size N, in a fresh world (control plane with audit logging + simulator):

1. operator pass — ``python -m blooio_operator run --all-namespaces`` as its own process
   (ServiceAccount + shipped RBAC), then:
   - burst: N BlooioWebhooks created at once; time until all Ready, throughput,
     apply-to-Ready latency, Blooio calls by endpoint, Kubernetes writes by the operator
     (audit log), operator peak RSS and CPU time;
   - steady: more resources applied at a fixed rate next to the N Ready ones
     (the "steady state" latency of SPEC §6);
   - restart: SIGTERM with everything Ready, start again, watch a window
     (``--restart-window``): Blooio calls and Kubernetes writes in it.
2. floor pass — the operator stopped, ``bench.floor`` (only 1 POST + 1 Secret create +
   1 status patch per resource) handles another N in its own namespace, same concurrency.

Writes ``bench-<UTC stamp>.{json,md,png}`` and ``latest.{json,md,png}`` into ``--out`` and
prints the Markdown table. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.audit import summarize
from bench.kube import Kube, bwh_path
from bench.measure import (
    ReadyTracker,
    apply_burst,
    apply_paced,
    is_ready,
    phase_result,
    webhook_body,
)
from bench.world import (
    FLOOR_USER,
    OPERATOR_USER,
    ManagedProcess,
    World,
    cpu_delta,
    cpu_snapshot,
)

LIST_ENDPOINT = "GET /webhooks"
POST_ENDPOINT = "POST /webhooks"


def log(msg: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100,1000", help="comma-separated N (default: 100,1000)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="simulated Blooio latency")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="output directory")
    p.add_argument(
        "--restart-window", type=float, default=60.0, help="seconds watched after a restart"
    )
    p.add_argument(
        "--steady-count",
        type=int,
        default=200,
        help="resources applied at a fixed rate after the burst (capped at N; 0 = skip)",
    )
    p.add_argument("--steady-rate", type=float, default=10.0, help="creates/s in the steady pass")
    p.add_argument(
        "--steady-settle",
        type=float,
        default=120.0,
        help="before the steady pass, wait (at most this long) until the operator is idle: "
        "under 20%% of a core over 3 s (0 = start right after the burst)",
    )
    p.add_argument(
        "--apply-concurrency", type=int, default=50, help="creates in flight during a burst"
    )
    p.add_argument(
        "--floor-blooio-concurrency",
        type=int,
        default=None,
        help="floor's Blooio concurrency (default: the operator's per-key cap, "
        "BLOOIO_MAX_CONCURRENCY_PER_KEY or 16)",
    )
    p.add_argument(
        "--floor-kube-concurrency",
        type=int,
        default=32,
        help="floor's Kubernetes writes in flight (default: the operator's kube pool, 32)",
    )
    p.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the operator (tuning experiments; repeatable)",
    )
    p.add_argument(
        "--ready-timeout", type=float, default=None, help="per phase (default 120+N/2 s)"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the operator with py-spy ($PY_SPY or on PATH) during each burst; "
        "collapsed stacks (speedscope/flamegraph.pl input) go to --out",
    )
    p.add_argument("--label", default="", help="free text stored with the results")
    p.add_argument("--keep-work", action="store_true", help="keep logs, audit log, etcd data")
    p.add_argument("--work-dir", type=Path, default=None, help="where worlds live (default: tmp)")
    args = p.parse_args(argv)
    args.size_list = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    env: dict[str, str] = {}
    for item in args.operator_env:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--operator-env expects KEY=VALUE, got {item!r}")
        env[key] = value
    args.operator_env_map = env
    if args.floor_blooio_concurrency is None:
        args.floor_blooio_concurrency = int(env.get("BLOOIO_MAX_CONCURRENCY_PER_KEY", "16"))
    return args


def per_resource(counts: dict[str, int], n: int) -> dict[str, float]:
    return {k: round(v / n, 3) for k, v in sorted(counts.items())} if n else {}


async def wait_idle(proc: ManagedProcess, *, cap: float, window: float = 3.0) -> float:
    """Wait until ``proc`` uses under 20% of a core over ``window`` s (at most ``cap`` s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < cap:
        before = proc.sample_now()
        await asyncio.sleep(window)
        after = proc.sample_now()
        if (after.cpu - before.cpu) / (after.t - before.t) < 0.2:
            break
    return time.monotonic() - t0


async def count_ready(kube: Kube, namespace: str) -> tuple[int, int]:
    listing = await kube.get(bwh_path(namespace))
    items = listing.get("items") or []
    return sum(1 for o in items if is_ready(o)), len(items)


def start_profiler(pid: int, args: argparse.Namespace, n: int) -> subprocess.Popen[bytes]:
    py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("--profile needs py-spy on PATH or $PY_SPY")
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy, "record", "--pid", str(pid), "--rate", "50", "--format", "raw"]
    cmd += ["--output", str(args.out / f"profile-N{n}.txt")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the burst starts
    return proc


async def operator_pass(
    world: World, kube: Kube, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    assert world.admin is not None
    ns = "bench-operator"
    timeout = args.ready_timeout or 120 + n / 2
    await kube.create_namespace(ns)
    handle = world.operator(args.operator_env_map, world.work / "operator.log")
    proc, startup_s = await asyncio.to_thread(handle.start)
    log(f"N={n}: operator up in {startup_s:.1f}s (pid {proc.pid})")
    await asyncio.sleep(2.0)  # let kopf finish establishing its watches
    out: dict[str, Any] = {"startup_s": round(startup_s, 2)}

    # --- burst ---------------------------------------------------------------------------
    profiler = start_profiler(proc.pid, args, n) if args.profile else None
    world.admin.reset_calls()
    mark = world.audit.mark()
    tracker = ReadyTracker(kube, ns)
    await tracker.start()
    names = [f"wh-{i:05d}" for i in range(n)]
    pids = world.pids(operator=proc.pid)
    cpu0 = cpu_snapshot(pids)
    t0 = time.monotonic()
    applied = await apply_burst(kube, ns, names, args.apply_concurrency)
    log(f"N={n}: {n} created in {applied.t_last_ack - applied.t0:.2f}s; waiting for Ready")
    await tracker.wait_all(names, timeout)
    t1 = time.monotonic()
    cpu1 = cpu_snapshot(pids)
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        await asyncio.to_thread(profiler.wait, 60)
        out["profile"] = str(args.out / f"profile-N{n}.txt")
    burst = phase_result(applied, tracker.ready_at, names)
    writes = await asyncio.to_thread(world.audit.wait_quiet, mark, OPERATOR_USER)
    calls = world.admin.counts()
    burst["blooio_calls"] = calls
    burst["blooio_per_resource"] = per_resource(calls, n)
    burst["posts_per_resource"] = calls.get(POST_ENDPOINT, 0) / n
    burst["kube_writes"] = summarize(writes, OPERATOR_USER)
    burst["kube_writes_per_resource"] = per_resource(burst["kube_writes"]["by_verb_resource"], n)
    burst["kube_writes_per_resource_total"] = round(burst["kube_writes"]["total"] / n, 3)
    burst["process"] = proc.window(t0, t1)
    burst["cpu_s"] = cpu_delta(cpu0, cpu1)
    out["burst"] = burst
    log(
        f"N={n}: operator burst: {burst['ready']}/{n} Ready, all in "
        f"{burst['time_to_all_ready_s']:.2f}s, {burst['kube_writes_per_resource_total']} "
        f"writes/resource, POST/resource {burst['posts_per_resource']:.2f}"
    )

    # --- steady --------------------------------------------------------------------------
    k = min(args.steady_count, n)
    if k > 0:
        settle_s = await wait_idle(proc, cap=args.steady_settle)
        log(f"N={n}: operator idle after {settle_s:.0f}s; steady pass")
        world.admin.reset_calls()
        mark = world.audit.mark()
        st_names = [f"st-{i:05d}" for i in range(k)]
        cpu0 = cpu_snapshot(pids)
        ts0 = time.monotonic()
        applied_st = await apply_paced(kube, ns, st_names, args.steady_rate)
        await tracker.wait_all(st_names, timeout)
        ts1 = time.monotonic()
        cpu1 = cpu_snapshot(pids)
        steady = phase_result(applied_st, tracker.ready_at, st_names)
        steady["cpu_s"] = cpu_delta(cpu0, cpu1)
        writes = await asyncio.to_thread(world.audit.wait_quiet, mark, OPERATOR_USER)
        calls = world.admin.counts()
        steady["rate_per_s"] = args.steady_rate
        steady["settle_s"] = round(settle_s, 1)
        steady["blooio_calls"] = calls
        steady["posts_per_resource"] = calls.get(POST_ENDPOINT, 0) / k
        steady["kube_writes"] = summarize(writes, OPERATOR_USER)
        steady["kube_writes_per_resource_total"] = round(steady["kube_writes"]["total"] / k, 3)
        steady["process"] = proc.window(ts0, ts1)
        out["steady"] = steady
        log(
            f"N={n}: steady {k} at {args.steady_rate}/s: p50 "
            f"{steady['latency_s']['p50']:.3f}s p99 {steady['latency_s']['p99']:.3f}s"
        )
    await tracker.stop()
    await asyncio.sleep(1.0)
    settled = proc.sample_now()
    out["process"] = {
        "peak_rss_mib": round(proc.hwm_bytes / 2**20, 1),
        "rss_settled_mib": round(settled.rss / 2**20, 1),
        "cpu_total_s": round(settled.cpu, 2),
        "resources": n + k,
    }

    # --- restart -------------------------------------------------------------------------
    exit_s = await asyncio.to_thread(handle.stop)
    ready_before, total = await count_ready(kube, ns)
    log(f"N={n}: operator stopped (SIGTERM, {exit_s:.1f}s); {ready_before}/{total} Ready")
    world.admin.reset_calls()
    mark = world.audit.mark()
    cpu0 = cpu_snapshot(world.pids())
    proc2, startup2 = await asyncio.to_thread(handle.start)
    # Liveness: a new resource applied right after the restart must become Ready (a
    # restart that "costs nothing" because nothing runs any more is a failure). It goes
    # to its own namespace, so its writes and its POST are told apart from the window's.
    probe_ns, probe = "bench-probe", "after-restart"
    await kube.create_namespace(probe_ns)
    await kube.create(bwh_path(probe_ns), webhook_body(probe_ns, probe))
    applied_at = time.monotonic()
    probe_ready_s: float | None = None
    deadline = applied_at + max(args.restart_window, 60.0 + n / 100)
    while time.monotonic() < deadline:
        if is_ready(await kube.get(bwh_path(probe_ns, probe))):
            probe_ready_s = time.monotonic() - applied_at
            break
        await asyncio.sleep(0.1)
    log(
        f"N={n}: new resource after the restart Ready in "
        + (f"{probe_ready_s:.2f}s" if probe_ready_s is not None else "NEVER")
    )
    remaining = args.restart_window - (time.monotonic() - proc2.started_at)
    await asyncio.sleep(max(0.0, remaining))
    window_s = time.monotonic() - proc2.started_at
    cpu1 = cpu_snapshot(world.pids(operator=proc2.pid))
    cpu0["operator"] = 0.0
    writes = world.audit.since(mark)
    calls = world.admin.counts()
    after = proc2.sample_now()
    ready_after, _ = await count_ready(kube, ns)
    non_list = {k2: v for k2, v in calls.items() if k2 != LIST_ENDPOINT}
    probe_calls = 1 if probe_ready_s is not None else calls.get(POST_ENDPOINT, 0)
    out["restart"] = {
        "resources": total,
        "ready_before": ready_before,
        "ready_after": ready_after,
        "stop_s": round(exit_s, 2),
        "startup_s": round(startup2, 2),
        "window_s": round(window_s, 1),
        "blooio_calls": calls,
        # The new resource's one POST is its own; everything else counts against restart.
        "blooio_calls_excluding_list": sum(non_list.values()) - probe_calls,
        "kube_writes": summarize(writes, OPERATOR_USER, {ns}),
        "new_resource_ready_s": round(probe_ready_s, 2) if probe_ready_s is not None else None,
        "new_resource_ready_from_start_s": (
            round(applied_at - proc2.started_at + probe_ready_s, 2)
            if probe_ready_s is not None
            else None
        ),
        "new_resource_kube_writes": summarize(writes, OPERATOR_USER, {probe_ns})["total"],
        "rss_mib": round(after.rss / 2**20, 1),
        "peak_rss_mib": round(proc2.hwm_bytes / 2**20, 1),
        "cpu_s": round(after.cpu, 2),
        "cpu_by_process_s": cpu_delta(cpu0, cpu1),
    }
    log(
        f"N={n}: restart window {window_s:.0f}s: Blooio {calls}, operator writes "
        f"{out['restart']['kube_writes']['total']}, RSS {after.rss / 2**20:.0f} MiB"
    )
    await asyncio.to_thread(handle.stop)
    return out


async def floor_pass(world: World, kube: Kube, n: int, args: argparse.Namespace) -> dict[str, Any]:
    assert world.admin is not None
    ns = "bench-floor"
    timeout = args.ready_timeout or 120 + n / 2
    await kube.create_namespace(ns)
    proc = await asyncio.to_thread(
        world.floor,
        ns,
        world.work / "floor.log",
        blooio_concurrency=args.floor_blooio_concurrency,
        kube_concurrency=args.floor_kube_concurrency,
    )
    await asyncio.sleep(1.0)
    world.admin.reset_calls()
    mark = world.audit.mark()
    tracker = ReadyTracker(kube, ns)
    await tracker.start()
    names = [f"fl-{i:05d}" for i in range(n)]
    pids = world.pids(floor=proc.pid)
    cpu0 = cpu_snapshot(pids)
    t0 = time.monotonic()
    applied = await apply_burst(kube, ns, names, args.apply_concurrency)
    await tracker.wait_all(names, timeout)
    t1 = time.monotonic()
    cpu1 = cpu_snapshot(pids)
    await tracker.stop()
    burst = phase_result(applied, tracker.ready_at, names)
    writes = await asyncio.to_thread(world.audit.wait_quiet, mark, FLOOR_USER)
    calls = world.admin.counts()
    burst["blooio_calls"] = calls
    burst["posts_per_resource"] = calls.get(POST_ENDPOINT, 0) / n
    burst["kube_writes"] = summarize(writes, FLOOR_USER)
    burst["kube_writes_per_resource_total"] = round(burst["kube_writes"]["total"] / n, 3)
    burst["process"] = proc.window(t0, t1)
    burst["process"]["peak_rss_mib"] = round(proc.hwm_bytes / 2**20, 1)
    burst["cpu_s"] = cpu_delta(cpu0, cpu1)
    await asyncio.to_thread(proc.stop)
    log(f"N={n}: floor: {burst['ready']}/{n} Ready, all in {burst['time_to_all_ready_s']:.2f}s")
    return {
        "burst": burst,
        "blooio_concurrency": args.floor_blooio_concurrency,
        "kube_concurrency": args.floor_kube_concurrency,
    }


async def run_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    world = World(work / f"n{n}", latency_ms=args.latency_ms)
    log(f"N={n}: starting control plane (audit on) and simulator ({args.latency_ms:g} ms)")
    try:
        # Blocking on purpose: a signal now cancels at the next await, after the start,
        # so the `finally` below stops all of it (a thread would keep starting things).
        world.start()
        kube = world.admin_kube(limit=args.apply_concurrency + 16)
        try:
            return await _run_size(world, kube, n, args)
        finally:
            await kube.close()
    finally:
        await asyncio.to_thread(world.stop)


async def _run_size(world: World, kube: Kube, n: int, args: argparse.Namespace) -> dict[str, Any]:
    await world.setup_identities(kube)
    result: dict[str, Any] = {
        "size": n,
        "latency_ms": args.latency_ms,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    result["operator"] = await operator_pass(world, kube, n, args)
    result["floor"] = await floor_pass(world, kube, n, args)
    op_t = result["operator"]["burst"]["time_to_all_ready_s"]
    fl_t = result["floor"]["burst"]["time_to_all_ready_s"]
    result["ratio_to_floor"] = op_t / fl_t if fl_t and not math.isnan(fl_t) else math.nan
    result["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = report.targets(result)
    result["work_dir"] = str(world.work) if args.keep_work else None
    return result


def operator_source(env: dict[str, str]) -> dict[str, str]:
    """Which blooio_operator code the operator ran, with a content hash (code changes fast)."""
    import hashlib

    root = Path(__file__).resolve().parents[1] / "operator"
    for entry in env.get("PYTHONPATH", "").split(os.pathsep):
        if entry and (Path(entry) / "blooio_operator").is_dir():
            root = Path(entry) / "blooio_operator"
            break
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return {"path": str(root), "sha256": digest.hexdigest()[:12]}


def machine() -> dict[str, Any]:
    import platform

    import psutil

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    # SIGTERM/SIGINT cancel the run, so every `finally` stops what was started.
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main_task.cancel)
    base = args.work_dir or Path(tempfile.mkdtemp(prefix="blooio-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "label": args.label,
            "machine": machine(),
            "kopf": version("kopf"),
            "operator_source": operator_source(args.operator_env_map),
            "args": {
                "sizes": args.size_list,
                "latency_ms": args.latency_ms,
                "restart_window_s": args.restart_window,
                "steady_count": args.steady_count,
                "steady_rate": args.steady_rate,
                "steady_settle_cap_s": args.steady_settle,
                "apply_concurrency": args.apply_concurrency,
                "floor_blooio_concurrency": args.floor_blooio_concurrency,
                "floor_kube_concurrency": args.floor_kube_concurrency,
                "operator_env": args.operator_env_map,
            },
        },
        "runs": [],
    }
    try:
        for n in args.size_list:
            results["runs"].append(await run_size(n, args, base))
    finally:
        if not args.keep_work and args.work_dir is None:
            shutil.rmtree(base, ignore_errors=True)
    results["meta"]["duration_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = asyncio.run(amain(args))
    except asyncio.CancelledError:
        log("interrupted; everything started was stopped")
        return 130
    paths = report.write(results, args.out)
    print(paths["md_text"])
    log("wrote " + ", ".join(str(p) for k, p in paths.items() if k != "md_text"))
    met = all(t["met"] for run in results["runs"] for t in run["targets"])
    log("all SPEC §6 targets met" if met else "some SPEC §6 targets NOT met (see table)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
