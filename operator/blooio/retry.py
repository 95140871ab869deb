"""Retry timing for the Blooio client: the policy, the one backoff formula, Retry-After.

This module owns *how long* to wait; `client.py` owns *whether* a call may be retried at
all (see its docstring for the per-endpoint rules).

- `backoff_delay` is the one place a delay is computed: capped exponential backoff with
  full jitter, `uniform(0, min(cap, base * 2**attempt))`, and never below the server's
  `Retry-After`.
- `RetryPolicy` defaults follow the only Blooio client that documents them (the community
  Rust crate: 2 retries, 0.5 s base, 20 s cap, full jitter) and match the Stainless SDKs'
  default of 2 retries.
- A `Retry-After` longer than `cap` is not waited out inside the client: the error is
  raised with `retry_after` set so the reconcile layer can reschedule the handler
  (`kopf.TemporaryError(delay=...)`) instead of holding a worker for minutes.
- `sleep` is injectable so tests run instantly and can assert the delays chosen.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["DEFAULT_RETRY", "RetryPolicy", "Sleep", "backoff_delay", "parse_retry_after"]

Sleep = Callable[[float], Awaitable[None]]

# 2**64 * base already exceeds any sensible cap; clamping keeps the float finite.
_MAX_EXPONENT = 64


async def _asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long the client retries a retryable failure.

    `max_retries` counts retries, not attempts: 2 means at most 3 requests.
    """

    max_retries: int = 2
    base: float = 0.5
    cap: float = 20.0
    sleep: Sleep = field(default=_asyncio_sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must be >= 0")


DEFAULT_RETRY = RetryPolicy()


def backoff_delay(attempt: int, *, base: float, cap: float, retry_after: float | None) -> float:
    """Seconds to wait before retry number `attempt + 1` (`attempt` counts from 0).

    Full jitter: a uniform draw from `[0, min(cap, base * 2**attempt)]`, so concurrent
    clients that failed together spread out. The result is never below `retry_after`
    (the server's `Retry-After`), even when that exceeds `cap`.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    delay = random.uniform(0.0, ceiling)  # noqa: S311 - jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a `Retry-After` header into seconds from now (RFC 9110 section 10.2.3).

    Accepts delta-seconds (`"120"`; fractions are tolerated) and an HTTP-date
    (`"Wed, 21 Oct 2015 07:28:00 GMT"`). A date in the past gives 0. Anything else,
    negative numbers included, gives None: a malformed header must not stall a retry.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 5322 "-0000" parses as naive; HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())
