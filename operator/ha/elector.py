"""Leader election on a coordination.k8s.io Lease, the way client-go does it, plus fencing.

Not ``kubernetes.leaderelection``: it measures the term on the wall clock, renews from a
thread with blocking sleeps and no request timeout, and when a renewal fails it only calls
a callback while the work it protected keeps running: nothing stops a deposed leader from
writing (kubernetes-client/python#1669 and the LeaseLock PR #2690 are about other gaps of
the same module). Here the term is a ``Fence`` that every send checks, and the process
ends the instant the term does.

The rules (timings from ``ElectionConfig``):

- A standby reads the Lease every ``retry_period``. It takes it over when the holder is
  empty (released), or when the record has not changed for the record's
  ``leaseDurationSeconds`` *as measured on the standby's own clock since it saw the last
  change* (no clock is ever compared across machines). The takeover is a replace with the
  resourceVersion read: of two standbys, one wins, the other gets 409.
- The leader renews every ``retry_period`` with a replace of the version it last wrote.
  A renewal sent at ``t`` that succeeds extends the term to ``t + renew_deadline``.
  Anyone else can take over no earlier than ``lease_duration`` after observing that
  renewal, which was committed after ``t``: the margin ``lease_duration -
  renew_deadline`` separates the two terms.
- At the end of the term (no successful renewal for ``renew_deadline``) ``on_lost`` runs
  from a loop timer, and any send that comes first finds the fence expired.
- ``release()`` (a clean stop) empties the holder so a standby takes over at its next
  try instead of waiting out the lease.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from blooio_operator.ha.fence import Fence, clock
from blooio_operator.kube.client import KubeConflict, KubeError, LeaseRecord

__all__ = ["ElectionConfig", "LeaseElector", "LeaseStore"]

log = logging.getLogger("blooio_operator.leader")


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float
    renew_deadline: float
    retry_period: float

    @property
    def request_timeout(self) -> float:
        """One Lease request may take at most this long (a hung one must not eat the term)."""
        return max(1.0, min(self.renew_deadline / 2, 5.0))


class LeaseStore(Protocol):
    """The Lease calls of ``kube.KubeClient`` (a fake in unit tests)."""

    async def read_lease(
        self, namespace: str, name: str, *, request_timeout: float | None = None
    ) -> LeaseRecord | None: ...

    async def write_lease(
        self,
        namespace: str,
        name: str,
        *,
        holder: str | None,
        lease_duration_seconds: int,
        acquire_time: datetime | None,
        renew_time: datetime | None,
        transitions: int,
        resource_version: str | None,
        request_timeout: float | None = None,
    ) -> LeaseRecord: ...


class LeaseElector:
    """Acquire, renew and release one Lease; ``fence`` is the term it proves."""

    def __init__(
        self,
        leases: LeaseStore,
        config: ElectionConfig,
        *,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = clock,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._leases = leases
        self.config = config
        self._on_lost = on_lost
        self._clock = clock
        self._now = now
        self.fence = Fence(config.renew_deadline, on_expired=self._expired, clock=clock)
        self.leading = False
        self.holder: str | None = None  # the holder as last seen
        self._record: LeaseRecord | None = None  # the Lease as we last read or wrote it
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False

    # -- standby --------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this process holds the Lease (and its term has started)."""
        while True:
            if await self.try_acquire():
                return
            await asyncio.sleep(self.config.retry_period)

    async def try_acquire(self) -> bool:
        cfg = self.config
        try:
            record = await self._leases.read_lease(
                cfg.namespace, cfg.name, request_timeout=cfg.request_timeout
            )
        except KubeError as exc:
            log.warning("cannot read Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        if record is not None:
            self._observe(record)
            if record.holder and record.holder != cfg.identity:
                duration = record.lease_duration_seconds or cfg.lease_duration
                if self._clock() < self._observed_at + duration:
                    return False
                log.info(
                    "Lease %s/%s: %s has not renewed for %.0f s; taking over",
                    cfg.namespace,
                    cfg.name,
                    record.holder,
                    duration,
                )
        return await self._write(record, taking_over=True)

    def _observe(self, record: LeaseRecord) -> None:
        if record.resource_version != self._observed_version:
            self._observed_version = record.resource_version
            self._observed_at = self._clock()
        self._record = record
        if record.holder != self.holder:
            self.holder = record.holder
            if record.holder and record.holder != self.config.identity:
                log.info(
                    "Lease %s/%s is held by %s",
                    self.config.namespace,
                    self.config.name,
                    record.holder,
                )

    # -- leader ---------------------------------------------------------------------

    async def hold(self) -> None:
        """Renew every retry period, for as long as the term lasts (cancel to stop)."""
        while not self._lost:
            await asyncio.sleep(self.config.retry_period)
            await self.renew()

    async def renew(self) -> bool:
        """One renewal; True when it extended the term."""
        record = self._record
        if await self._write(record, taking_over=False):
            return True
        # Our version is stale (409) or the call failed: read what is there now.
        cfg = self.config
        try:
            current = await self._leases.read_lease(
                cfg.namespace, cfg.name, request_timeout=cfg.request_timeout
            )
        except KubeError as exc:
            log.warning("cannot read Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        if current is None or current.holder != cfg.identity:
            self._lose(f"the Lease is now held by {current.holder if current else 'nobody'}")
            return False
        self._observe(current)
        return await self._write(current, taking_over=False)

    async def release(self) -> None:
        """Give the Lease up (a clean stop), only while the term still runs."""
        self._cancel_timer()
        record = self._record
        if not self.leading or record is None or self.fence.expired():
            self.fence.end()
            return
        self.fence.end()  # nothing may be sent from now on; the release is the last write
        self.leading = False
        cfg = self.config
        now = self._now()
        try:
            await self._leases.write_lease(
                cfg.namespace,
                cfg.name,
                holder=None,
                lease_duration_seconds=1,
                acquire_time=now,
                renew_time=now,
                transitions=record.transitions,
                resource_version=record.resource_version,
                request_timeout=cfg.request_timeout,
            )
        except KubeError as exc:
            log.warning("could not release Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return
        log.info("released Lease %s/%s", cfg.namespace, cfg.name)

    # -- both -----------------------------------------------------------------------

    async def _write(self, record: LeaseRecord | None, *, taking_over: bool) -> bool:
        cfg = self.config
        if self._lost:
            return False
        if self.leading and self.fence.expired():
            # Too late to renew: the others may already count the Lease as free.
            self._lose(f"no renewal for {cfg.renew_deadline:g} s (the renew deadline)")
            return False
        now = self._now()
        ours = record is not None and record.holder == cfg.identity
        if not taking_over and not ours:
            return False
        if record is None:
            acquire_time, transitions = now, 0
        elif ours:
            acquire_time, transitions = record.acquire_time or now, record.transitions
        else:
            acquire_time = now
            transitions = record.transitions + (1 if record.holder else 0)
        sent_at = self._clock()
        try:
            written = await self._leases.write_lease(
                cfg.namespace,
                cfg.name,
                holder=cfg.identity,
                lease_duration_seconds=math.ceil(cfg.lease_duration),
                acquire_time=acquire_time,
                renew_time=now,
                transitions=transitions,
                resource_version=record.resource_version if record else None,
                request_timeout=cfg.request_timeout,
            )
        except KubeConflict:
            return False
        except KubeError as exc:
            log.warning("cannot write Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        if self._lost:
            return False
        self._record = written
        self._observed_version = written.resource_version
        self._observed_at = sent_at
        self.holder = cfg.identity
        self.fence.extend(sent_at)
        if not self.leading:
            self.leading = True
            log.info("leading: acquired Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
        self._arm_timer()
        return True

    def _arm_timer(self) -> None:
        # The end of the term as a loop timer: after a pause (SIGSTOP, a frozen VM) every
        # timer that came due runs in the same loop iteration, before any task they wake.
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, self.fence.remaining()), self._deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> None:
        self._timer = None
        if self._lost or self.fence.ended:
            return
        if not self.fence.expired():  # renewed meanwhile, or the loop's clock runs ahead
            self._arm_timer()
            return
        self._lose(f"no renewal for {self.config.renew_deadline:g} s (the renew deadline)")

    def _expired(self, action: str) -> None:
        if self.fence.ended:
            return  # a clean stop: the caller gets TermOver, the process is leaving anyway
        self._lose(f"the term ran out before: {action}")

    def _lose(self, reason: str) -> None:
        # May run in a kube thread (a fenced write found the term over): touch only
        # plain attributes here; the loop timer sees _lost and does nothing.
        if self._lost:
            return
        self._lost = True
        self.leading = False
        self.fence.end()
        self._on_lost(reason)
