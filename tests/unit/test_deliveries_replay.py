"""Replays after a signing-secret change and on request (reconcile/replay.py), against the
simulator in-process and a real receiver (aiohttp) that verifies signatures with the
secret it currently "has"; status lives in the fake Kubernetes of tests/unit/fakes.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from blooio_operator.blooio import BlooioClient, CreateWebhookRequest, ReplayResult
from blooio_operator.models import reasons
from blooio_operator.reconcile import replay, replay_plan
from blooio_operator.reconcile.context import WebhookContext, now_iso
from blooio_operator.simulator import Simulator
from blooio_operator.simulator.signing import SIGNATURE_HEADER, verify
from tests.unit.fakes import NAME, NAMESPACE, UID, FakeEvents, FakeKube, make_deps, make_settings

KEY = "bl_live_unit_replay_key"
URL = "https://hooks.example.com/blooio"


@dataclass
class Receiver:
    """Accepts a delivery only if it is signed with ``secret`` (like examples/receiver)."""

    secret: str = ""
    status_override: int | None = None
    url: str = ""
    accepted: list[str] = field(default_factory=list)  # event ids, in order
    rejected: list[str] = field(default_factory=list)


class CrashNow(BaseException):
    """Stands in for SIGKILL: nothing after it runs, nothing catches it."""


class Crashing:
    """A BlooioClient wrapper that dies before or after the nth replay."""

    def __init__(self, client: BlooioClient, *, nth: int, after: bool) -> None:
        self._client = client
        self._nth = nth
        self._after = after
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def replay_delivery(self, webhook_id: str, delivery_id: str) -> ReplayResult:
        self.calls += 1
        if self.calls == self._nth and not self._after:
            raise CrashNow
        result = await self._client.replay_delivery(webhook_id, delivery_id)
        if self.calls == self._nth and self._after:
            raise CrashNow
        return result


class OnePool:
    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, api_key: SecretStr) -> Any:
        return self.client


@dataclass
class Env:
    sim: Simulator
    receiver: Receiver
    client: BlooioClient
    kube: FakeKube
    events: FakeEvents
    pool: OnePool
    webhook_id: str = ""
    settings: Any = None

    def ctx(self) -> WebhookContext:
        deps = make_deps(self.kube, self.pool, settings=self.settings)  # type: ignore[arg-type]
        return WebhookContext.build(
            deps, body=self.kube.objects[(NAMESPACE, NAME)], events=self.events
        )

    def status(self) -> dict[str, Any]:
        return self.kube.status_of(NAMESPACE, NAME)

    async def deliver(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            rec = await self.sim.deliver(self.webhook_id, target_url=self.receiver.url)
            out.append(rec.event_id)
        return out

    async def rotate(self) -> None:
        await self.client.rotate_secret(self.webhook_id)
        st = self.kube.objects[(NAMESPACE, NAME)]["status"]
        st["secretRotatedAt"] = now_iso()

    def current_secret(self) -> str:
        return self.sim.state.webhooks[self.webhook_id].signing_secret

    def replays_per_event(self) -> Counter[str]:
        records = self.sim.state.webhooks[self.webhook_id].deliveries.values()
        return Counter(r.event_id for r in records if r.replay_of is not None)

    async def run(self, *, timeout: float = 20.0) -> None:
        """Step until no work is due (sleeping until each due time), like the handler."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            due = await replay.step(self.ctx())
            await asyncio.wait_for(self.sim.drain(), 10)
            if due is None:
                return
            await asyncio.sleep(max(0.0, due - time.time()))
        raise AssertionError("replay steps did not finish")


