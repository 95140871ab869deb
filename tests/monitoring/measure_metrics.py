"""The cost of the operator's metrics at N resources: series, ``/metrics`` body size, and
the memory they hold, for each setting of the per-resource series.

Runs the operator's own ``Metrics`` code paths in one process (what the handlers call
per resource: ``track`` after a reconcile, ``observe_deliveries`` after a health check),
with the fixed-cardinality families filled as a busy operator fills them (every
endpoint and status, trigger and outcome seen). Memory: ``tracemalloc``'s count of what
the per-resource state and the registry hold after the fill, and the process RSS growth
over the fill plus one scrape (the scrape builds the whole body in memory).

    python -m tests.monitoring.measure_metrics --resources 10000
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from prometheus_client import generate_latest

from blooio_operator.metrics import Metrics

ENDPOINTS = (
    "GET /webhooks",
    "POST /webhooks",
    "GET /webhooks/{id}",
    "PATCH /webhooks/{id}",
    "DELETE /webhooks/{id}",
    "POST /webhooks/{id}/secret/rotate",
    "GET /webhooks/{id}/deliveries",
    "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
)
STATUSES = ("200", "201", "204", "401", "404", "422", "429", "500", "503", "timeout")
TRIGGERS = ("create", "update", "resume", "delete", "periodic")
OUTCOMES = ("success", "skipped", "PermanentFailure", "CredentialsFailure", "TransientFailure")


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def fill(metrics: Metrics, n: int) -> None:
    for endpoint in ENDPOINTS:
        for status in STATUSES:
            metrics.observe_request(endpoint, status, 0.05)
    for trigger in TRIGGERS:
        for outcome in OUTCOMES:
            metrics.reconciles.labels(trigger, outcome).inc()
        metrics.reconcile_duration.labels(trigger).observe(0.2)
    for reason in ("annotation", "recovery", "adoption", "restore"):
        metrics.rotations.labels(reason).inc()
    for kind in ("patched", "recreated"):
        metrics.drift.labels(kind).inc()
    for trigger in ("rotation", "request"):
        metrics.replays_given_up.labels(trigger).inc()
        for result in ("posted", "refused", "error"):
            metrics.replays.labels(trigger, result).inc()
    metrics.leader.set(1)
    for i in range(n):
        uid = f"00000000-0000-0000-0000-{i:012d}"
        namespace, name = f"bench-{i % 10}", f"webhook-{i:05d}"
        metrics.track(uid, namespace, name, "Ready" if i % 50 else "Stalled")
        metrics.observe_deliveries(
            uid,
            namespace,
            name,
            {"delivered": 40 + i % 7, "failed": i % 3, "pending": i % 2},
            1.76e9 + i,
            "True" if i % 20 else "False",
        )


def measure(n: int, *, readiness: bool, delivery_detail: bool) -> dict[str, Any]:
    gc.collect()
    rss_before = rss_kib()
    tracemalloc.start()
    metrics = Metrics(readiness=readiness, delivery_detail=delivery_detail)
    fill(metrics, n)
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    body = generate_latest(metrics.registry)
    render_ms = (time.perf_counter() - started) * 1000
    rss_after = rss_kib()
    series = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    per_resource = [line for line in series if 'name="' in line]
    return {
        "resources": n,
        "readiness": readiness,
        "delivery_detail": delivery_detail,
        "series": len(series),
        "per_resource_series": len(per_resource),
        "body_bytes": len(body),
        "held_mib": round(held / 2**20, 2),
        "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
        "render_ms": round(render_ms, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument(
        "--only", choices=["none", "readiness", "detail"], help="one setting in this process"
    )
    args = parser.parse_args(argv)
    if args.only is not None:
        readiness, detail = {
            "none": (False, False),
            "readiness": (True, False),
            "detail": (True, True),
        }[args.only]
        print(json.dumps(measure(args.resources, readiness=readiness, delivery_detail=detail)))
        return 0
    # One process per setting: RSS growth is not comparable within one process.
    for only in ("none", "readiness", "detail"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.monitoring.measure_metrics",
                "--only",
                only,
                "--resources",
                str(args.resources),
            ],
            check=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
