"""Applying BlooioWebhooks (burst or paced) and seeing, by watch, when each is Ready.

Latency of one resource = the client-side time its create was acknowledged by the
apiserver (what ``kubectl apply`` waits for) to the time our watch stream first shows
it Ready: condition ``Ready=True`` with the condition's and ``status.observedGeneration``
equal to ``metadata.generation``. creationTimestamp is not used (1 s resolution, and
server-side).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from bench.kube import Kube, KubeError, bwh_path, watch_forever


def is_ready(obj: dict[str, Any]) -> bool:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    generation = meta.get("generation")
    if generation is None or status.get("observedGeneration") != generation:
        return False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(
                cond.get("status") == "True" and cond.get("observedGeneration") == generation
            )
    return False


def webhook_body(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "url": f"https://{name}.{namespace}.bench.example.com/blooio",
            "eventTypes": ["message.received", "message.delivered"],
        },
    }


class ReadyTracker:
    """Watches one namespace's BlooioWebhooks; records when each first turns Ready."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}  # name -> monotonic
        self.events = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def _on_object(self, kind: str, obj: dict[str, Any]) -> None:
        self.events += 1
        name = obj["metadata"]["name"]
        if name not in self.ready_at and is_ready(obj):
            self.ready_at[name] = time.monotonic()
            self._changed.set()

    async def start(self) -> None:
        synced = asyncio.Event()
        self._task = asyncio.create_task(
            watch_forever(
                self.kube, bwh_path(self.namespace), self._on_object, on_synced=synced.set
            )
        )
        waiter = asyncio.create_task(synced.wait())
        done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            waiter.cancel()
            self._task.result()  # raises

    async def wait_all(self, names: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        wanted = set(names)
        while not wanted <= self.ready_at.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._task is not None and self._task.done():
                self._task.result()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass


@dataclass
class Applied:
    sent: dict[str, float] = field(default_factory=dict)  # monotonic, request start
    acked: dict[str, float] = field(default_factory=dict)  # monotonic, response received
    errors: list[str] = field(default_factory=list)
    t0: float = 0.0  # first request sent
    t_last_ack: float = 0.0


async def _create_one(kube: Kube, namespace: str, name: str, out: Applied) -> None:
    out.sent[name] = time.monotonic()
    for attempt in range(5):
        try:
            await kube.create(bwh_path(namespace), webhook_body(namespace, name))
            break
        except KubeError as exc:
            if exc.status == 409:
                break  # a retried create that had gone through
            if attempt == 4:
                out.errors.append(f"{name}: {exc}")
                return
            await asyncio.sleep(0.2)
    out.acked[name] = time.monotonic()


async def apply_burst(kube: Kube, namespace: str, names: list[str], concurrency: int) -> Applied:
    """Create all at once, ``concurrency`` requests in flight."""
    out = Applied(t0=time.monotonic())
    sem = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with sem:
            await _create_one(kube, namespace, name, out)

    await asyncio.gather(*(one(n) for n in names))
    out.t_last_ack = max(out.acked.values(), default=out.t0)
    return out


async def apply_paced(kube: Kube, namespace: str, names: list[str], rate: float) -> Applied:
    """Create at a fixed rate (resources per second), each at its scheduled instant."""
    out = Applied(t0=time.monotonic())
    tasks = []
    for i, name in enumerate(names):
        delay = out.t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_create_one(kube, namespace, name, out)))
    await asyncio.gather(*tasks)
    out.t_last_ack = max(out.acked.values(), default=out.t0)
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for an empty list."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def phase_result(applied: Applied, ready_at: dict[str, float], names: list[str]) -> dict[str, Any]:
    """Timing figures of one apply phase (seconds)."""
    ready = {n: ready_at[n] for n in names if n in ready_at}
    latencies = [ready[n] - applied.acked[n] for n in names if n in ready and n in applied.acked]
    t_all = (max(ready.values()) - applied.t0) if len(ready) == len(names) else math.nan
    ready_times = sorted(t - applied.t0 for t in ready.values())
    return {
        "n": len(names),
        "ready": len(ready),
        "all_ready": len(ready) == len(names),
        "create_errors": applied.errors[:10],
        "apply_s": applied.t_last_ack - applied.t0,
        "time_to_all_ready_s": t_all,
        "throughput_per_s": len(names) / t_all if t_all and not math.isnan(t_all) else 0.0,
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=math.nan),
            "mean": sum(latencies) / len(latencies) if latencies else math.nan,
        },
        # raw series for the chart (rounded to ms)
        "latencies": [round(x, 3) for x in sorted(latencies)],
        "ready_times": [round(x, 3) for x in ready_times],
    }
