"""Fault injection: each mode demonstrated against a real client, plus the faults admin API.

Every test here would fail if the fault did nothing: it asserts the client-visible
effect (a delay, a status, a header, a timeout, a broken connection) and the stored state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from blooio_operator.simulator import Faults, Simulator

KEY = "bl_live_fault_key"
URL = "https://hooks.example.com/blooio"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator([KEY], seed=1234)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=sim.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
async def admin(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.admin_url, timeout=10) as client:
        yield client


async def timed(coro: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await coro
    return result, time.monotonic() - started


# --- latency ------------------------------------------------------------------------------


async def test_latency_is_added_to_every_request(sim: Simulator, api: httpx.AsyncClient) -> None:
    _, baseline = await timed(api.get("/webhooks"))
    assert baseline < 0.3

    sim.faults.set(latency_ms=400)
    response, slowed = await timed(api.get("/webhooks"))
    assert response.status_code == 200
    assert slowed >= 0.4

    sim.faults.clear()
    _, restored = await timed(api.get("/webhooks"))
    assert restored < 0.3


async def test_constructor_latency_is_the_baseline_that_clear_restores() -> None:
    sim = Simulator([KEY], latency_ms=400)
    await sim.start()
    try:
        async with httpx.AsyncClient(
            base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}
        ) as client:
            _, first = await timed(client.get("/webhooks"))
            sim.faults.set(latency_ms=0)
            _, none = await timed(client.get("/webhooks"))
            sim.faults.clear()
            _, again = await timed(client.get("/webhooks"))
        assert first >= 0.4
        assert again >= 0.4
        assert none < 0.3
    finally:
        await sim.stop()


async def test_latency_rule_limited_to_one_endpoint_and_count(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    sim.faults.latency(400, endpoint="POST /webhooks", count=1)
    _, unaffected = await timed(api.get("/webhooks"))
    _, slowed = await timed(api.post("/webhooks", json={"url": URL}))
    _, after_count = await timed(api.post("/webhooks", json={"url": URL}))
    assert unaffected < 0.3
    assert slowed >= 0.4
    assert after_count < 0.3


async def test_jitter_is_bounded_and_reproducible_with_a_seed() -> None:
    def draws(seed: int) -> list[float]:
        faults = Faults(latency_ms=50, jitter_ms=20, seed=seed)
        return [faults.delay_seconds("GET /webhooks", "k") for _ in range(50)]

    first, second = draws(9), draws(9)
    assert first == second
    assert all(0.05 <= d <= 0.07 for d in first)
    assert len(set(first)) > 1
    assert draws(10) != first


async def test_concurrent_requests_overlap_their_latency(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    # 100 creates at 200 ms each must not serialise (20 s); the benchmark relies on this.
    sim.faults.set(latency_ms=200)
    started = time.monotonic()
    responses = await asyncio.gather(
        *(api.post("/webhooks", json={"url": f"https://h{i}.example.com/"}) for i in range(100))
    )
    elapsed = time.monotonic() - started
    assert all(r.status_code == 201 for r in responses)
    assert len(sim.state.webhooks) == 100
    assert elapsed < 6.0


# --- 5xx and 429 ----------------------------------------------------------------------------


async def test_error_fault_returns_5xx_for_the_next_n_requests(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    sim.faults.error(503, endpoint="POST /webhooks", count=2)
    statuses = [(await api.post("/webhooks", json={"url": URL})).status_code for _ in range(3)]
    assert statuses == [503, 503, 201]
    assert len(sim.state.webhooks) == 1  # errored requests did not commit


async def test_error_fault_body_and_retry_after(sim: Simulator, api: httpx.AsyncClient) -> None:
    sim.faults.error(500, count=1)
    response = await api.get("/webhooks")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "Retry-After" not in response.headers

    sim.faults.error(502, count=1, body="<html>bad gateway</html>", retry_after=3)
    response = await api.get("/webhooks")
    assert response.status_code == 502
    assert response.text == "<html>bad gateway</html>"
    assert response.headers["Retry-After"] == "3"


async def test_error_fault_scoped_to_an_endpoint(sim: Simulator, api: httpx.AsyncClient) -> None:
    sim.faults.error(500, endpoint="DELETE /webhooks/{webhookId}")  # OpenAPI spelling
    created = (await api.post("/webhooks", json={"url": URL})).json()["data"]
    assert (await api.get(f"/webhooks/{created['id']}")).status_code == 200
    assert (await api.delete(f"/webhooks/{created['id']}")).status_code == 500
    assert created["id"] in sim.state.webhooks


async def test_probability_is_reproducible_with_a_seed() -> None:
    async def pattern(seed: int) -> list[int]:
        sim = Simulator([KEY], seed=seed)
        sim.faults.error(500, probability=0.5)
        await sim.start()
        try:
            async with httpx.AsyncClient(
                base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}
            ) as client:
                return [(await client.get("/webhooks")).status_code for _ in range(40)]
        finally:
            await sim.stop()

    first = await pattern(5)
    assert first == await pattern(5)
    assert 5 < first.count(500) < 35
    assert set(first) == {200, 500}


async def test_rate_limit_returns_429_with_retry_after(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    sim.faults.rate_limit(retry_after=2, count=1)
    limited = await api.get("/webhooks")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    assert limited.json()["error"]["code"] == "rate_limited"
    assert (await api.get("/webhooks")).status_code == 200


async def test_rate_limit_default_retry_after_is_one_second(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    sim.faults.rate_limit(count=1)
    assert (await api.get("/webhooks")).headers["Retry-After"] == "1"


async def test_rate_limit_token_bucket_per_key(sim: Simulator, api: httpx.AsyncClient) -> None:
    sim.faults.rate_limit(per_second=2, burst=2)
    statuses = [(await api.get("/webhooks")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = await api.get("/webhooks")
    assert int(limited.headers["Retry-After"]) >= 1

    other = "bl_live_second_key"
    sim.add_api_key(other)
    async with httpx.AsyncClient(
        base_url=sim.url, headers={"Authorization": f"Bearer {other}"}
    ) as second:
        assert (await second.get("/webhooks")).status_code == 200  # its own bucket

    await asyncio.sleep(0.6)
    assert (await api.get("/webhooks")).status_code == 200  # refilled


# --- hangs, resets, commit-then-drop ----------------------------------------------------------


async def test_hang_until_the_client_gives_up(sim: Simulator, api: httpx.AsyncClient) -> None:
    sim.faults.hang(endpoint="POST /webhooks", count=1)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await api.post("/webhooks", json={"url": URL}, timeout=0.4)
    assert time.monotonic() - started >= 0.4
    await asyncio.sleep(0.2)
    assert sim.state.webhooks == {}  # never processed
    (call,) = sim.calls.entries
    assert call["fault"] == "hang"
    assert call["status"] is None

    assert (await api.post("/webhooks", json={"url": URL})).status_code == 201


async def test_hang_for_n_seconds_then_answer(sim: Simulator, api: httpx.AsyncClient) -> None:
    sim.faults.hang(0.4, count=1)
    response, elapsed = await timed(api.get("/webhooks"))
    assert response.status_code == 200
    assert elapsed >= 0.4


async def test_hang_past_the_client_timeout_still_commits(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    # The ambiguous create: the client times out, the server commits afterwards.
    sim.faults.hang(0.5, endpoint="POST /webhooks", count=1)
    with pytest.raises(httpx.ReadTimeout):
        await api.post("/webhooks", json={"url": URL}, timeout=0.2)
    assert sim.state.webhooks == {}
    async with asyncio.timeout(5):
        while not sim.state.webhooks:
            await asyncio.sleep(0.05)
    assert len(sim.state.webhooks) == 1


async def test_connection_reset(sim: Simulator, api: httpx.AsyncClient) -> None:
    sim.faults.connection_reset(endpoint="POST /webhooks", count=1)
    with pytest.raises(httpx.TransportError) as raised:
        await api.post("/webhooks", json={"url": URL})
    assert not isinstance(raised.value, httpx.TimeoutException)
    assert sim.state.webhooks == {}
    (call,) = sim.calls.entries
    assert call["fault"] == "connection_reset"
    assert call["status"] is None
    assert (await api.post("/webhooks", json={"url": URL})).status_code == 201


async def test_commit_then_drop_stores_the_webhook_but_loses_the_response(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    sim.faults.commit_then_drop(count=1)
    with pytest.raises(httpx.TransportError) as raised:
        await api.post("/webhooks", json={"url": URL})
    assert not isinstance(raised.value, httpx.TimeoutException)

    (stored,) = sim.state.webhooks.values()
    listed = (await api.get("/webhooks")).json()["data"]
    assert [w["id"] for w in listed] == [stored.id]
    (call, _) = sim.calls.entries
    assert (call["endpoint"], call["status"], call["fault"]) == (
        "POST /webhooks",
        201,
        "commit_then_drop",
    )
    assert (await api.post("/webhooks", json={"url": URL})).status_code == 201


async def test_commit_then_drop_only_fires_on_success(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    rule = sim.faults.commit_then_drop(count=1)
    invalid = await api.post("/webhooks", json={"url": "http://insecure.example.com/"})
    assert invalid.status_code == 422
    assert rule.count == 1
    with pytest.raises(httpx.TransportError):
        await api.post("/webhooks", json={"url": URL})
    assert rule.count == 0
    assert rule.fired == 1


async def test_first_firing_rule_wins_and_counts_are_consumed_in_order(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    sim.faults.error(500, count=1)
    sim.faults.rate_limit(count=1)
    statuses = [(await api.get("/webhooks")).status_code for _ in range(3)]
    assert statuses == [500, 429, 200]


async def test_stop_does_not_wait_for_hanging_requests(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    sim.faults.hang()
    pending = asyncio.create_task(api.get("/webhooks", timeout=30))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(httpx.TransportError):
        await pending


# --- the faults admin API -----------------------------------------------------------------------


async def test_put_get_delete_faults_over_http(
    sim: Simulator, api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    config = {
        "latency_ms": 10,
        "jitter_ms": 5,
        "seed": 99,
        "rules": [
            {"kind": "error", "endpoint": "GET /webhooks", "count": 1, "status": 504},
            {"kind": "rate_limit", "endpoints": ["POST /v4/webhooks"], "retry_after": 7},
        ],
    }
    put = await admin.put("/_sim/faults", json=config)
    assert put.status_code == 200, put.text

    assert (await api.get("/webhooks")).status_code == 504
    limited = await api.post("/webhooks", json={"url": URL})
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")

    shown = (await admin.get("/_sim/faults")).json()
    assert (shown["latency_ms"], shown["jitter_ms"], shown["seed"]) == (10, 5, 99)
    error_rule, limit_rule = shown["rules"]
    assert (error_rule["kind"], error_rule["count"], error_rule["fired"]) == ("error", 0, 1)
    assert error_rule["endpoints"] == ["GET /webhooks"]
    assert (limit_rule["kind"], limit_rule["count"], limit_rule["fired"]) == ("rate_limit", None, 1)

    cleared = await admin.delete("/_sim/faults")
    assert cleared.json() == {"latency_ms": 0.0, "jitter_ms": 0.0, "seed": 99, "rules": []}
    assert (await api.post("/webhooks", json={"url": URL})).status_code == 201


async def test_put_replaces_and_post_appends(
    sim: Simulator, api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await admin.put("/_sim/faults", json={"rules": [{"kind": "error", "status": 500}]})
    await admin.put("/_sim/faults", json={"rules": [{"kind": "reset", "count": 1}]})
    appended = await admin.post("/_sim/faults", json={"kind": "429", "count": 1})
    assert [r["kind"] for r in appended.json()["rules"]] == ["connection_reset", "rate_limit"]
    more = await admin.post("/_sim/faults", json=[{"kind": "drop", "count": 1}])
    assert [r["kind"] for r in more.json()["rules"]][-1] == "commit_then_drop"

    with pytest.raises(httpx.TransportError):
        await api.get("/webhooks")
    assert (await api.get("/webhooks")).status_code == 429


@pytest.mark.parametrize(
    "config",
    [
        {"rules": [{"kind": "explode"}]},
        {"rules": [{"kind": "error", "endpoint": "GET /nothing"}]},
        {"rules": [{"kind": "error", "endpoint": "POST /webhooks/wh_123"}]},
        {"rules": [{"kind": "error", "probability": 2}]},
        {"rules": [{"kind": "error", "count": -1}]},
        {"rules": [{"kind": "error", "count": 1.5}]},
        {"rules": [{"kind": "error", "status": 700}]},
        {"rules": [{"kind": "error", "colour": "red"}]},
        {"rules": [{"kind": "latency", "ms": "slow"}]},
        {"rules": [{"kind": "rate_limit", "per_second": 0}]},
        {"rules": {"kind": "error"}},
        {"rules": ["error"]},
        {"latency_ms": -5},
        {"seed": "abc"},
        {"unknown": 1},
    ],
)
async def test_invalid_fault_config_is_400_and_keeps_the_old_one(
    sim: Simulator, admin: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    sim.faults.error(503, count=3)
    response = await admin.put("/_sim/faults", json=config)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_faults"
    assert [r.kind for r in sim.faults.rules] == ["error"]


async def test_endpoint_spellings_are_normalised(sim: Simulator) -> None:
    rule = sim.faults.error(
        500,
        endpoint=[
            "get /v4/webhooks/{webhookId}/logs",
            "POST /webhooks/{webhookId}/logs/{deliveryId}/replay",
        ],
    )
    assert rule.endpoints == (
        "GET /webhooks/{id}/deliveries",
        "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
    )


async def test_logs_alias_is_covered_by_the_deliveries_endpoint_fault(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    created = (await api.post("/webhooks", json={"url": URL})).json()["data"]
    sim.faults.error(500, endpoint="GET /webhooks/{id}/deliveries")
    assert (await api.get(f"/webhooks/{created['id']}/logs")).status_code == 500
    assert (await api.get(f"/webhooks/{created['id']}")).status_code == 200


async def test_faults_do_not_touch_the_admin_api(sim: Simulator, admin: httpx.AsyncClient) -> None:
    sim.faults.error(500)
    sim.faults.set(latency_ms=1000, rules=sim.faults.rules)
    response, elapsed = await timed(admin.get("/_sim/webhooks"))
    assert response.status_code == 200
    assert elapsed < 0.8
