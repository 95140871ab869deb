"""Leader election and fencing without a control plane: the elector against an in-memory
Lease with the API server's optimistic concurrency, the fence in every client, kopf's own
writes, and the settings."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from pydantic import SecretStr, ValidationError

from blooio_operator import fence as fencing
from blooio_operator import leader
from blooio_operator.blooio import BlooioClient, CreateWebhookRequest
from blooio_operator.fence import Fence, TermOver
from blooio_operator.kube import KubeClient
from blooio_operator.kube.client import KubeConflict, KubeError, LeaseRecord
from blooio_operator.leader import ElectionConfig, LeaseElector
from blooio_operator.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """One Lease store with resourceVersions: a write of a stale version gets 409."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.writes: list[tuple[str | None, str | None]] = []  # (holder, resourceVersion)
        self.fail = False

    async def read_lease(
        self, namespace: str, name: str, *, request_timeout: float | None = None
    ) -> LeaseRecord | None:
        if self.fail:
            raise KubeError(None, "unreachable", "read Lease")
        return self.record

    async def write_lease(
        self,
        namespace: str,
        name: str,
        *,
        holder: str | None,
        lease_duration_seconds: int,
        acquire_time: datetime | None,
        renew_time: datetime | None,
        transitions: int,
        resource_version: str | None,
        request_timeout: float | None = None,
    ) -> LeaseRecord:
        if self.fail:
            raise KubeError(None, "unreachable", "write Lease")
        current = self.record.resource_version if self.record else None
        if resource_version != current:
            raise KubeConflict(409, "Conflict", "write Lease")
        self.version += 1
        self.record = LeaseRecord(
            holder=holder,
            lease_duration_seconds=lease_duration_seconds,
            acquire_time=acquire_time,
            renew_time=renew_time,
            transitions=transitions,
            resource_version=str(self.version),
        )
        self.writes.append((holder, resource_version))
        return self.record


def config(identity: str, **timings: float) -> ElectionConfig:
    values = {"lease_duration": 15.0, "renew_deadline": 10.0, "retry_period": 2.0, **timings}
    return ElectionConfig(
        namespace="blooio-system", name="blooio-operator", identity=identity, **values
    )


def elector(
    leases: FakeLeases, identity: str, clock: Callable[[], float], lost: list[str], **timings: float
) -> LeaseElector:
    return LeaseElector(leases, config(identity, **timings), on_lost=lost.append, clock=clock)


# --- the fence ---------------------------------------------------------------------------


def test_fence_holds_for_the_renew_deadline_after_the_send() -> None:
    clock = FakeClock()
    expired: list[str] = []
    fence = Fence(10.0, on_expired=expired.append, clock=clock)
    with pytest.raises(TermOver):
        fence.check("before any renewal")  # no term yet
    expired.clear()
    fence.extend(clock.now)
    clock.now += 9.9
    fence.check("PATCH /webhooks/wh_1")
    clock.now += 0.1
    with pytest.raises(TermOver, match="POST /webhooks"):
        fence.check("POST /webhooks")
    assert expired == ["POST /webhooks"]


def test_an_ended_fence_is_never_revived_by_a_late_renewal() -> None:
    clock = FakeClock()
    fence = Fence(10.0, clock=clock)
    fence.extend(clock.now)
    fence.end()
    fence.extend(clock.now)
    assert fence.expired()
    with pytest.raises(TermOver):
        fence.check("write")


def test_the_fence_clock_counts_suspended_time_and_never_goes_back() -> None:
    # CLOCK_BOOTTIME on Linux: a node frozen or suspended past the term sees it pass.
    assert hasattr(time, "CLOCK_BOOTTIME")
    a = fencing.clock()
    b = fencing.clock()
    assert b >= a
    assert abs(fencing.clock() - time.clock_gettime(time.CLOCK_BOOTTIME)) < 1


# --- the elector ----------------------------------------------------------------------------


async def test_first_candidate_creates_the_lease_and_leads() -> None:
    leases, clock, lost = FakeLeases(), FakeClock(), []
    a = elector(leases, "a", clock, lost)
    assert await a.try_acquire()
    assert a.leading
    assert leases.record is not None
    assert leases.record.holder == "a"
    assert leases.record.lease_duration_seconds == 15
    assert a.fence.remaining() == pytest.approx(10.0)
    a.fence.end()  # the loop timer must not fire after the test


