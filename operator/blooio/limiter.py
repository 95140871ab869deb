"""Client-side limits for one Blooio API key: a concurrency cap and a token bucket.

Blooio documents no rate limit for the webhook endpoints, but an operator that reconciles
hundreds of resources after a restart would otherwise fire every request at once. Each
API key gets its own `KeyLimiter` (see `pool.py`), so a busy tenant cannot starve another.

The client takes one slot per HTTP attempt (a retry queues again) and never holds a slot
while sleeping between retries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .retry import Sleep

__all__ = ["KeyLimiter"]


async def _asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class KeyLimiter:
    """At most `max_concurrency` requests in flight and `rate` requests per second.

    The token bucket holds up to `burst` tokens (default: `max(1, rate)`, i.e. one
    second's worth) and refills continuously. `rate=None` disables the bucket. Waiters
    are served in arrival order (asyncio locks and semaphores are FIFO).
    """

    def __init__(
        self,
        max_concurrency: int = 10,
        rate: float | None = None,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = _asyncio_sleep,
    ):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 (or None for no rate limit)")
        self.max_concurrency = max_concurrency
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate or 1.0)
        if self.burst < 1:
            raise ValueError("burst must be >= 1")
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._bucket_lock = asyncio.Lock()
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._refilled_at = clock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Requests currently holding a slot."""
        return self._in_flight

    def __repr__(self) -> str:
        return (
            f"KeyLimiter(max_concurrency={self.max_concurrency}, rate={self.rate}, "
            f"burst={self.burst}, in_flight={self._in_flight})"
        )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one concurrency slot, after taking a rate token, for one request."""
        async with self._semaphore:
            await self._take_token()
            self._in_flight += 1
            try:
                yield
            finally:
                self._in_flight -= 1

    async def _take_token(self) -> None:
        if self.rate is None:
            return
        rate = self.rate
        # Holding the lock while sleeping keeps waiters in order and stops them all
        # waking for the same token.
        async with self._bucket_lock:
            while True:
                now = self._clock()
                elapsed = max(0.0, now - self._refilled_at)
                self._tokens = min(self.burst, self._tokens + elapsed * rate)
                self._refilled_at = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await self._sleep((1 - self._tokens) / rate)
