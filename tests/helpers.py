"""Test helpers shared by unit, integration and chaos tests: waiting, fast settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Operator settings for tests against the real control plane (integration fixtures and
# the chaos runner): short intervals and retries so that healing shows within seconds.
FAST_OPERATOR_ENV = {
    "BLOOIO_LOG_LEVEL": "DEBUG",
    "BLOOIO_SECRET_CHECK_INTERVAL_SECONDS": "2",
    "BLOOIO_DRIFT_INTERVAL_SECONDS": "3",
    "BLOOIO_CREDENTIALS_RETRY_SECONDS": "3",
    "BLOOIO_TRANSIENT_RETRY_BASE_SECONDS": "0.5",
    "BLOOIO_TRANSIENT_RETRY_CAP_SECONDS": "3",
    "BLOOIO_RECOVERY_DELAY_SECONDS": "1",
    "BLOOIO_HTTP_TIMEOUT_SECONDS": "3",
    # /metrics open to the tests that scrape it; tests/integration/test_metrics_auth.py
    # turns the token check (the default) back on.
    "BLOOIO_METRICS_AUTH": "false",
}


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
