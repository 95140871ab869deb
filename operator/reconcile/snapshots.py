"""Per-API-key snapshots of Blooio's webhook list for the drift check.

One paginated ``GET /webhooks`` per key per drift interval serves every resource using
that key; concurrent callers share one in-flight fetch.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from blooio_operator.blooio import BlooioClient, Webhook


@dataclass
class Snapshot:
    fetched_at: float  # wall clock (time.time()) when the list call started
    webhooks: dict[str, Webhook]


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    snapshot: Snapshot | None = None
    expires: float = 0.0


class SnapshotCache:
    def __init__(self, interval: float, *, jitter: float = 0.1) -> None:
        self.interval = interval
        self.jitter = jitter
        self._entries: dict[str, _Entry] = {}

    async def get(self, key_id: str, client: BlooioClient) -> Snapshot:
        entry = self._entries.setdefault(key_id, _Entry())
        async with entry.lock:
            now = time.monotonic()
            if entry.snapshot is None or now >= entry.expires:
                started = time.time()
                hooks = await client.list_webhooks()
                entry.snapshot = Snapshot(started, {w.id: w for w in hooks})
                spread = self.interval * self.jitter
                entry.expires = now + self.interval + random.uniform(-spread, spread)  # noqa: S311
            return entry.snapshot

    def peek(self, key_id: str) -> Snapshot | None:
        entry = self._entries.get(key_id)
        return entry.snapshot if entry else None
