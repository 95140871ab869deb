"""Replays under conditions that last (issue 18 item 5, issue 19 item 4): every branch of
the episode ends by the window, suspension defers instead of dropping, no probe is sent
twice (a late commit included), unusable requests are refused at once, requests never
reach another owner's deliveries, and failures are logged boundedly.

Same world as tests/unit/test_deliveries_replay.py: the simulator in-process, a real
receiver that verifies signatures, status in the fake Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import pytest
from pydantic import SecretStr

from blooio_operator.blooio import ApiTimeout, BlooioClient, ReplayResult, ServerError
from blooio_operator.handlers import deliveries as handlers
from blooio_operator.handlers.webhooks import ObjectGuards
from blooio_operator.models import reasons
from blooio_operator.models.resource import DeliveriesStatus, ReplayEpisode, WebhookStatus
from blooio_operator.reconcile import replay, replay_plan
from blooio_operator.reconcile.context import now_iso
from tests.unit.fakes import NAME, NAMESPACE, FakeKube, make_body, make_deps
from tests.unit.test_deliveries_replay import Env, env, settings

__all__ = ["env"]  # the fixture, imported for pytest

REPLAY = "POST /webhooks/{id}/deliveries/{delivery_id}/replay"
LIST = "GET /webhooks/{id}/deliveries"


class Unlisted:
    """Blooio answers 201 to a replay but never lists it (the probe's "never listed")."""

    def __init__(self, client: BlooioClient) -> None:
        self._client = client
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def replay_delivery(self, webhook_id: str, delivery_id: str) -> ReplayResult:
        self.calls += 1
        return ReplayResult(id=f"wdel_ghost{self.calls:04d}", replay_of=delivery_id)


class LateCommit:
    """The first replay gets no answer (a timeout); Blooio commits it ``delay`` s later,
    or never (``delay`` None)."""

    def __init__(self, client: BlooioClient, delay: float | None) -> None:
        self._client = client
        self._delay = delay
        self.calls = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def replay_delivery(self, webhook_id: str, delivery_id: str) -> ReplayResult:
        self.calls += 1
        if self.calls > 1:
            return await self._client.replay_delivery(webhook_id, delivery_id)
        if self._delay is not None:
            delay = self._delay

            async def commit() -> None:
                await asyncio.sleep(delay)
                await self._client.replay_delivery(webhook_id, delivery_id)

            self.tasks.add(asyncio.create_task(commit()))
        raise ApiTimeout("no answer within the timeout", method="POST", path="/replay")


async def steps(env: Env, *, timeout: float, retry: float = 0.05) -> int:
    """Step like the handler's timers (a failed step is retried after ``retry`` s) until
    no work is due; return how many steps failed."""
    failures = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            due = await replay.step(env.ctx())
        except Exception:
            failures += 1
            await asyncio.sleep(retry)
            continue
        await asyncio.wait_for(env.sim.drain(), 10)
        if due is None:
            return failures
        await asyncio.sleep(min(max(0.0, due - time.time()), 1.0))
    raise AssertionError("replay steps did not finish within the deadline")


async def past(ts: float) -> None:
    """Let wall time pass ``ts`` (the scenario's own duration, not a wait on a condition)."""
    await asyncio.sleep(max(0.0, ts - time.time()) + 0.05)


def episode_of(env: Env) -> dict[str, Any] | None:
    d = env.status().get("deliveries") or {}
    episode: dict[str, Any] | None = d.get("replay")
    return episode


def suspend(env: Env, on: bool, *, remote_only: bool = False) -> None:
    """What the webhook handlers do on spec.suspend: the webhook disabled at Blooio and
    status.remoteStatus following; ``remote_only``: only Blooio's side (behind our back)."""
    env.sim.state.webhooks[env.webhook_id].status = "disabled" if on else "active"
    if remote_only:
        return
    obj = env.kube.objects[(NAMESPACE, NAME)]
    obj["spec"]["suspend"] = on
    obj["status"]["remoteStatus"] = "disabled" if on else "active"


def replay_posts(env: Env) -> int:
    return env.sim.calls.counts.get(REPLAY, 0)


# --- 1. every branch gives up by the window ------------------------------------------------


async def test_probe_replay_that_is_never_listed_gives_up_by_the_window(env: Env) -> None:
    env.settings = settings(replay_window_seconds=1.5)
    await env.rotate()
    gap = await env.deliver(2)
    env.receiver.secret = env.current_secret()
    ghost = Unlisted(env.client)
    env.pool.client = ghost
    await steps(env, timeout=10)
    (warning,) = env.events.of(reasons.DELIVERIES_NOT_REPLAYED)
    assert warning[0] == "Warning"
    assert warning[2].startswith(f"{len(gap)} deliveries")
    assert "never appeared" in warning[2]
    d = env.status()["deliveries"]
    assert d["lastReplay"]["outcome"] == "gaveUp"
    assert "replay" not in d
    assert ghost.calls == 1  # the probe was posted once, never again


async def test_blooio_failing_past_the_window_gives_up_once(env: Env) -> None:
    env.settings = settings(replay_window_seconds=1.5)
    await env.rotate()
    await env.deliver(2)
    env.sim.faults.add({"kind": "error", "status": 503, "endpoint": LIST, "count": 100_000})
    failures = await steps(env, timeout=10)
    assert failures >= 1
    (warning,) = env.events.of(reasons.DELIVERIES_NOT_REPLAYED)
    assert "Blooio" in warning[2]
    assert "503" in warning[2]
    d = env.status()["deliveries"]
    assert d["lastReplay"]["outcome"] == "gaveUp"
    assert "replay" not in d
    assert d["secretChangeAt"] == env.status()["secretRotatedAt"]  # dealt with: not again
    assert replay_posts(env) == 0


async def test_replays_failing_past_the_window_give_up_once(env: Env) -> None:
    """The probe was accepted; then every replay POST fails (503) until the window ends,
    which comes while the last batch could still commit (no answer): nothing more is sent,
    and the episode gives up on time."""
    env.settings = settings(replay_window_seconds=2.0, http_timeout_seconds=10.0)
    await env.rotate()
    await env.deliver(3)
    env.receiver.secret = env.current_secret()
    await replay.step(env.ctx())  # the probe
    await asyncio.wait_for(env.sim.drain(), 10)
    env.sim.faults.add({"kind": "error", "status": 503, "endpoint": REPLAY, "count": 100_000})
    await steps(env, timeout=10)
    (warning,) = env.events.of(reasons.DELIVERIES_NOT_REPLAYED)
    assert "without an answer" in warning[2]
    assert warning[2].startswith("2 deliveries")
    assert env.status()["deliveries"]["lastReplay"]["outcome"] == "gaveUp"
    assert env.replays_per_event().total() == 1  # only the probe ever reached Blooio


async def test_failed_step_is_retried_no_later_than_the_give_up() -> None:
    calls: list[float] = []

    async def step(uid: str) -> float | None:
        calls.append(time.time())
        if len(calls) == 1:
            raise RuntimeError("blooio down")
        return None

    give_up = time.time() + 0.3
    timers = handlers.DueTimers(
        step, failure_delay=lambda exc, n: 60.0, deadline=lambda uid: give_up
    )
    timers.set("a", time.time())
    async with asyncio.timeout(3):
        while len(calls) < 2:
            await asyncio.sleep(0.01)
    assert calls[1] <= give_up + 0.2
    await timers.close()


# --- 2. suspension defers -----------------------------------------------------------------


async def test_suspended_before_the_episode_defers_until_resumed(env: Env) -> None:
    env.settings = settings(replay_window_seconds=1.5)
    await env.rotate()
    gap = await env.deliver(3)
    env.receiver.secret = env.current_secret()
    suspend(env, True)
    await steps(env, timeout=5)
    assert replay_posts(env) == 0
    episode = episode_of(env)
    assert episode is not None  # held, not dropped
    assert replay_plan.parked(ReplayEpisode.model_validate(episode))
    status = WebhookStatus.model_validate(env.status())
    assert replay_plan.due_at(status, {}, env.settings, now=time.time(), suspended=True) is None
    # Suspended for longer than the whole window.
    await past(replay_plan.parse_request(episode["giveUpAt"]) or 0.0)
    assert await replay.step(env.ctx()) is None  # still suspended: nothing, not a give-up
    assert not env.events.of(reasons.DELIVERIES_NOT_REPLAYED)
    suspend(env, False)
    status = WebhookStatus.model_validate(env.status())
    now = time.time()
    assert replay_plan.due_at(status, {}, env.settings, now=now, suspended=False) == now
    await steps(env, timeout=10)
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))
    (event,) = env.events.of(reasons.DELIVERIES_REPLAYED)
    assert "3 accepted" in event[2]
    assert not env.events.of(reasons.DELIVERIES_NOT_REPLAYED)


