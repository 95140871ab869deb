"""Per-API-key lists of Blooio's webhooks, shared by every resource using the key.

Two kinds of reader share one list call per key:

* the drift check takes the snapshot as long as it is younger than the drift interval
  (jittered), so one paginated ``GET /webhooks`` per key per interval serves them all;
* recovery and the finalizer need a list that *started after* a given moment (after the
  interrupted create could have committed); callers arriving while a list is in flight
  wait for it and, if it started too early for them, share the next one. A mass restart
  or a mass delete therefore costs two lists per key, not one per resource.

A failed list is remembered and re-raised to every caller meanwhile, for ``failure_ttl``
seconds after the first failure, doubling (with jitter) with each consecutive failure up
to ``failure_cap``: a lasting outage or a revoked key costs one call per key per cap,
not one per resource, and one log line per key per failed call (the resources' own
checks log nothing of it). The keys Blooio currently rejects (401/403) are counted for
the operator-wide metric. Keys not used for ``idle_seconds`` are forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from blooio_operator.blooio import BlooioClient, Forbidden, Unauthorized, Webhook

log = logging.getLogger("blooio_operator.reconcile")


@dataclass
class Snapshot:
    fetched_at: float  # wall clock (time.time()) when the list call started
    webhooks: dict[str, Webhook]


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    snapshot: Snapshot | None = None
    expires: float = 0.0  # monotonic; for drift readers
    failure: Exception | None = None
    failure_until: float = 0.0  # monotonic
    failures: int = 0  # consecutive failed lists
    used: float = 0.0  # monotonic


class SnapshotCache:
    def __init__(
        self,
        interval: float,
        *,
        jitter: float = 0.1,
        failure_ttl: float = 5.0,
        failure_cap: float = 300.0,
        idle_seconds: float | None = None,
    ) -> None:
        self.interval = interval
        self.jitter = jitter
        self.failure_ttl = failure_ttl
        self.failure_cap = max(failure_cap, failure_ttl)
        self.rejected: set[str] = set()  # key ids whose last list answered 401/403
        self.idle_seconds = idle_seconds if idle_seconds is not None else 3 * interval
        self._entries: dict[str, _Entry] = {}
        self.lists = 0  # list calls made (for tests and metrics)

    async def get(self, key_id: str, client: BlooioClient) -> Snapshot:
        """A snapshot no older than the drift interval (jittered)."""
        entry = self._entry(key_id)
        async with entry.lock:
            now = time.monotonic()
            if entry.snapshot is not None and now < entry.expires:
                return entry.snapshot
            return await self._fetch(key_id, entry, client)

    async def fresh(self, key_id: str, client: BlooioClient, *, after: float) -> Snapshot:
        """A snapshot whose list call started at or after ``after`` (wall clock)."""
        entry = self._entry(key_id)
        async with entry.lock:
            snap = entry.snapshot
            if snap is not None and snap.fetched_at >= after:
                return snap
            return await self._fetch(key_id, entry, client)

    def peek(self, key_id: str) -> Snapshot | None:
        entry = self._entries.get(key_id)
        return entry.snapshot if entry else None

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(self, key_id: str) -> _Entry:
        now = time.monotonic()
        for other, old in list(self._entries.items()):
            if now - old.used > self.idle_seconds and not old.lock.locked():
                del self._entries[other]
                self.rejected.discard(other)
        entry = self._entries.setdefault(key_id, _Entry())
        entry.used = now
        return entry

    async def _fetch(self, key: str, entry: _Entry, client: BlooioClient) -> Snapshot:
        """List (under the entry's lock), or re-raise a failure younger than its TTL."""
        now = time.monotonic()
        if entry.failure is not None and now < entry.failure_until:
            raise entry.failure
        started = time.time()
        self.lists += 1
        try:
            hooks = await client.list_webhooks()
        except Exception as exc:
            ttl = self.failure_ttl * 2 ** min(entry.failures, 32)
            ttl = min(self.failure_cap, ttl) * random.uniform(0.8, 1.0)  # noqa: S311
            entry.failure, entry.failures = exc, entry.failures + 1
            entry.failure_until = time.monotonic() + ttl
            if isinstance(exc, Unauthorized | Forbidden):
                self.rejected.add(key)
            log.warning(
                "Blooio could not list webhooks for key %s (%s failure in a row): %s; "
                "next try in %.0fs",
                key,
                _ordinal(entry.failures),
                exc,
                ttl,
            )
            raise
        if entry.failures:
            log.info(
                "Blooio lists webhooks for key %s again, after %d failed tries",
                key,
                entry.failures,
            )
        self.rejected.discard(key)
        entry.failure, entry.failures = None, 0
        entry.snapshot = Snapshot(started, {w.id: w for w in hooks})
        spread = self.interval * self.jitter
        entry.expires = now + self.interval + random.uniform(-spread, spread)  # noqa: S311
        return entry.snapshot


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
