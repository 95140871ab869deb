"""Per-key limits (KeyLimiter) and the ClientPool that hands out one client per key."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from blooio_operator.blooio import ClientPool, KeyLimiter, RetryPolicy, key_fingerprint

KEY_A = "bl_live_tenant_a_never_leak_0001"
KEY_B = "bl_live_tenant_b_never_leak_0002"
BASE_URL = "https://api.blooio.test/v4"
WEBHOOK = {"id": "wh_1", "url": "https://r.test/h", "event_types": ["*"], "status": "active"}


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until `condition()` holds, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.001)


class GatedServer:
    """Async MockTransport handler that holds requests of gated keys until released."""

    def __init__(self, gated: set[str]):
        self.gated = gated
        self.gate = asyncio.Event()
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.done: Counter[str] = Counter()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        self.in_flight[key] += 1
        self.peak[key] = max(self.peak[key], self.in_flight[key])
        try:
            if key in self.gated:
                await self.gate.wait()
            return httpx.Response(200, json={"data": WEBHOOK})
        finally:
            self.in_flight[key] -= 1
            self.done[key] += 1


async def test_concurrency_is_capped_per_key_and_keys_are_independent() -> None:
    server = GatedServer(gated={KEY_A})
    pool = ClientPool(
        BASE_URL,
        max_concurrency_per_key=2,
        rate_per_key=None,
        transport=httpx.MockTransport(server),
    )
    try:
        client_a = pool.get(SecretStr(KEY_A))
        client_b = pool.get(SecretStr(KEY_B))
        tasks_a = [asyncio.create_task(client_a.get_webhook("wh_1")) for _ in range(8)]
        await wait_for(lambda: server.in_flight[KEY_A] == 2)

        # Key A is saturated and stuck; key B still goes through, in parallel.
        results_b = await asyncio.wait_for(
            asyncio.gather(*(client_b.get_webhook("wh_1") for _ in range(4))), timeout=5
        )
        assert len(results_b) == 4
        assert server.in_flight[KEY_A] == 2
        assert server.done[KEY_A] == 0
        assert client_a.limiter is not None
        assert client_a.limiter.in_flight == 2

        server.gate.set()
        await asyncio.wait_for(asyncio.gather(*tasks_a), timeout=5)
        assert server.done[KEY_A] == 8
        assert server.peak[KEY_A] == 2
        assert server.peak[KEY_B] <= 2
    finally:
        await pool.aclose()


async def test_limiter_caps_concurrency() -> None:
    limiter = KeyLimiter(max_concurrency=3)
    release = asyncio.Event()
    peak = 0

    async def work() -> None:
        nonlocal peak
        async with limiter.slot():
            peak = max(peak, limiter.in_flight)
            await release.wait()

    tasks = [asyncio.create_task(work()) for _ in range(10)]
    await wait_for(lambda: limiter.in_flight == 3)
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert peak == 3
    assert limiter.in_flight == 0


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_token_bucket_limits_rate_after_the_burst() -> None:
    fake = FakeTime()
    limiter = KeyLimiter(max_concurrency=10, rate=2.0, burst=2, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        async with limiter.slot():
            pass
    # Two tokens of burst, then one token every 1/rate seconds.
    assert fake.sleeps == pytest.approx([0.5, 0.5, 0.5])
    assert fake.now == pytest.approx(1001.5)


async def test_token_bucket_refills_up_to_the_burst_only() -> None:
    fake = FakeTime()
    limiter = KeyLimiter(max_concurrency=10, rate=1.0, burst=3, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        async with limiter.slot():
            pass
    assert fake.sleeps == []
    fake.now += 60  # idle for a minute: the bucket refills to 3, not 60
    for _ in range(4):
        async with limiter.slot():
            pass
    assert fake.sleeps == pytest.approx([1.0])


def test_limiter_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        KeyLimiter(max_concurrency=0)
    with pytest.raises(ValueError, match="rate"):
        KeyLimiter(rate=0)
    with pytest.raises(ValueError, match="burst"):
        KeyLimiter(rate=5, burst=0.5)


async def test_pool_hands_out_one_client_per_key() -> None:
    pool = ClientPool(BASE_URL, transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    try:
        a1 = pool.get(SecretStr(KEY_A))
        a2 = pool.get(SecretStr(KEY_A))
        b = pool.get(SecretStr(KEY_B))
        assert a1 is a2
        assert a1 is not b
        assert a1.limiter is not b.limiter
        assert len(pool) == 2
        assert a1.key_fingerprint == key_fingerprint(SecretStr(KEY_A))[:12]
        assert a1.key_fingerprint != b.key_fingerprint
        for text in (repr(pool), str(pool), repr(a1), str(b), repr(a1.limiter)):
            assert KEY_A not in text
            assert KEY_B not in text
        # The pool is keyed by fingerprint: no key appears in its mapping either.
        assert all(KEY_A not in k and KEY_B not in k for k in vars(pool)["_clients"])
    finally:
        await pool.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        pool.get(SecretStr(KEY_A))


async def test_pool_clients_use_its_timeout_retry_and_metrics_hook() -> None:
    seen: list[tuple[str, str, float]] = []
    requests: list[httpx.Request] = []
    answers = iter([httpx.Response(503), httpx.Response(200, json={"data": WEBHOOK})])

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(answers)

    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    timeout = httpx.Timeout(3.0, connect=1.0)
    async with ClientPool(
        BASE_URL,
        timeout=timeout,
        retry=RetryPolicy(sleep=record_sleep),
        on_response=lambda *args: seen.append(args),
        transport=httpx.MockTransport(handler),
    ) as pool:
        webhook = await pool.get(SecretStr(KEY_A)).get_webhook("wh_1")

    assert webhook.id == "wh_1"
    assert [(e, s) for e, s, _ in seen] == [
        ("GET /webhooks/{id}", "503"),
        ("GET /webhooks/{id}", "200"),
    ]
    assert len(sleeps) == 1
    assert all(r.extensions["timeout"] == timeout.as_dict() for r in requests)
    assert requests[0].headers["authorization"] == f"Bearer {KEY_A}"
