"""``python -m bench.idle --n 200 [--health-interval 20] [--drift-interval 10] [--window 60]``.

Blooio calls of an idle operator: N BlooioWebhooks Ready, nothing changing. The
expected cost is the drift lists (one paginated ``GET /webhooks`` per API key per drift
interval) plus at most one ``GET /webhooks/{id}/deliveries`` per resource per delivery
health interval; nothing else. The intervals are shortened so that a window of a minute
holds several of them; the measured rates are then scaled to the defaults.

The report also gives the resource count at which the *default* health interval would
use half of the per-key rate limit (``BLOOIO_RATE_PER_KEY``, 200/s by default), all
resources on one key: health checks cost N/interval requests per second, the drift list
ceil(N/200)/drift-interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measure import ReadyTracker, apply_burst
from bench.world import OPERATOR_NS, World
from blooio_operator.settings import Settings

DELIVERIES = "GET /webhooks/{id}/deliveries"
LIST = "GET /webhooks"
PAGE = 200


def log(msg: str) -> None:
    print(f"[bench.idle {datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def half_rate_resources(
    *, rate_per_key: float, health_interval: float, drift_interval: float
) -> int:
    """Largest N on one key whose idle Blooio calls stay within half the rate limit."""
    budget = rate_per_key / 2

    def cost(n: int) -> float:
        return n / health_interval + math.ceil(n / PAGE) / drift_interval

    low, high = 0, 1
    while cost(high) <= budget:
        high *= 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if cost(mid) <= budget else (low, mid)
    return low


def computed() -> dict[str, Any]:
    defaults = Settings()
    health = defaults.deliveries_health_interval_seconds
    drift = defaults.drift_interval_seconds
    rate = defaults.rate_per_key
    n_half = half_rate_resources(rate_per_key=rate, health_interval=health, drift_interval=drift)
    return {
        "rate_per_key": rate,
        "health_interval_s": health,
        "drift_interval_s": drift,
        "health_calls_per_s_per_1000": round(1000 / health, 3),
        "half_rate_resources": n_half,
        "half_rate_resources_health_only": int(rate / 2 * health),
    }


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    world = World(work, latency_ms=args.latency_ms)
    log(f"starting control plane and simulator ({args.latency_ms:g} ms)")
    world.start()
    kube = world.admin_kube(limit=64)
    try:
        await world.setup_identities(kube)
        assert world.admin is not None
        ns = "bench-idle"
        await kube.create_namespace(ns)
        env = {
            "BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS": f"{args.health_interval:g}",
            "BLOOIO_DRIFT_INTERVAL_SECONDS": f"{args.drift_interval:g}",
            # The drift list is taken by the periodic sweep (Secret checks, every 60 s by
            # default) when the per-key snapshot is older than the drift interval: sweep
            # more often than that, so the drift interval is what paces the lists.
            "BLOOIO_SECRET_CHECK_INTERVAL_SECONDS": f"{max(1.0, args.drift_interval / 4):g}",
        }
        handle = world.operator(env, work / "operator.log")
        await asyncio.to_thread(handle.start)
        tracker = ReadyTracker(kube, ns)
        await tracker.start()
        names = [f"idle-{i:05d}" for i in range(args.n)]
        await apply_burst(kube, ns, names, 50)
        if not await tracker.wait_all(names, 120 + args.n / 2):
            raise RuntimeError("not all resources became Ready")
        await tracker.stop()
        # The health sweep starts one interval after startup, with the resources known
        # then; let two passes happen (every first summary written) before watching.
        settle = 2 * args.health_interval + 5
        log(f"{args.n} Ready; settling {settle:g}s, then watching {args.window:g}s")
        await asyncio.sleep(settle)
        world.admin.reset_calls()
        mark = world.audit.mark()
        t0 = time.monotonic()
        await asyncio.sleep(args.window)
        window = time.monotonic() - t0
        counts = world.admin.counts()
        writes = world.audit.since(mark)
        await asyncio.to_thread(handle.stop)
    finally:
        await kube.close()
        await asyncio.to_thread(world.stop)
    deliveries = counts.get(DELIVERIES, 0)
    lists = counts.get(LIST, 0)
    other = {k: v for k, v in counts.items() if k not in (DELIVERIES, LIST)}
    expected_health = args.n * window / args.health_interval
    return {
        "n": args.n,
        "namespace": ns,
        "operator_namespace": OPERATOR_NS,
        "window_s": round(window, 1),
        "health_interval_s": args.health_interval,
        "drift_interval_s": args.drift_interval,
        "blooio_calls": counts,
        "deliveries_calls_per_resource_per_interval": round(deliveries / expected_health, 3)
        if expected_health
        else None,
        "list_calls_per_drift_interval": round(lists / (window / args.drift_interval), 3),
        "other_calls": other,
        "kube_writes_in_window": len(writes),
    }


def markdown(result: dict[str, Any]) -> str:
    c = result["computed"]
    lines = [
        "## Idle Blooio calls",
        "",
        f"Defaults: health interval {c['health_interval_s']:g} s, drift interval "
        f"{c['drift_interval_s']:g} s, rate limit {c['rate_per_key']:g}/s per key.",
        "",
        f"- health checks: N / {c['health_interval_s']:g} s = "
        f"{c['health_calls_per_s_per_1000']:g} requests/s per 1,000 resources;",
        f"- half of the per-key rate limit ({c['rate_per_key'] / 2:g}/s) is reached at "
        f"**{c['half_rate_resources']:,} resources** on one key (drift lists included; "
        f"{c['half_rate_resources_health_only']:,} counting health checks only).",
    ]
    m = result.get("measured")
    if m:
        lines += [
            "",
            f"Measured: {m['n']} resources Ready and idle, {m['window_s']:g} s window, "
            f"health interval {m['health_interval_s']:g} s, drift interval "
            f"{m['drift_interval_s']:g} s:",
            "",
            "| endpoint | calls |",
            "|---|---|",
            *[f"| `{k}` | {v} |" for k, v in sorted(m["blooio_calls"].items())],
            "",
            f"- deliveries calls per resource per health interval: "
            f"{m['deliveries_calls_per_resource_per_interval']}",
            f"- list calls per drift interval: {m['list_calls_per_drift_interval']}",
            f"- other Blooio calls: {m['other_calls'] or 'none'}",
            "- Kubernetes writes by the operator in the window (audit log): "
            f"{m['kube_writes_in_window']}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200, help="resources (0 = only the computation)")
    p.add_argument("--health-interval", type=float, default=20.0)
    p.add_argument("--drift-interval", type=float, default=10.0)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--out", type=Path, default=None, help="write idle.json and idle.md here")
    args = p.parse_args(argv)
    result: dict[str, Any] = {"computed": computed()}
    if args.n > 0:
        with tempfile.TemporaryDirectory(prefix="blooio-idle-") as tmp:
            result["measured"] = asyncio.run(measure(args, Path(tmp)))
    text = markdown(result)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "idle.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "idle.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