async def test_a_standby_takes_over_only_after_the_lease_duration_on_its_own_clock() -> None:
    leases, lost = FakeLeases(), []
    clock_a, clock_b = FakeClock(), FakeClock()
    clock_b.now = 5.0  # another machine's clock: never compared with a's
    a = elector(leases, "a", clock_a, lost)
    b = elector(leases, "b", clock_b, lost)
    assert await a.try_acquire()
    assert not await b.try_acquire()  # b observes a's record now
    clock_b.now += 14.9
    assert not await b.try_acquire()
    # a renews: a new version, so b starts counting again
    clock_a.now += 2
    assert await a.renew()
    clock_b.now += 1.0  # 15.9 s since b first saw a record, 1 s since the renewal
    assert not await b.try_acquire()
    clock_b.now += 14.0
    assert not await b.try_acquire()
    clock_b.now += 1.1
    assert await b.try_acquire()
    assert leases.record is not None
    assert (leases.record.holder, leases.record.transitions) == ("b", 1)
    # a, paused all this time, finds out before sending anything
    clock_a.now += 20
    assert a.fence.expired()
    assert not await a.renew()
    assert lost
    assert "renew deadline" in lost[0]
    assert [w[0] for w in leases.writes] == ["a", "a", "b"]
    b.fence.end()


async def test_of_two_standbys_taking_over_one_wins() -> None:
    leases, clock, lost = FakeLeases(), FakeClock(), []
    a = elector(leases, "a", clock, lost)
    assert await a.try_acquire()
    a.fence.end()
    b = elector(leases, "b", clock, lost)
    c = elector(leases, "c", clock, lost)
    assert not await b.try_acquire()
    assert not await c.try_acquire()
    clock.now += 16
    record = leases.record
    # Both read the same version; the API server lets only the first write through.
    results = [await b._write(record, taking_over=True), await c._write(record, taking_over=True)]
    assert results == [True, False]
    assert leases.record is not None
    assert leases.record.holder == "b"
    assert not c.leading
    assert c.fence.expired()
    b.fence.end()


async def test_a_released_lease_is_taken_at_once() -> None:
    leases, clock, lost = FakeLeases(), FakeClock(), []
    a = elector(leases, "a", clock, lost)
    b = elector(leases, "b", clock, lost)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    await a.release()
    assert a.fence.expired()
    assert not a.leading
    assert leases.record is not None
    assert leases.record.holder is None
    with pytest.raises(TermOver):
        a.fence.check("anything after the release")
    assert lost == []  # a clean stop is not a loss
    assert await b.try_acquire()  # no waiting out the lease
    b.fence.end()


async def test_a_leader_that_finds_another_holder_stops() -> None:
    leases, clock, lost = FakeLeases(), FakeClock(), []
    a = elector(leases, "a", clock, lost)
    assert await a.try_acquire()
    assert leases.record is not None
    leases.record = dataclasses.replace(leases.record, holder="intruder", resource_version="99")
    assert not await a.renew()
    assert lost == ["the Lease is now held by intruder"]
    assert a.fence.expired()


async def test_failed_renewals_keep_the_term_until_the_deadline_only() -> None:
    leases, clock, lost = FakeLeases(), FakeClock(), []
    a = elector(leases, "a", clock, lost)
    assert await a.try_acquire()
    leases.fail = True
    for _ in range(4):
        clock.now += 2
        assert not await a.renew()
        assert lost == []
    a.fence.check("still inside the term (8 s after the last renewal)")
    clock.now += 2
    assert not await a.renew()
    assert lost
    assert "renew deadline" in lost[0]
    assert len(leases.writes) == 1  # nothing was sent once the term was over


async def test_the_loop_timer_ends_the_term_without_any_send() -> None:
    leases, lost = FakeLeases(), []
    a = LeaseElector(
        leases,
        config("a", lease_duration=0.6, renew_deadline=0.3, retry_period=0.1),
        on_lost=lost.append,
    )
    assert await a.try_acquire()
    started = time.monotonic()
    while not lost and time.monotonic() - started < 5:
        await asyncio.sleep(0.02)
    assert lost
    assert "renew deadline" in lost[0]
    assert 0.25 < time.monotonic() - started < 1.5


