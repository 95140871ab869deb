"""The operator-wide periodic sweep: every resource checked once per interval, spread
evenly across it, and the retries of checks that failed while acting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class SweepRetries:
    """Checks that failed, due again after their retry delay (one per uid).

    The regular pass never pre-empts a retry: a uid whose retry is scheduled or running
    is skipped by it (``in``), so the retry keeps its attempt count and its delay.
    """

    def __init__(self) -> None:
        self._due: dict[str, asyncio.TimerHandle] = {}
        self._active: set[str] = set()
        self._running: set[asyncio.Task[None]] = set()

    def schedule(
        self, uid: str, delay: float, check: Callable[[str], Coroutine[Any, Any, None]]
    ) -> None:
        self.discard(uid)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._due.pop(uid, None)
            self._active.add(uid)
            task = loop.create_task(check(uid))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _: self._active.discard(uid))

        self._due[uid] = loop.call_later(delay, fire)

    def discard(self, uid: str) -> bool:
        """Forget ``uid``'s scheduled retry; True when there was one."""
        handle = self._due.pop(uid, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def __contains__(self, uid: object) -> bool:
        return uid in self._due or uid in self._active

    def __len__(self) -> int:
        return len(self._due)

    async def close(self) -> None:
        for handle in self._due.values():
            handle.cancel()
        self._due.clear()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


async def periodic_sweep(
    current: Callable[[], list[str]],
    check: Callable[[str], Awaitable[None]],
    *,
    interval: float,
    concurrency: int = 8,
    retries: SweepRetries | None = None,
) -> None:
    """Check every resource once per ``interval``, spread evenly across it.

    One task for all resources instead of a kopf timer per resource: a timer holds a
    live copy of its object's whole body (managedFields included), the timers of objects
    applied together tick together, and kopf makes a deletion wait for a busy timer.
    The uids are taken from the registry as each pass starts (one that appears later is
    checked on the next pass); each check looks its body up when its turn comes.
    """
    gate = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def one(uid: str) -> None:
        try:
            await check(uid)
        finally:
            gate.release()

    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(interval)
        while True:
            started = loop.time()
            due = current()
            gap = interval / len(due) if due else 0.0
            for uid in due:
                await gate.acquire()
                task = asyncio.create_task(one(uid))
                running.add(task)
                task.add_done_callback(running.discard)
                await asyncio.sleep(gap)
            await asyncio.sleep(max(0.0, started + interval - loop.time()))
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if retries is not None:
            await retries.close()
