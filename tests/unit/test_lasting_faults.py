"""Faults that last (issue 18), unit level: episodes, sweep retries, the per-key list's
backoff, and the registry's audit after a re-list."""

from __future__ import annotations

import asyncio
import logging

import pytest

from blooio_operator.blooio import ServerError, Unauthorized
from blooio_operator.handlers.registry import Registry
from blooio_operator.handlers.relist import RelistAudit
from blooio_operator.handlers.sweep import SweepRetries
from blooio_operator.reconcile import periodic
from blooio_operator.reconcile.errors import CredentialsFailure, TransientFailure
from blooio_operator.reconcile.snapshots import SnapshotCache
from tests.unit.fakes import NAME, NAMESPACE, UID, FakeBlooio, World, make_body

# --- episodes ------------------------------------------------------------------------------


async def test_sweep_failures_keep_their_attempt_count_and_warn_once() -> None:
    """Found by issue 18: failures the sweep hit always retried as attempt 0, each with a
    Warning Event, and each retry flipped Ready back to True before failing again."""
    world = World()
    webhook_id = await world.ready()
    world.blooio.hooks[webhook_id].url = "https://drifted.example.com/x"
    # The snapshot must be newer than the last write to judge the resource.
    world.kube.objects[(NAMESPACE, NAME)]["status"]["lastSyncedAt"] = "2020-01-01T00:00:00Z"
    errors = []
    for retrying in (False, True, True, True):
        world.deps.snapshots = SnapshotCache(0.001)  # every look lists again
        world.blooio.fail_next("update_webhook", ServerError(status=503, message="down"))

        async def check(ctx, retrying=retrying):  # type: ignore[no-untyped-def]
            await periodic.periodic_check(ctx, retrying=retrying)

        err = await world.run(check, action="periodic")
        assert isinstance(err, TransientFailure)
        errors.append(err)
        world.advance(10)
    assert world.deps.backoff.attempts(UID) == 4
    assert world.events.reasons("Warning") == ["RemoteError"]
    ready = world.condition("Ready")
    assert ready is not None
    assert ready["status"] == "False"
    # No Ready flips: after the first failure, the retries changed no condition.
    assert not any("conditions" in p for p in world.kube.status_patches[1:])

    async def heal(ctx):  # type: ignore[no-untyped-def]
        await periodic.periodic_check(ctx, retrying=True)

    assert await world.run(heal, action="periodic") is None
    assert world.condition("Ready")["status"] == "True"  # type: ignore[index]
    assert world.blooio.hooks[webhook_id].url != "https://drifted.example.com/x"
    assert "DriftCorrected" in world.events.reasons("Normal")