async def test_suspended_mid_episode_resumes_where_it_stood(env: Env) -> None:
    env.settings = settings(replay_window_seconds=1.5)
    await env.rotate()
    gap = await env.deliver(4)
    env.receiver.secret = env.current_secret()
    await replay.step(env.ctx())  # the probe, accepted
    await asyncio.wait_for(env.sim.drain(), 10)
    suspend(env, True)
    await steps(env, timeout=5)
    assert env.replays_per_event().total() == 1
    episode = episode_of(env)
    assert episode is not None
    await past(replay_plan.parse_request(episode["giveUpAt"]) or 0.0)
    suspend(env, False)
    await steps(env, timeout=10)
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))
    assert Counter(env.receiver.accepted) == Counter(dict.fromkeys(gap, 1))
    (event,) = env.events.of(reasons.DELIVERIES_REPLAYED)
    assert "4 accepted" in event[2]


async def test_webhook_disabled_at_blooio_defers_instead_of_refusing(env: Env) -> None:
    """The webhook went disabled behind status's back (a suspend racing a batch): Blooio
    refuses the replays with 400; they are deferred, not recorded as refused."""
    await env.rotate()
    gap = await env.deliver(3)
    env.receiver.secret = env.current_secret()
    await replay.step(env.ctx())  # the probe, accepted
    await asyncio.wait_for(env.sim.drain(), 10)
    suspend(env, True, remote_only=True)
    async with asyncio.timeout(10):  # until the rest is tried: Blooio answers 400
        while replay_posts(env) < 2:
            due = await replay.step(env.ctx())
            await asyncio.sleep(min(max(0.0, (due or 0.0) - time.time()), 0.2))
    episode = episode_of(env)
    assert episode is not None
    assert not episode.get("refused")
    assert env.replays_per_event().total() == 1
    suspend(env, False, remote_only=True)
    await steps(env, timeout=10)
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))
    (event,) = env.events.of(reasons.DELIVERIES_REPLAYED)
    assert "3 accepted" in event[2]


