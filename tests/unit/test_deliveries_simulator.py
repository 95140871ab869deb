"""The simulator's side of delivery health and replays, through the operator's client:
the newest deliveries after many pages, replays whose outcome arrives later, faults on
both endpoints; and the handler's per-resource timers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from blooio_operator.blooio import (
    BlooioClient,
    CreateWebhookRequest,
    RetryPolicy,
    ServerError,
)
from blooio_operator.handlers.deliveries import DueTimers
from blooio_operator.reconcile.deliveries import list_deliveries, verdict
from blooio_operator.simulator import Simulator

KEY = "bl_live_unit_deliveries_sim"


@pytest.fixture
async def world() -> AsyncIterator[tuple[Simulator, BlooioClient, str, list[int]]]:
    codes = [204]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=codes[0])

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    target = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    sim = Simulator([KEY])
    await sim.start()
    http = httpx.AsyncClient(timeout=10)
    client = BlooioClient(http, SecretStr(KEY), base_url=sim.url, retry=RetryPolicy(max_retries=0))
    hook = await client.create_webhook(CreateWebhookRequest(url="https://hooks.example.com/x"))
    sim.state.webhooks[hook.id].url = target  # deliveries go to the local receiver
    try:
        yield sim, client, hook.id, codes
    finally:
        await http.aclose()
        await sim.stop()
        await runner.cleanup()


async def wait_past_ms(ms: int) -> None:
    async with asyncio.timeout(1):
        while time.time() * 1000 <= ms + 1:
            await asyncio.sleep(0.001)


async def test_newest_deliveries_are_on_the_last_page(
    world: tuple[Simulator, BlooioClient, str, list[int]],
) -> None:
    sim, client, webhook_id, codes = world
    for _ in range(450):
        last = await sim.deliver(webhook_id)
    # Timestamps are milliseconds: 451 deliveries share some. The newest must be newer
    # than the rest for "newest" to have one answer (a tie is a tie at Blooio too).
    await wait_past_ms(last.created_at)
    codes[0] = 500
    newest = await sim.deliver(webhook_id)
    first_page, complete = await client.list_deliveries_bounded(webhook_id, max_pages=1)
    assert not complete
    assert newest.id not in {d.id for d in first_page}  # oldest first, as documented
    one = await list_deliveries(client, webhook_id, max_pages=1)
    assert verdict(one, max_pages=1)[1] == "NewestDeliveryUnknown"
    three = await list_deliveries(client, webhook_id, max_pages=3)
    assert three.complete
    assert three.newest is not None
    assert three.newest.id == newest.id
    assert verdict(three, max_pages=3)[:2] == ("False", "ReceiverFailing")
    assert sim.calls.counts["GET /webhooks/{id}/deliveries"] == 1 + 1 + 3


async def test_replay_outcome_arrives_later(
    world: tuple[Simulator, BlooioClient, str, list[int]],
) -> None:
    sim, client, webhook_id, codes = world
    codes[0] = 401
    original = await sim.deliver(webhook_id)
    codes[0] = 204
    sim.replay_delay = 0.4
    queued = await client.replay_delivery(webhook_id, original.id)
    assert queued.replay_of == original.id
    assert queued.status == "queued"
    listed = {d.id: d for d in (await client.list_deliveries_bounded(webhook_id, max_pages=1))[0]}
    assert listed[queued.id].status == "queued"  # listed at once, outcome not yet known
    assert listed[queued.id].response_status is None
    assert listed[queued.id].event_id == original.event_id  # a replay re-sends the event
    await asyncio.wait_for(sim.drain(), 5)
    listed = {d.id: d for d in (await client.list_deliveries_bounded(webhook_id, max_pages=1))[0]}
    assert (listed[queued.id].status, listed[queued.id].response_status) == ("delivered", 204)


async def test_faults_on_both_endpoints(
    world: tuple[Simulator, BlooioClient, str, list[int]],
) -> None:
    sim, client, webhook_id, _ = world
    original = await sim.deliver(webhook_id)
    sim.faults.add({"kind": "error", "status": 503, "endpoint": "GET /webhooks/{id}/deliveries"})
    sim.faults.add(
        {
            "kind": "error",
            "status": 500,
            "endpoint": "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
        }
    )
    with pytest.raises(ServerError):
        await client.list_deliveries_bounded(webhook_id, max_pages=1)
    with pytest.raises(ServerError):
        await client.replay_delivery(webhook_id, original.id)
    assert len(sim.state.webhooks[webhook_id].deliveries) == 1  # nothing was replayed
    sim.faults.clear()
    sim.faults.add(
        {
            "kind": "commit_then_drop",
            "endpoint": "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
            "count": 1,
        }
    )
    with pytest.raises(Exception):  # noqa: B017,PT011 - the answer was lost
        await client.replay_delivery(webhook_id, original.id)
    # ... but the replay was queued, and the list shows it (what crash recovery relies on).
    listed, _ = await client.list_deliveries_bounded(webhook_id, max_pages=1)
    assert [d.event_id for d in listed].count(original.event_id) == 2


async def test_due_timers_run_once_at_a_time_and_keep_the_earliest() -> None:
    runs: list[str] = []
    running = 0
    peak = 0
    next_due: dict[str, float | None] = {"a": None, "b": None}

    async def step(uid: str) -> float | None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        runs.append(uid)
        await asyncio.sleep(0.05)
        running -= 1
        return next_due[uid]

    timers = DueTimers(step)
    now = time.time()
    timers.set("a", now + 0.05)
    timers.set("a", now + 10)  # a later time replaces
    assert timers.due("a") == now + 10
    timers.set("a", now)
    timers.set("b", now)
    await asyncio.sleep(0.01)
    timers.set("a", now)  # while "a" runs: held, applied when it ends
    await asyncio.sleep(0.2)
    assert runs.count("a") == 2
    assert runs.count("b") == 1
    timers.set("b", None)
    assert timers.due("b") is None
    await timers.close()


async def test_due_timers_retry_failures_with_backoff() -> None:
    calls = 0

    async def step(uid: str) -> float | None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("blooio down")
        return None

    timers = DueTimers(step, failure_delay=lambda exc, n: 0.02 * n)
    timers.set("a", time.time())
    deadline = time.monotonic() + 2
    while calls < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert calls == 3
    await asyncio.sleep(0.05)
    assert timers.due("a") is None
    await timers.close()