async def test_a_rejected_key_on_the_shared_list_stalls_the_resource() -> None:
    """Found by issue 18: a 401 on the per-key list was logged and Ready stayed True."""
    world = World()
    await world.ready()
    world.advance(10)
    world.blooio.fail_next("list_webhooks", Unauthorized(status=401, message="revoked"))

    async def check(ctx):  # type: ignore[no-untyped-def]
        await periodic.periodic_check(ctx)

    err = await world.run(check, action="periodic")
    assert isinstance(err, CredentialsFailure)
    stalled = world.condition("Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "CredentialsInvalid")
    assert world.events.reasons("Warning") == ["CredentialsInvalid"]


# --- sweep retries -------------------------------------------------------------------------


async def test_a_scheduled_retry_is_never_pre_empted() -> None:
    retries = SweepRetries()
    fired: list[str] = []
    gate = asyncio.Event()

    async def check(uid: str) -> None:
        fired.append(uid)
        await gate.wait()

    retries.schedule("a", 0.01, check)
    assert "a" in retries  # the regular pass skips it
    await asyncio.sleep(0.05)
    assert fired == ["a"]
    assert "a" in retries  # still, while the retry runs
    gate.set()
    await asyncio.sleep(0.01)
    assert "a" not in retries
    await retries.close()


# --- the per-key list ----------------------------------------------------------------------


async def test_list_failures_back_off_per_key_and_log_once_per_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    blooio = FakeBlooio()
    cache = SnapshotCache(600, failure_ttl=1.0, failure_cap=8.0)
    ttls = []
    caplog.set_level(logging.WARNING, "blooio_operator.reconcile")
    for _ in range(6):
        blooio.fail_next("list_webhooks", Unauthorized(status=401, message="revoked"))
        with pytest.raises(Unauthorized):
            await cache.get("key1", blooio)  # type: ignore[arg-type]
        entry = cache._entries["key1"]
        ttls.append(entry.failure_until - asyncio.get_running_loop().time())
        with pytest.raises(Unauthorized):  # remembered: no second call
            await cache.get("key1", blooio)  # type: ignore[arg-type]
        entry.failure_until = 0.0  # let the memory expire
    assert cache.lists == 6
    assert len(caplog.records) == 6  # one line per failed call, none per caller
    assert cache.rejected == {"key1"}
    assert ttls[0] < ttls[3]  # doubling ...
    assert max(ttls) <= 8.0 + 0.5  # ... to the cap
    await cache.get("key1", blooio)  # type: ignore[arg-type]
    assert cache.rejected == set()


# --- the registry after a re-list ----------------------------------------------------------


def body(uid: str, webhook_id: str) -> dict:  # type: ignore[type-arg]
    b = make_body(name=f"n-{uid}", namespace="ns", uid=uid)
    b["status"] = {"webhookId": webhook_id}
    return b


async def test_a_relist_forgets_what_it_no_longer_holds() -> None:
    """Found by issue 18: kopf sends no DELETED for objects that vanished in a watch gap."""
    registry = Registry()
    registry.observe(body("a", "wh_a"))
    registry.observe(body("b", "wh_b"))
    forgotten: list[str] = []
    lists = 0

    async def live() -> set[str]:
        nonlocal lists
        lists += 1
        return {"a"}

    def forget(uid: str) -> None:
        forgotten.append(uid)
        registry.forget(uid)

    audit = RelistAudit(registry, live, forget, quiet=0.05)
    await asyncio.sleep(0.01)
    audit.listed()
    registry.observe(body("a", "wh_a"))  # the re-list holds a only
    for _ in range(100):
        if forgotten:
            break
        await asyncio.sleep(0.02)
    assert forgotten == ["b"]
    assert lists == 1
    assert "wh_b" not in registry.claimed_by_others("a")
    assert registry.uids() == ["a"]
    await audit.close()


async def test_a_listing_that_holds_everything_costs_no_list() -> None:
    registry = Registry()
    registry.seed_claims({"a": "wh_a"})
    lists = 0

    async def live() -> set[str]:
        nonlocal lists
        lists += 1
        return set()

    audit = RelistAudit(registry, live, registry.forget, quiet=0.05)
    audit.listed()
    registry.observe(body("a", "wh_a"))
    await asyncio.sleep(0.2)
    assert lists == 0
    assert registry.uids() == ["a"]
    await audit.close()


async def test_no_retry_chain_is_lost() -> None:
    """Found by issue 18 (read from the code): the re-read before a sweep retry sat
    outside the error handling, so a Kubernetes error there scheduled nothing."""
    import kopf

    from blooio_operator.handlers.sweep import SweepChecks
    from blooio_operator.kube import KubeError

    world = World()
    registry = Registry()
    registry.observe(body("a", "wh_a"))
    retries = SweepRetries()
    outcomes: list[BaseException] = [KubeError(503, "unavailable", "read")]

    async def run_check(_body: dict, retrying: bool) -> None:  # type: ignore[type-arg]
        if outcomes:
            raise outcomes.pop(0)

    checks = SweepChecks(registry, retries, run_check, registry.forget, lambda: world.deps)
    await checks.check("a", retrying=True)
    assert "a" in retries  # the chain goes on
    assert world.deps.backoff.attempts("a") == 1
    retries.discard("a")
    outcomes.append(KubeError(503, "unavailable", "read"))
    await checks.check("a", retrying=False)
    assert "a" not in retries  # a regular check has the next pass
    outcomes.append(kopf.TemporaryError("x", delay=60))
    await checks.check("a", retrying=False)
    assert "a" in retries
    assert checks.current() == []  # never pre-empted by the regular pass
    await retries.close()