# --- 3. no probe is sent twice ------------------------------------------------------------


async def test_probe_that_commits_late_is_not_sent_again(env: Env) -> None:
    env.settings = settings(http_timeout_seconds=0.4)
    await env.rotate()
    gap = await env.deliver(3)
    env.receiver.secret = env.current_secret()
    late = LateCommit(env.client, delay=0.5)
    env.pool.client = late
    failures = await steps(env, timeout=15)
    assert failures >= 1
    await asyncio.gather(*late.tasks)
    await asyncio.wait_for(env.sim.drain(), 10)
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))
    assert Counter(env.receiver.accepted) == Counter(dict.fromkeys(gap, 1))


async def test_probe_that_never_committed_is_sent_once_after_the_settle_time(env: Env) -> None:
    env.settings = settings(http_timeout_seconds=0.2)
    await env.rotate()
    gap = await env.deliver(2)
    env.receiver.secret = env.current_secret()
    lost = LateCommit(env.client, delay=None)
    env.pool.client = lost
    with pytest.raises(ApiTimeout):
        await replay.step(env.ctx())
    episode = episode_of(env)
    assert episode is not None
    assert episode["probeAt"]  # the intent, recorded before the POST
    due = replay_plan.due_at(
        WebhookStatus.model_validate(env.status()), {}, env.settings, now=time.time()
    )
    assert due is not None
    assert due > time.time() + 0.2  # not before the lost POST can no longer commit
    await steps(env, timeout=10)
    assert env.replays_per_event() == Counter(dict.fromkeys(gap, 1))


