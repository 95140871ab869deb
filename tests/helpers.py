"""Test helpers shared by unit and integration tests: deadline-based waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll ``probe`` until it returns a truthy value, or fail after ``timeout`` seconds.

    Exceptions from the probe count as "not yet" so transient API errors do not end
    the wait early; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last_value = value
        except Exception as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            detail = f"; last error: {last_exc!r}" if last_exc else f"; last value: {last_value!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)
