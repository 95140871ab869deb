"""The registry tells the truth after a watch gap.

kopf sends no DELETED for an object that vanished while its watch was away: after a
``410 Gone``, a reconnect or an API server restart it lists again (every listed object
arrives as an event of type ``None``) and goes on watching, so the registry would keep a
vanished resource's body and webhook claim for good: its webhook could never be adopted
("held by another BlooioWebhook") and the sweeps would go on checking it.

``RelistAudit`` notices such a listing by its ``None`` events. Once they have stopped
for ``quiet`` seconds, the uids no event confirmed since the listing began (and claims
seeded at start-up that no event ever confirmed) are *suspects*; when there are any, one
paginated list of BlooioWebhooks decides, and the suspects it does not hold are
forgotten (claims released, sweeps and health reads stopped). A start-up listing in
which every object shows up costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from blooio_operator.handlers.registry import Registry

log = logging.getLogger("blooio_operator.handlers")


class RelistAudit:
    def __init__(
        self,
        registry: Registry,
        list_live: Callable[[], Awaitable[set[str]]],
        forget: Callable[[str], None],
        *,
        quiet: float = 2.0,
        retry: float = 10.0,
    ) -> None:
        self._registry = registry
        self._list_live = list_live
        self._forget = forget
        self._quiet = quiet
        self._retry = retry
        self._began: float | None = None  # the running listing's first event (monotonic)
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None
        self.audits = 0  # lists made (for tests)
        self.forgotten = 0

    def listed(self) -> None:
        """An event of type ``None``: kopf is listing."""
        now = time.monotonic()
        if self._began is None:
            self._began = now
        self._last = now
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._settle(), name="relist")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _settle(self) -> None:
        while True:
            wait = self._last + self._quiet - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            began, self._began = self._began, None
            if began is None:
                return
            try:
                await self.audit(began)
            except Exception as exc:  # the API server is away again: its re-list will retry
                log.info("could not audit the registry after a re-list (%s); retrying", exc)
                self._began = began if self._began is None else min(began, self._began)
                self._last = time.monotonic() + self._retry - self._quiet
                continue
            if self._began is None:
                return

    async def audit(self, since: float) -> list[str]:
        """Forget what no event confirmed since ``since`` and a fresh list does not hold."""
        suspects = self._registry.unconfirmed(since)
        if not suspects:
            return []
        started = time.monotonic()
        self.audits += 1
        live = await self._list_live()
        gone = [
            uid
            for uid in suspects
            if uid not in live and not self._registry.observed_since(uid, started)
        ]
        for uid in gone:
            self._forget(uid)
        self.forgotten += len(gone)
        if gone:
            log.info("forgot %d BlooioWebhook(s) deleted while the watch was away", len(gone))
        return gone