def settings(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "replay_grace_seconds": 0.0,
        "replay_window_seconds": 30.0,
        "replay_probe_delay_seconds": 0.05,
        "recovery_delay_seconds": 0.0,
        # A replay without an answer is decided once it can no longer commit: the start,
        # two client timeouts and the recovery delay (2 s here).
        "http_timeout_seconds": 0.5,
    }
    values.update(overrides)
    return make_settings(KEY, **values)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    box = Receiver()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        event = json.loads(body)["id"]
        if box.status_override is not None:
            box.rejected.append(event)
            return web.Response(status=box.status_override)
        if not verify(box.secret, request.headers.get(SIGNATURE_HEADER, ""), body):
            box.rejected.append(event)
            return web.Response(status=401)
        box.accepted.append(event)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    sim = Simulator([KEY])
    await sim.start()
    http = httpx.AsyncClient(timeout=10)
    client = BlooioClient(http, SecretStr(KEY), base_url=sim.url)
    created = await client.create_webhook(CreateWebhookRequest(url=URL))
    box.secret = created.signing_secret.get_secret_value()
    kube = FakeKube()
    kube.objects[(NAMESPACE, NAME)] = {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": {"url": URL},
        "status": {
            "webhookId": created.id,
            "createdAt": now_iso(),
            "observedGeneration": 1,
        },
    }
    e = Env(sim, box, client, kube, FakeEvents(), OnePool(client), created.id, settings())
    try:
        yield e
    finally:
        await http.aclose()
        await sim.stop()
        await runner.cleanup()


async def test_nothing_is_due_without_a_change(env: Env) -> None:
    await env.deliver(2)
    assert await replay.step(env.ctx()) is None
    assert env.kube.status_patches == []
    assert env.sim.calls.counts.get("GET /webhooks/{id}/deliveries", 0) == 0


async def test_rotation_gap_is_replayed_exactly_once(env: Env) -> None:
    before = await env.deliver(2)
    await env.rotate()
    gap = await env.deliver(4)
    assert env.receiver.rejected == gap
    env.receiver.secret = env.current_secret()  # the kubelet refreshed the mounted file
    await env.run()
    assert sorted(env.receiver.accepted) == sorted(before + gap)
    assert Counter(env.receiver.accepted) == Counter(dict.fromkeys(before + gap, 1))
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))
    d = env.status()["deliveries"]
    assert d["lastReplay"]["outcome"] == "replayed"
    assert (d["lastReplay"]["replayed"], d["lastReplay"]["accepted"]) == (4, 4)
    assert "replay" not in d
    assert d["secretChangeAt"] == env.status()["secretRotatedAt"]
    (event,) = env.events.of(reasons.DELIVERIES_REPLAYED)
    assert event[0] == "Normal"
    assert "Replayed 4 deliveries" in event[2]
    assert "4 accepted" in event[2]
    # Done: nothing is due any more, and another step does nothing.
    calls = env.sim.calls.counts.copy()
    assert await replay.step(env.ctx()) is None
    assert env.sim.calls.counts == calls


async def test_grace_period_is_waited_for(env: Env) -> None:
    env.settings = settings(replay_grace_seconds=60.0)
    await env.rotate()
    await env.deliver(1)
    due = await replay.step(env.ctx())
    assert due is not None
    assert due > time.time() + 50
    assert env.sim.calls.counts.get("GET /webhooks/{id}/deliveries", 0) == 0


async def test_failures_before_the_change_and_5xx_are_left_alone(env: Env) -> None:
    env.receiver.secret = "whsec_wrong"
    early = await env.deliver(1)  # rejected before the change
    env.receiver.secret = env.current_secret()
    await asyncio.sleep(0)
    env.settings = settings()
    # Make the early failure clearly older than the change (skew allowance is 10 s).
    record = next(iter(env.sim.state.webhooks[env.webhook_id].deliveries.values()))
    record.created_at -= 60_000
    await env.rotate()
    env.receiver.status_override = 500
    await env.deliver(2)  # failed with 500 during the gap: not a signature problem
    env.receiver.status_override = None
    env.receiver.secret = env.current_secret()
    await env.run()
    assert env.replays_per_event() == Counter()
    assert not env.events.of(reasons.DELIVERIES_REPLAYED)
    assert early[0] in env.receiver.rejected
    assert env.status()["deliveries"]["secretChangeAt"] == env.status()["secretRotatedAt"]