# --- 4. unusable requests, and backoff across watch events --------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "2999-01-01T00:00:00Z",  # in the future: nothing could match
    ],
)
async def test_out_of_range_request_is_refused_at_once_and_once(env: Env, value: str) -> None:
    obj = env.kube.objects[(NAMESPACE, NAME)]
    obj["metadata"]["annotations"] = {reasons.ANNOTATION_REPLAY_SINCE: value}
    await steps(env, timeout=5)
    await steps(env, timeout=5)
    (warning,) = env.events.of(reasons.REPLAY_REQUEST_INVALID)
    assert warning[0] == "Warning"
    assert env.status()["deliveries"]["replayToken"] == value
    assert env.sim.calls.counts.get(LIST, 0) == 0
    assert replay_posts(env) == 0


def test_request_parsing_never_raises() -> None:
    for value in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "T" * 5000):
        assert replay_plan.parse_request(value) is None


async def test_watch_event_does_not_reset_the_backoff_of_a_failing_step() -> None:
    calls: list[float] = []

    async def step(uid: str) -> float | None:
        calls.append(time.monotonic())
        raise RuntimeError("blooio down")

    timers = handlers.DueTimers(step, failure_delay=lambda exc, n: 0.5)
    timers.set("a", time.time())
    async with asyncio.timeout(2):
        while not calls or timers.due("a") is None:  # failed once, its retry scheduled
            await asyncio.sleep(0.01)
    retry_at = timers.due("a")
    assert retry_at is not None
    timers.set("a", time.time())  # a watch event: the status still says "due now"
    assert timers.due("a") == retry_at
    await asyncio.sleep(0.2)
    assert len(calls) == 1
    await timers.close()


# --- 5. a request never reaches another owner's deliveries --------------------------------


async def test_request_never_reaches_deliveries_before_the_adoption(env: Env) -> None:
    env.receiver.status_override = 500
    theirs = await env.deliver(2)  # the previous owner's failures
    for record in env.sim.state.webhooks[env.webhook_id].deliveries.values():
        record.created_at -= 120_000
    adopted = now_iso()
    st = env.kube.objects[(NAMESPACE, NAME)]["status"]
    st["adoptedWebhookId"] = env.webhook_id
    st["secretRotatedAt"] = adopted
    # The adoption's own rotation was dealt with (nothing was rejected after it).
    st["deliveries"] = {"webhookId": env.webhook_id, "secretChangeAt": adopted}
    mine = await env.deliver(1)
    env.receiver.status_override = None
    since = "2020-01-01T00:00:00Z"
    obj = env.kube.objects[(NAMESPACE, NAME)]
    obj["metadata"]["annotations"] = {reasons.ANNOTATION_REPLAY_SINCE: since}
    await steps(env, timeout=10)
    assert env.replays_per_event() == Counter({mine[0]: 1})
    assert not set(theirs) & set(env.replays_per_event())
    (event,) = env.events.of(reasons.DELIVERIES_REPLAYED)
    assert adopted in event[2]  # says from when, and why
    assert env.status()["deliveries"]["lastReplay"]["since"] == adopted


def test_held_since() -> None:
    created = WebhookStatus(webhook_id="wh_a", created_at="2026-01-01T00:00:00Z")
    assert replay_plan.held_since(created) == replay_plan.parse_request("2026-01-01T00:00:00Z")
    adopted = WebhookStatus(
        webhook_id="wh_a",
        created_at="2025-01-01T00:00:00Z",  # Blooio's creation, by the previous owner
        adopted_webhook_id="wh_a",
        secret_rotated_at="2026-02-01T00:00:00Z",
    )
    assert replay_plan.held_since(adopted) == replay_plan.parse_request("2026-02-01T00:00:00Z")
    # Rotated again later: the adoption's own episode, dealt with, still tells when it was.
    later = adopted.model_copy(
        update={
            "secret_rotated_at": "2026-03-01T00:00:00Z",
            "deliveries": DeliveriesStatus(
                webhook_id="wh_a", secret_change_at="2026-02-01T00:00:00Z"
            ),
        }
    )
    assert replay_plan.held_since(later) == replay_plan.parse_request("2026-02-01T00:00:00Z")
    # ... but records about another webhook say nothing about this one.
    other = later.model_copy(
        update={
            "deliveries": DeliveriesStatus(
                webhook_id="wh_old", secret_change_at="2020-01-01T00:00:00Z"
            )
        }
    )
    assert replay_plan.held_since(other) == replay_plan.parse_request("2026-03-01T00:00:00Z")
    # Adopted, then replaced by a webhook of our own: the new one's creation.
    replaced = adopted.model_copy(update={"webhook_id": "wh_b"})
    assert replay_plan.held_since(replaced) == replay_plan.parse_request("2025-01-01T00:00:00Z")
    # Nothing recorded: nothing before now is ours for sure.
    assert replay_plan.held_since(WebhookStatus(webhook_id="wh_a"), now=5.0) == 5.0


