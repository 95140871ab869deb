"""The operator-wide periodic sweep: every resource checked once per interval, spread
evenly across it, and the retries of checks that failed while acting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import kopf

from blooio_operator.handlers.registry import Registry
from blooio_operator.reconcile.context import Deps
from blooio_operator.reconcile.errors import transient_delay

log = logging.getLogger("blooio_operator.handlers")


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


class SweepChecks:
    """The periodic check of each resource, and the retries of those that failed.

    The regular pass never pre-empts a retry (a resource whose retry is scheduled or
    running is skipped), and a failure anywhere in a retry (the re-read before the step
    included) schedules the next one with the episode's growing delay: no chain is lost.
    """

    def __init__(
        self,
        registry: Registry,
        retries: SweepRetries,
        run_check: Callable[[dict[str, Any], bool], Awaitable[None]],
        forget: Callable[[str], None],
        deps: Callable[[], Deps],
    ) -> None:
        self._registry = registry
        self._retries = retries
        self._run_check = run_check
        self._forget = forget
        self._deps = deps

    def current(self) -> list[str]:
        # Resources being deleted are the finalizer's; the check skips them too.
        known = self._registry
        return [
            uid
            for uid in known.uids()
            if uid not in self._retries
            and not (known.body(uid) or {}).get("metadata", {}).get("deletionTimestamp")
        ]

    async def regular(self, uid: str) -> None:
        if uid not in self._retries:
            await self.check(uid, retrying=False)

    async def retry(self, uid: str) -> None:
        await self.check(uid, retrying=True)

    async def check(self, uid: str, *, retrying: bool) -> None:
        # The body as the registry holds it now (moments old), not as the pass began;
        # the check reads it again before it changes anything.
        body = self._registry.body(uid)
        if body is None:
            self._forget(uid)  # deleted meanwhile
            return
        try:
            await self._run_check(body, retrying)
        except kopf.TemporaryError as exc:
            # Recorded in the conditions (and an Event) by the handlers' run(); no kopf
            # handler retries what the sweep started, so the sweep does, after the delay
            # the episode's attempt count gave (reconcile.episodes).
            self._retries.schedule(uid, exc.delay or 10.0, self.retry)
        except kopf.PermanentError:
            pass  # recorded as Stalled; waits for a change of the spec
        except Exception as exc:  # outside the recorded path (the re-read before it)
            deps = self._deps()
            attempt = deps.backoff.next_attempt(uid) if retrying else 0
            delay = transient_delay(deps.settings, attempt)
            log.log(
                logging.WARNING if attempt == 0 else logging.DEBUG,
                "periodic check of %s/%s failed: %s; retrying in %.0fs",
                body["metadata"]["namespace"],
                body["metadata"]["name"],
                exc,
                delay,
            )
            if retrying:  # a retry chain is never lost; a regular check has the next pass
                self._retries.schedule(uid, delay, self.retry)


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