async def test_receiver_that_never_picks_up_the_secret_gets_one_warning(env: Env) -> None:
    env.settings = settings(replay_window_seconds=1.5, replay_grace_seconds=0.1)
    await env.rotate()
    gap = await env.deliver(3)
    await env.run(timeout=30)
    warnings = env.events.of(reasons.DELIVERIES_NOT_REPLAYED)
    assert len(warnings) == 1
    assert warnings[0][0] == "Warning"
    assert warnings[0][2].startswith("3 deliveries")
    assert reasons.ANNOTATION_REPLAY_SINCE in warnings[0][2]
    d = env.status()["deliveries"]
    assert d["lastReplay"]["outcome"] == "gaveUp"
    assert d["lastReplay"]["notReplayed"] == 3
    cond = next(c for c in env.status()["conditions"] if c["type"] == "DeliveriesHealthy")
    assert cond["status"] == "False"
    assert "not replayed" in cond["message"]
    # Only the probe was replayed (several times), never the others.
    replays = env.replays_per_event()
    assert set(replays) == {gap[0]}
    assert replays[gap[0]] >= 2


@pytest.mark.parametrize(("nth", "after"), [(1, False), (1, True), (2, True), (3, False)])
async def test_crash_during_replays_never_replays_twice(env: Env, nth: int, after: bool) -> None:
    await env.rotate()
    gap = await env.deliver(5)
    env.receiver.secret = env.current_secret()
    crashing = Crashing(env.client, nth=nth, after=after)
    env.pool.client = crashing
    with pytest.raises(CrashNow):
        await env.run()
    await asyncio.wait_for(env.sim.drain(), 10)
    env.pool.client = env.client  # "restarted"
    await env.run()
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))
    assert Counter(env.receiver.accepted) == Counter(dict.fromkeys(gap, 1))
    assert env.events.of(reasons.DELIVERIES_REPLAYED)


async def test_replay_errors_keep_the_intent_and_resume(env: Env) -> None:
    await env.rotate()
    gap = await env.deliver(4)
    env.receiver.secret = env.current_secret()
    env.sim.faults.add(
        {
            "kind": "error",
            "status": 503,
            "endpoint": "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
            "count": 1,
        }
    )
    env.sim.faults.add(
        {"kind": "error", "status": 500, "endpoint": "GET /webhooks/{id}/deliveries", "count": 1}
    )
    errors = 0
    for _ in range(50):
        try:
            due = await replay.step(env.ctx())
        except Exception:
            errors += 1
            continue
        await asyncio.wait_for(env.sim.drain(), 10)
        if due is None:
            break
        await asyncio.sleep(max(0.0, due - time.time()))
    assert errors >= 1
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))


async def test_outcome_arriving_later_is_waited_for(env: Env) -> None:
    env.sim.replay_delay = 0.3
    await env.rotate()
    gap = await env.deliver(2)
    env.receiver.secret = env.current_secret()
    await env.run()
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))
    d = env.status()["deliveries"]["lastReplay"]
    assert (d["replayed"], d["accepted"]) == (2, 2)


async def test_request_replays_every_failure_once_per_value(env: Env) -> None:
    since = now_iso()
    await asyncio.sleep(1.05)
    env.receiver.status_override = 500
    failed = await env.deliver(2)
    env.receiver.status_override = None
    env.receiver.secret = "whsec_wrong"
    failed += await env.deliver(1)
    env.receiver.secret = env.current_secret()
    ok = await env.deliver(1)
    obj = env.kube.objects[(NAMESPACE, NAME)]
    obj["metadata"]["annotations"] = {reasons.ANNOTATION_REPLAY_SINCE: since}
    await env.run()
    assert env.replays_per_event() == Counter(dict.fromkeys(failed, 1))
    assert ok[0] not in env.replays_per_event()
    assert env.status()["deliveries"]["replayToken"] == since
    assert len(env.events.of(reasons.DELIVERIES_REPLAYED)) == 1
    # Same value again: nothing.
    await env.run()
    assert env.replays_per_event() == Counter(dict.fromkeys(failed, 1))
    # A new value: failures since then (none left unaccepted) -> no new replays.
    obj["metadata"]["annotations"] = {reasons.ANNOTATION_REPLAY_SINCE: since + " "}
    await env.run()
    assert env.replays_per_event() == Counter(dict.fromkeys(failed, 1))


async def test_invalid_request_is_reported_once(env: Env) -> None:
    obj = env.kube.objects[(NAMESPACE, NAME)]
    obj["metadata"]["annotations"] = {reasons.ANNOTATION_REPLAY_SINCE: "yesterday"}
    await env.run()
    await env.run()
    assert len(env.events.of(reasons.REPLAY_REQUEST_INVALID)) == 1
    assert env.sim.calls.counts.get("POST /webhooks/{id}/deliveries/{delivery_id}/replay", 0) == 0