# --- 6. bounded logging under a long outage ---------------------------------------------


class Down:
    """A Blooio that answers 503 to every delivery list."""

    async def list_deliveries_bounded(self, webhook_id: str, *, max_pages: int) -> Any:
        raise ServerError(503, "unavailable", "Blooio is down", method="GET", path="/x")


class DownPool:
    def get(self, api_key: SecretStr) -> Any:
        return Down()


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and r.name.startswith("blooio_operator")
    ]


async def test_health_sweep_logs_one_line_per_key_and_failure_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = FakeKube()
    deps = make_deps(kube, DownPool(), settings=settings())  # type: ignore[arg-type]
    guards = ObjectGuards()
    failures = handlers.FailureLog(logging.getLogger("blooio_operator.handlers"), interval=600.0)
    bodies = [
        make_body(name=f"r{i}", uid=f"uid-{i}", status={"webhookId": f"wh_{i}"}) for i in range(20)
    ]
    caplog.set_level(logging.DEBUG, logger="blooio_operator")
    for body in bodies:
        assert not await handlers.check_health(deps, guards, body, failures=failures)
    shown = lines(caplog)
    assert len(shown) == 1, shown
    assert "503" in shown[0]
    assert len(lines(caplog, logging.DEBUG)) == 20  # the rest are still there, at DEBUG
    # The next interval: one line again, counting what was held back.
    failures.clock = lambda: time.monotonic() + 601.0
    caplog.clear()
    await handlers.check_health(deps, guards, bodies[0], failures=failures)
    (again,) = lines(caplog)
    assert "19 more" in again


async def test_failing_replay_steps_log_one_line_per_failure_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: set[str] = set()

    async def step(uid: str) -> float | None:
        seen.add(uid)
        raise ServerError(503, "unavailable", "Blooio is down", method="GET", path="/x")

    failures = handlers.FailureLog(logging.getLogger("blooio_operator.handlers"), interval=600.0)
    timers = handlers.DueTimers(step, failure_delay=lambda exc, n: 60.0, failures=failures)
    caplog.set_level(logging.DEBUG, logger="blooio_operator")
    for i in range(10):
        timers.set(f"uid-{i}", time.time())
    async with asyncio.timeout(3):
        while len(seen) < 10 or any(timers.due(f"uid-{i}") is None for i in range(10)):
            await asyncio.sleep(0.01)
    await timers.close()
    shown = lines(caplog)
    assert len(shown) == 1, shown


def test_parked_is_told_apart_from_every_state_the_machine_saves() -> None:
    base = {
        "trigger": "rotation",
        "since": "2026-01-01T00:00:00Z",
        "giveUpAt": "2026-01-01T01:00:00Z",
    }
    assert replay_plan.parked(ReplayEpisode.model_validate({**base, "phase": "waiting"}))
    for extra in (
        {"phase": "waiting", "nextAt": "2026-01-01T00:01:30Z"},
        {"phase": "probing", "probeAt": "2026-01-01T00:01:30Z"},
        {"phase": "replaying"},
        {"phase": "verifying", "nextAt": "2026-01-01T00:01:30Z"},
    ):
        assert not replay_plan.parked(ReplayEpisode.model_validate({**base, **extra}))