async def test_hold_renews_every_retry_period() -> None:
    leases, lost = FakeLeases(), []
    a = LeaseElector(
        leases,
        config("a", lease_duration=2.0, renew_deadline=1.0, retry_period=0.05),
        on_lost=lost.append,
    )
    assert await a.try_acquire()
    holding = asyncio.create_task(a.hold())
    await asyncio.sleep(1.5)  # past the renew deadline: only renewals keep the term
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)
    assert lost == []
    assert len(leases.writes) >= 10
    await a.release()


# --- the fence in the clients ------------------------------------------------------------


def expired_fence(seen: list[str]) -> Fence:
    return Fence(10.0, on_expired=seen.append)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return {"items": []}

        return call


async def test_kube_writes_are_fenced_and_reads_are_not() -> None:
    seen: list[str] = []
    kube = KubeClient(k8s.ApiClient(), max_workers=2, fence=expired_fence(seen))
    custom, core = Recorder(), Recorder()
    kube._custom = custom  # type: ignore[assignment]
    kube._core = core  # type: ignore[assignment]
    try:
        with pytest.raises(TermOver):
            await kube.patch_status("ns", "orders", {"webhookId": "wh_1"})
        with pytest.raises(TermOver):
            await kube.write_secret(
                "ns",
                "s",
                data={"signing-secret": "x"},
                labels={},
                annotations={},
                owner=None,
                exists=False,
            )
        with pytest.raises(TermOver):
            await kube.create_event(
                {"namespace": "ns", "name": "orders"}, type="Normal", reason="Created", message="m"
            )
        with pytest.raises(TermOver):
            await kube.delete_secret("ns", "s")
        assert custom.calls == []
        assert core.calls == []
        assert seen == [
            "patch status of ns/orders",
            "create Secret ns/s",
            "post Event Created about ns/orders",
            "delete Secret ns/s",
        ]
        await kube.list_webhook_ids("ns")  # a read goes through
        assert custom.calls == ["list_namespaced_custom_object"]
    finally:
        kube.close()


async def test_a_kube_write_queued_past_the_term_is_not_sent() -> None:
    # The check runs again in the thread, right before the call: a write that waited
    # for a thread while the term ran out sends nothing.
    clock = FakeClock()
    fence = Fence(10.0, clock=clock)
    fence.extend(clock.now)
    kube = KubeClient(k8s.ApiClient(), max_workers=1, fence=fence)
    custom = Recorder()
    kube._custom = custom  # type: ignore[assignment]
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    blocker = loop.run_in_executor(
        kube._pool, lambda: asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
    )
    try:
        write = asyncio.create_task(kube.patch_status("ns", "orders", {"a": 1}))
        await asyncio.sleep(0.05)  # queued behind the blocker, its first check passed
        clock.now += 11
        gate.set()
        await blocker
        with pytest.raises(TermOver):
            await write
        assert custom.calls == []
    finally:
        kube.close()


def test_the_kube_transport_checks_the_term_last() -> None:
    # Where urllib3 takes over, after the request was built: a write refused, a read sent.
    import urllib3

    seen: list[str] = []
    conf = k8s.Configuration()
    conf.host = "http://127.0.0.1:9"
    kube = KubeClient(k8s.ApiClient(conf), max_workers=1, fence=expired_fence(seen))
    pool = kube._api.rest_client.pool_manager
    try:
        with pytest.raises(TermOver):
            pool.request("PATCH", "http://127.0.0.1:9/api/v1/namespaces/ns/secrets/s")
        assert seen == ["PATCH /api/v1/namespaces/ns/secrets/s"]
        with pytest.raises(urllib3.exceptions.HTTPError):
            pool.request("GET", "http://127.0.0.1:9/api/v1/namespaces", retries=False)
    finally:
        kube.close()


async def test_blooio_requests_are_fenced() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"data": [], "has_more": False, "next_cursor": None})

    seen: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = BlooioClient(
            http,
            SecretStr("bl_test_key_0123456789"),
            base_url="https://b.test/v4",
            fence=expired_fence(seen),
        )
        with pytest.raises(TermOver):
            await client.create_webhook(CreateWebhookRequest(url="https://r.test/h"))
        with pytest.raises(TermOver):
            await client.rotate_secret("wh_1")
        with pytest.raises(TermOver):
            await client.delete_webhook("wh_1")
        with pytest.raises(TermOver):
            await client.list_webhooks()
        assert sent == []
        assert seen == [
            "POST /webhooks",
            "POST /webhooks/wh_1/secret/rotate",
            "DELETE /webhooks/wh_1",
            "GET /webhooks",
        ]
        unfenced = BlooioClient(
            http, SecretStr("bl_test_key_0123456789"), base_url="https://b.test/v4"
        )
        assert await unfenced.list_webhooks() == []
        assert len(sent) == 1