async def test_too_many_pages_replays_nothing_and_says_why(env: Env) -> None:
    env.settings = settings(replay_pages=1)
    await env.rotate()
    await env.deliver(1)
    hook = env.sim.state.webhooks[env.webhook_id]
    template = next(iter(hook.deliveries.values()))
    from dataclasses import replace as dc_replace

    for i in range(250):  # older deliveries fill the first page (oldest first)
        rec = dc_replace(
            template,
            id=f"wdel_bulk{i:05d}",
            event_id=f"evt_bulk{i:05d}",
            seq=env.sim.state.next_seq(),
            status="delivered",
            response_status=204,
        )
        hook.deliveries[rec.id] = rec
    await env.run()
    assert env.replays_per_event() == Counter()
    (warning,) = env.events.of(reasons.DELIVERIES_NOT_REPLAYED)
    assert "BLOOIO_REPLAY_PAGES" in warning[2]


def test_secret_change_sources() -> None:
    from blooio_operator.models.resource import DeliveriesStatus, WebhookStatus

    st = WebhookStatus(webhook_id="wh_b", created_at="2026-01-01T00:00:00Z")
    assert replay_plan.secret_change(st) is None  # a fresh create is not a change
    st.secret_rotated_at = "2026-01-01T00:10:00Z"
    assert replay_plan.secret_change(st) == replay_plan.parse_request("2026-01-01T00:10:00Z")
    st.deliveries = DeliveriesStatus(secret_change_at="2026-01-01T00:10:00Z")
    assert replay_plan.secret_change(st) is None  # dealt with
    # Replaced/Recreated: another webhook than the records refer to.
    st.deliveries = DeliveriesStatus(webhook_id="wh_a", secret_change_at="2026-01-01T00:10:00Z")
    st.created_at = "2026-01-01T00:20:00Z"
    assert replay_plan.secret_change(st) == replay_plan.parse_request("2026-01-01T00:20:00Z")
    # Known only in memory (no records yet): the handler passes the previous id.
    fresh = WebhookStatus(webhook_id="wh_b", created_at="2026-01-01T00:20:00Z")
    assert replay_plan.secret_change(fresh) is None
    assert replay_plan.secret_change(fresh, "wh_a") == replay_plan.parse_request(
        "2026-01-01T00:20:00Z"
    )
    assert replay_plan.needs_webhook_record(fresh, "wh_a")
    # A rotation of an earlier webhook, replaced before any record: not this one's.
    old = WebhookStatus(
        webhook_id="wh_b",
        created_at="2026-01-01T00:20:00Z",
        secret_rotated_at="2026-01-01T00:10:00Z",
    )
    assert replay_plan.secret_change(old) is None


def test_due_at_ignores_changes_older_than_the_window() -> None:
    from blooio_operator.models.resource import WebhookStatus

    s = make_settings(KEY, replay_grace_seconds=90.0, replay_window_seconds=3600.0)
    st = WebhookStatus(
        webhook_id="wh_b",
        created_at="2026-01-01T00:00:00Z",
        secret_rotated_at="2026-01-01T00:10:00Z",
    )
    rotated = replay_plan.parse_request("2026-01-01T00:10:00Z")
    assert rotated is not None
    assert replay_plan.due_at(st, {}, s, now=rotated + 10) == rotated + 90
    assert replay_plan.due_at(st, {}, s, now=rotated + 3601) is None
    request = {reasons.ANNOTATION_REPLAY_SINCE: "2026-01-01T00:00:00Z"}
    assert replay_plan.due_at(st, request, s, now=rotated + 3601) == rotated + 3601
    off = make_settings(KEY, replay_window_seconds=0.0)
    assert replay_plan.due_at(st, {}, off, now=rotated + 10) is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-01-31T09:00:00Z", True),
        ("2026-01-31T09:00:00.250Z", True),
        ("2026-01-31T10:00:00+01:00", True),
        ("2026-01-31", False),
        ("2026-01-31T09:00:00", False),  # no zone: ambiguous
        ("yesterday", False),
    ],
)
def test_request_time_parsing(value: str, ok: bool) -> None:
    assert (replay_plan.parse_request(value) is not None) is ok
