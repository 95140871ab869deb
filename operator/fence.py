"""The leader's term, checked before anything leaves the process (fencing).

A ``Fence`` knows until when this process may act: the send time of its last successful
Lease renewal plus the renew deadline, on this process's own clock. Every Blooio request
and every Kubernetes write the operator makes (``BlooioClient``, ``KubeClient``, and
kopf's own patches through ``leader.install_kopf_fence``) calls ``check()`` right before
it is sent. Past the term, ``check()`` calls ``on_expired`` (the elector: log, exit at
once) and raises ``TermOver``, so nothing is sent even in the instant before the process
is gone.

The clock is ``CLOCK_BOOTTIME`` where there is one: like ``time.monotonic()`` it never
jumps with the wall clock, and unlike it, it keeps counting while the machine is
suspended, so a leader frozen with its node finds out on waking. A process stopped with
SIGSTOP (or paused by a long GC) sees the same clock advance.

This module is a leaf: the clients import it, it imports nothing of the operator. The
fence of the running operator is ambient (``CURRENT``, a context variable, as kopf keeps
its own settings and credentials): ``cli`` sets it once the process leads, before kopf
starts, so every task kopf spawns and every client built in them sees it; a process
without leader election has none, and nothing is checked.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["CURRENT", "Fence", "TermOver", "clock", "current"]

_CLOCK_ID = getattr(time, "CLOCK_BOOTTIME", None)


def clock() -> float:
    """Seconds on a clock that never goes back and counts suspended time (Linux)."""
    if _CLOCK_ID is not None:
        return time.clock_gettime(_CLOCK_ID)
    return time.monotonic()


class TermOver(Exception):
    """This process's leadership term is over: nothing may be sent any more."""

    def __init__(self, action: str) -> None:
        super().__init__(f"not sent, the leadership term is over: {action}")
        self.action = action


class Fence:
    """Until when this process may send. Thread-safe: checked from the kube threads too."""

    def __init__(
        self,
        renew_deadline: float,
        *,
        on_expired: Callable[[str], None] | None = None,
        clock: Callable[[], float] = clock,
    ) -> None:
        self.renew_deadline = renew_deadline
        self._on_expired = on_expired
        self._clock = clock
        self._lock = threading.Lock()
        self._valid_until = -math.inf  # no term until the first renewal
        self._ended = False

    def extend(self, renewed_at: float) -> None:
        """A renewal sent at ``renewed_at`` (this clock) succeeded."""
        with self._lock:
            if self._ended:
                return  # a late renewal must not revive a term that was given up
            self._valid_until = max(self._valid_until, renewed_at + self.renew_deadline)

    def end(self) -> None:
        """The term is over for good (released, lost, or the process is stopping)."""
        with self._lock:
            self._valid_until = -math.inf
            self._ended = True

    @property
    def ended(self) -> bool:
        return self._ended

    def remaining(self) -> float:
        """Seconds left in the term (negative when it is over)."""
        return self._valid_until - self._clock()

    def expired(self) -> bool:
        return self.ended or self._clock() >= self._valid_until

    def check(self, action: str) -> None:
        """Raise ``TermOver`` (after telling ``on_expired``) unless the term still runs."""
        if not self.expired():
            return
        if self._on_expired is not None:
            self._on_expired(action)
        raise TermOver(action)


CURRENT: ContextVar[Fence | None] = ContextVar("blooio_operator_fence", default=None)


def current() -> Fence | None:
    """The fence of the operator this task runs in (None without leader election)."""
    return CURRENT.get()
