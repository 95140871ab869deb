"""The floor: only the unavoidable work per BlooioWebhook, as fast as asyncio allows.

Watches the BlooioWebhooks of one namespace and, for each new one: 1 ``POST /webhooks``
to Blooio, 1 Secret create, 1 status merge-patch (Ready=True at the current generation).
Nothing else — no intent record, no finalizer, no Events, no reads. The Blooio calls run
at the operator's per-key concurrency cap and the Kubernetes writes at the operator's
Kubernetes thread-pool size ("the same concurrency"), with the same HTTP library toward
Blooio (httpx) as the operator.

Run by ``bench.run`` as its own process (so it gets its own core like the operator)::

    BLOOIO_API_KEY=... python -m bench.floor --kubeconfig K --namespace NS \
        --api-url http://127.0.0.1:PORT/v4 --ready-file F

It runs until SIGTERM and writes a small JSON summary to ``--summary-file`` on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.kube import Kube, KubeError, bwh_path, watch_forever

DEFAULT_BLOOIO_CONCURRENCY = 16  # Settings.max_concurrency_per_key
DEFAULT_KUBE_CONCURRENCY = 32  # KubeClient(max_workers=32)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_done(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("webhookId"))


class Floor:
    def __init__(
        self,
        kube: Kube,
        http: httpx.AsyncClient,
        *,
        namespace: str,
        api_url: str,
        api_key: str,
        blooio_concurrency: int,
        kube_concurrency: int,
    ) -> None:
        self.kube = kube
        self.http = http
        self.namespace = namespace
        self.api_url = api_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.blooio = asyncio.Semaphore(blooio_concurrency)
        self.kube_sem = asyncio.Semaphore(kube_concurrency)
        self.seen: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = 0
        self.errors: list[str] = []

    def on_object(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        if kind == "DELETED" or uid in self.seen or _is_done(obj):
            return
        self.seen.add(uid)
        task = asyncio.create_task(self.handle(obj))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, obj: dict[str, Any]) -> None:
        for attempt in range(5):
            try:
                await self._handle_once(obj)
                self.done += 1
                return
            except (httpx.HTTPError, KubeError) as exc:
                self.errors.append(f"{obj['metadata']['name']}: {exc}")
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _handle_once(self, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        name = meta["name"]
        body: dict[str, Any] = {"url": spec["url"]}
        if spec.get("eventTypes"):
            body["event_types"] = spec["eventTypes"]
        async with self.blooio:
            resp = await self.http.post(f"{self.api_url}/webhooks", json=body, headers=self.headers)
        resp.raise_for_status()
        hook = resp.json()["data"]
        secret_name = (spec.get("secret") or {}).get("name") or f"{name}-blooio-webhook"
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": secret_name,
                "namespace": self.namespace,
                "ownerReferences": [
                    {
                        "apiVersion": obj["apiVersion"],
                        "kind": obj["kind"],
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "data": {
                "signing-secret": base64.b64encode(hook["signing_secret"].encode()).decode(),
                "webhook-id": base64.b64encode(hook["id"].encode()).decode(),
                "webhook-url": base64.b64encode(hook["url"].encode()).decode(),
            },
        }
        async with self.kube_sem:
            try:
                await self.kube.create(f"/api/v1/namespaces/{self.namespace}/secrets", secret)
            except KubeError as exc:
                if exc.status != 409:
                    raise
        generation = meta.get("generation", 1)
        now = _now()
        status = {
            "status": {
                "observedGeneration": generation,
                "webhookId": hook["id"],
                "remoteStatus": hook.get("status", "active"),
                "secretName": secret_name,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Synced",
                        "message": "floor",
                        "lastTransitionTime": now,
                        "observedGeneration": generation,
                    }
                ],
            }
        }
        async with self.kube_sem:
            await self.kube.merge_patch(bwh_path(self.namespace, name, "status"), status)


async def amain(args: argparse.Namespace) -> int:
    kube = Kube.from_kubeconfig(Path(args.kubeconfig), limit=args.kube_concurrency + 8)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(10.0, connect=5.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
    )
    floor = Floor(
        kube,
        http,
        namespace=args.namespace,
        api_url=args.api_url,
        api_key=os.environ["BLOOIO_API_KEY"],
        blooio_concurrency=args.blooio_concurrency,
        kube_concurrency=args.kube_concurrency,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def synced() -> None:
        if args.ready_file:
            Path(args.ready_file).write_text(json.dumps({"pid": os.getpid(), "ts": time.time()}))

    watcher = asyncio.create_task(
        watch_forever(kube, bwh_path(args.namespace), floor.on_object, on_synced=synced)
    )
    await stop.wait()
    watcher.cancel()
    for task in list(floor.tasks):
        task.cancel()
    await http.aclose()
    await kube.close()
    if args.summary_file:
        Path(args.summary_file).write_text(
            json.dumps({"done": floor.done, "seen": len(floor.seen), "errors": floor.errors[:20]})
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--api-url", required=True, help="Blooio base URL ending in /v4")
    p.add_argument("--blooio-concurrency", type=int, default=DEFAULT_BLOOIO_CONCURRENCY)
    p.add_argument("--kube-concurrency", type=int, default=DEFAULT_KUBE_CONCURRENCY)
    p.add_argument("--ready-file", default=None)
    p.add_argument("--summary-file", default=None)
    return asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