async def test_clients_pick_up_the_running_operators_fence() -> None:
    fence = Fence(10.0)

    def build() -> tuple[Fence | None, Fence | None]:
        kube = KubeClient(k8s.ApiClient(), max_workers=1)
        blooio = BlooioClient(
            httpx.AsyncClient(), SecretStr("bl_test_key_0123456789"), base_url="https://b.test/v4"
        )
        kube.close()
        return kube.fence, blooio._fence

    assert build() == (None, None)  # no leader election: nothing is checked
    ctx = contextvars.copy_context()
    ctx.run(fencing.CURRENT.set, fence)
    assert ctx.run(build) == (fence, fence)

    async def in_a_task_of_the_operator() -> tuple[Fence | None, Fence | None]:
        return build()

    task = ctx.run(asyncio.ensure_future, in_a_task_of_the_operator())
    assert await task == (fence, fence)


async def test_kopfs_own_writes_are_fenced() -> None:
    from kopf._cogs.clients import api as kopf_api
    from kopf._cogs.configs.configuration import OperatorSettings

    # kopf's get/patch/post/delete call the module's request() by name (kopf 1.45): the
    # wrapper sees every one of them. An upgrade that changes this fails here.
    for fn in (kopf_api.patch, kopf_api.post, kopf_api.delete, kopf_api.get):
        assert "request" in fn.__code__.co_names
    leader.install_kopf_fence()
    leader.install_kopf_fence()  # idempotent
    assert leader.kopf_fence_installed()
    seen: list[str] = []
    token = fencing.CURRENT.set(expired_fence(seen))
    try:
        with pytest.raises(TermOver):
            await kopf_api.patch(
                "/apis/blooio.com/v1alpha1/namespaces/ns/blooiowebhooks/orders/status",
                settings=OperatorSettings(),
                payload={"status": {}},
                logger=None,  # type: ignore[arg-type]
            )
        assert seen == [
            "kopf PATCH /apis/blooio.com/v1alpha1/namespaces/ns/blooiowebhooks/orders/status"
        ]
        # A read is not fenced: it reaches kopf (which has no credentials here).
        with pytest.raises(LookupError):
            await kopf_api.get("/api/v1/namespaces", settings=OperatorSettings(), logger=None)  # type: ignore[arg-type]
    finally:
        fencing.CURRENT.reset(token)


# --- settings and identity -----------------------------------------------------------------


def test_lease_timings_must_leave_a_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (
        s.leader_elect,
        s.lease_duration_seconds,
        s.lease_renew_deadline_seconds,
        s.lease_retry_period_seconds,
    ) == (False, 15.0, 10.0, 2.0)
    monkeypatch.setenv("BLOOIO_LEASE_RENEW_DEADLINE_SECONDS", "15")
    with pytest.raises(ValidationError, match="shorter than BLOOIO_LEASE_DURATION_SECONDS"):
        Settings()
    monkeypatch.setenv("BLOOIO_LEASE_RENEW_DEADLINE_SECONDS", "3")
    monkeypatch.setenv("BLOOIO_LEASE_DURATION_SECONDS", "4")
    monkeypatch.setenv("BLOOIO_LEASE_RETRY_PERIOD_SECONDS", "3")
    with pytest.raises(ValidationError, match="RETRY_PERIOD"):
        Settings()


def test_identity_is_the_pod_name_plus_a_per_process_suffix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "blooio-operator-7d9f-abcde")
    a, b = leader.holder_identity(), leader.holder_identity()
    assert a.startswith("blooio-operator-7d9f-abcde_")
    assert b.startswith("blooio-operator-7d9f-abcde_")
    assert a != b


def test_lease_namespace_defaults_to_the_pods(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(leader, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(ValueError, match="POD_NAMESPACE"):
        leader.lease_namespace(None)
    monkeypatch.setenv("POD_NAMESPACE", "blooio-system")
    assert leader.lease_namespace(None) == "blooio-system"
    assert leader.lease_namespace("ops") == "ops"


def test_micro_time_format() -> None:
    from blooio_operator.kube.client import _micro_time

    assert _micro_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
