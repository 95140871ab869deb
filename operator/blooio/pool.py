"""`ClientPool`: one shared `httpx.AsyncClient` and one `BlooioClient` per API key.

Every BlooioWebhook names the Secret holding its API key, so the operator talks to Blooio
with many keys at once. The pool owns the single connection pool they share (sized for
about 100 concurrent connections, with an explicit timeout) and gives each key its own
`KeyLimiter`, so one tenant's burst cannot consume another's budget.

Clients are keyed by the sha256 fingerprint of the key, never by the key itself, so the
mapping can be inspected or logged safely. Build one pool at startup (kopf `memo`) and
`await pool.aclose()` at cleanup. A key unused for ``idle_seconds`` (default an hour) is
dropped, so keys that no resource uses any more do not accumulate.
"""

from __future__ import annotations

import time
from types import TracebackType

import httpx
from pydantic import SecretStr

from .client import BlooioClient, OnResponse, key_fingerprint
from .fenced import fenced_transport
from .limiter import KeyLimiter
from .retry import DEFAULT_RETRY, RetryPolicy

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "ClientPool"]

# Reads are small JSON documents; 10 s is generous. A slow connect fails sooner so that
# a create (only retried before sending) gets its retry early.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0, pool=10.0)
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=50, keepalive_expiry=30.0
)


class ClientPool:
    """Hands out one `BlooioClient` per API key, all over one `httpx.AsyncClient`.

    `rate_per_key` is requests per second per key (`None`: no rate limit), with bursts
    up to `burst_per_key` (default: one second's worth). Blooio documents no limit for
    the webhook endpoints; the defaults are a courtesy, not a quota. `transport` is for
    tests (e.g. `httpx.MockTransport`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_concurrency_per_key: int = 10,
        rate_per_key: float | None = 10.0,
        burst_per_key: float | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
        on_response: OnResponse | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        idle_seconds: float = 3600.0,
    ):
        self._base_url = base_url
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._retry = retry
        self._max_concurrency = max_concurrency_per_key
        self._rate = rate_per_key
        self._burst = burst_per_key
        self._on_response = on_response
        self._http = httpx.AsyncClient(
            timeout=self._timeout,
            limits=limits,
            # The term is checked again at the socket (fenced.py); tests pass their own.
            transport=transport if transport is not None else fenced_transport(limits),
            follow_redirects=False,
        )
        self._clients: dict[str, BlooioClient] = {}
        self._used: dict[str, float] = {}  # fingerprint -> monotonic time of the last get()
        self._idle = idle_seconds
        self._pruned = time.monotonic()
        self._closed = False

    def get(self, api_key: SecretStr) -> BlooioClient:
        """The client for `api_key`, created on first use and reused afterwards."""
        if self._closed:
            raise RuntimeError("ClientPool is closed")
        fingerprint = key_fingerprint(api_key)
        now = time.monotonic()
        self._prune(now)
        self._used[fingerprint] = now
        client = self._clients.get(fingerprint)
        if client is None:
            client = BlooioClient(
                self._http,
                api_key,
                base_url=self._base_url,
                retry=self._retry,
                limiter=KeyLimiter(self._max_concurrency, self._rate, self._burst),
                timeout=self._timeout,
                on_response=self._on_response,
            )
            self._clients[fingerprint] = client
        return client

    def _prune(self, now: float) -> None:
        if now - self._pruned < min(60.0, self._idle):
            return
        self._pruned = now
        for fingerprint, used in list(self._used.items()):
            if now - used > self._idle:
                del self._used[fingerprint]
                self._clients.pop(fingerprint, None)

    def __len__(self) -> int:
        return len(self._clients)

    def __repr__(self) -> str:
        return f"ClientPool(base_url={self._base_url!r}, keys={len(self._clients)})"

    async def aclose(self) -> None:
        """Close the shared HTTP client. Clients handed out stop working."""
        self._closed = True
        self._clients.clear()
        self._used.clear()
        await self._http.aclose()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
