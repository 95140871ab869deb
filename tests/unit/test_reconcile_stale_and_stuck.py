"""Issue 11, findings 3a-3f: stale periodic checks, stuck intents, recovery that matched
too little, a 404 taken for "gone", and per-resource lists.

Each test is a scenario that went wrong on the code before the reconcile split (the
periodic check acted on a body up to one interval old, a failed recreate in the sweep
left ``status.pending`` forever, recovery matched on url and channel only and ignored a
channel changed meanwhile, one 404 created a new webhook, and every recovery or
finalizer listed every webhook on its own).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from blooio_operator.blooio import NotFound, ServerError, Unauthorized
from blooio_operator.models import reasons
from blooio_operator.reconcile import deletion, lifecycle, periodic
from blooio_operator.reconcile.context import ms_to_iso
from blooio_operator.reconcile.snapshots import SnapshotCache
from tests.unit.fakes import NAMESPACE, URL, FakeBlooio, SimulatedCrash, World, merge_patch

SECRET = "orders-blooio-webhook"
NEW_URL = "https://new.shop.example.com/blooio"


@pytest.fixture
def world() -> World:
    return World()


def backdate_sync(world: World, name: str = "orders") -> None:
    merge_patch(
        world.kube.objects[(NAMESPACE, name)]["status"], {"lastSyncedAt": "2020-01-01T00:00:00Z"}
    )


def webhooks(blooio: FakeBlooio) -> list[str]:
    return sorted(blooio.hooks)


# --- 3a: the periodic check acts only on a fresh body ------------------------------------


async def test_stale_check_after_a_channel_change_does_not_resurrect_the_old_webhook(
    world: World,
) -> None:
    old_id = await world.ready()
    stale = world.ctx()  # what the sweep held before the edit
    world.edit_spec(channelId="ch_e5f6a7b8", channelType="whatsapp")
    await world.reconcile()  # replace: new webhook, Secret switched, old one deleted
    new_id = world.status()["webhookId"]
    assert new_id != old_id
    new_secret = world.secret()["signing-secret"]
    world.reset_counters()

    await periodic.periodic_check(stale)  # the Secret names new_id: "wrong" for the stale body

    assert webhooks(world.blooio) == [new_id]  # nothing recreated on the old channel
    assert world.blooio.count("create_webhook") == 0
    assert world.blooio.count("rotate_secret") == 0
    assert world.secret()["signing-secret"] == new_secret == world.blooio.secret_of(new_id)
    assert world.events.events == []


async def test_stale_check_after_a_url_edit_does_not_patch_the_old_url_back(
    world: World,
) -> None:
    webhook_id = await world.ready()
    backdate_sync(world)
    stale = world.ctx()
    world.edit_spec(url=NEW_URL)
    await world.reconcile()
    backdate_sync(world)  # so that a list taken now may judge the resource
    world.reset_counters()

    await periodic.periodic_check(stale)

    assert world.blooio.hooks[webhook_id].url == NEW_URL
    assert world.blooio.count("update_webhook") == 0
    assert reasons.DRIFT_CORRECTED not in world.events.reasons()


async def test_check_of_a_resource_being_deleted_does_nothing(world: World) -> None:
    await world.ready()
    del world.kube.secrets[(NAMESPACE, SECRET)]
    world.kube.objects[(NAMESPACE, "orders")]["metadata"]["deletionTimestamp"] = (
        "2026-01-01T00:00:00Z"
    )
    await periodic.periodic_check(world.ctx())
    assert world.blooio.calls == []
    assert world.kube.writes == []


async def test_check_that_learns_of_a_deletion_on_reread_does_nothing(world: World) -> None:
    await world.ready()
    stale = world.ctx()
    del world.kube.secrets[(NAMESPACE, SECRET)]
    world.kube.objects[(NAMESPACE, "orders")]["metadata"]["deletionTimestamp"] = (
        "2026-01-01T00:00:00Z"
    )
    await periodic.periodic_check(stale)
    assert world.blooio.count("rotate_secret") == 0
    assert world.kube.writes == []


# --- 3b: a pending intent is always retried by someone --------------------------------------


async def test_failed_recreate_in_the_check_is_recorded_and_the_retry_converges(
    world: World,
) -> None:
    old_id = await world.ready()
    del world.blooio.hooks[old_id]
    backdate_sync(world)
    world.blooio.fail_next("create_webhook", ServerError(503, message="down"))

    err = await world.run(periodic.periodic_check, action="periodic")
    assert err is not None
    assert world.condition("Ready")["status"] == "False"  # 3e: the failure is visible
    assert world.condition("Reconciling")["status"] == "True"
    assert "pending" in world.status()

    async def retry(ctx: object) -> None:
        await periodic.periodic_check(ctx, retrying=True)  # type: ignore[arg-type]

    assert await world.run(retry, action="periodic") is None
    status = world.status()
    assert "pending" not in status
    assert world.condition("Ready")["status"] == "True"
    assert webhooks(world.blooio) == [status["webhookId"]]
    assert world.secret()["signing-secret"] == world.blooio.secret_of(status["webhookId"])


async def test_revoked_key_while_restoring_a_secret_turns_ready_false(world: World) -> None:
    await world.ready()
    del world.kube.secrets[(NAMESPACE, SECRET)]
    world.blooio.fail_next("rotate_secret", Unauthorized(401, message="revoked"))
    err = await world.run(periodic.periodic_check, action="periodic")
    assert err is not None
    assert err.reason == reasons.CREDENTIALS_INVALID
    assert world.condition("Ready")["status"] == "False"
    assert world.condition("Stalled")["status"] == "True"
    assert world.events.reasons("Warning") == [reasons.CREDENTIALS_INVALID]


# --- 3c: recovery matches on everything the intent recorded ------------------------------


async def test_channel_changed_while_the_create_was_pending_is_replaced(world: World) -> None:
    world.apply()
    world.crash_at("after-create")
    with pytest.raises(SimulatedCrash):
        await world.run()
    world.no_crash()
    (first,) = webhooks(world.blooio)
    world.edit_spec(channelId="ch_e5f6a7b8", channelType="whatsapp")

    await world.reconcile()

    status = world.status()
    assert status["observedGeneration"] == 2
    assert world.condition("Ready")["status"] == "True"
    (only,) = webhooks(world.blooio)  # the recovered one was replaced, not leaked
    assert only != first
    assert world.blooio.hooks[only].channel_id == "ch_e5f6a7b8"
    assert status["applied"]["channelId"] == "ch_e5f6a7b8"
    assert world.secret()["signing-secret"] == world.blooio.secret_of(only)


async def test_recovery_does_not_take_a_webhook_with_other_event_types(world: World) -> None:
    for name, events in (("a", ["message.received"]), ("b", ["poll.*"])):
        world.apply({"url": URL, "eventTypes": events}, name=name)
        world.crash_at("after-create")
        with pytest.raises(SimulatedCrash):
            await world.run(name=name)
    world.no_crash()
    assert len(world.blooio.hooks) == 2  # same url, same channel, different eventTypes

    for name in ("a", "b"):
        await world.reconcile(name=name)

    a, b = world.status("a")["webhookId"], world.status("b")["webhookId"]
    assert a != b
    assert world.blooio.hooks[a].event_types == ["message.received"]
    assert world.blooio.hooks[b].event_types == ["poll.*"]
    assert len(world.blooio.hooks) == 2
    assert world.blooio.count("create_webhook") == 2  # the two interrupted ones only


# --- 3d: one place decides "gone", with a confirming read -----------------------------------


async def test_switch_to_a_key_of_another_account_never_creates_there(world: World) -> None:
    other = FakeBlooio(world.journal, name="other")
    world.pool.by_key["bk_other_account"] = other
    old_id = await world.ready()
    world.kube.put_secret(
        NAMESPACE, "k", {"api-key": "bk_other_account"}, labels={"blooio.com/credentials": "true"}
    )
    world.edit_spec(credentialsRef={"name": "k"}, url=NEW_URL)

    err = await world.run()

    assert err is not None
    assert err.reason == reasons.CREDENTIALS_CHANGED
    assert other.hooks == {}
    assert other.count("create_webhook") == 0
    assert webhooks(world.blooio) == [old_id]
    assert world.condition("Stalled")["status"] == "True"


async def test_a_404_on_rotate_for_a_webhook_that_exists_creates_nothing(world: World) -> None:
    webhook_id = await world.ready()
    world.set_annotation(reasons.ANNOTATION_ROTATE, "t1")
    world.blooio.fail_next("rotate_secret", NotFound(404, message="blip"))
    err = await world.run()
    assert err is not None
    assert world.blooio.count("create_webhook") == 0
    assert webhooks(world.blooio) == [webhook_id]
    await world.reconcile()  # the retry rotates
    assert world.secret()["signing-secret"] == world.blooio.secret_of(webhook_id)


# --- 3f: per-key lists are shared, negatively cached and bounded ----------------------------


async def test_mass_recovery_shares_the_list(world: World) -> None:
    names = [f"r{i}" for i in range(20)]
    for name in names:
        world.apply({"url": f"https://{name}.example.com/h"}, name=name)
        world.crash_at("after-create")
        with pytest.raises(SimulatedCrash):
            await world.run(name=name)
    world.no_crash()
    for name in names:  # the operator restarts a minute after the crash
        pending = world.kube.objects[(NAMESPACE, name)]["status"]["pending"]
        pending["startedAt"] = ms_to_iso(int((time.time() - 60) * 1000))
    world.reset_counters()

    await asyncio.gather(*(world.reconcile(name=n) for n in names))

    assert world.blooio.count("list_webhooks") == 1  # was one per resource
    assert world.blooio.count("create_webhook") == 0
    assert len(world.blooio.hooks) == 20


async def test_mass_delete_during_an_outage_lists_once(world: World) -> None:
    names = [f"d{i}" for i in range(10)]
    for name in names:
        world.apply({"url": f"https://{name}.example.com/h"}, name=name)
        merge_patch(
            world.kube.objects[(NAMESPACE, name)],
            {
                "status": {
                    "pending": {
                        "operation": "create",
                        "startedAt": "2026-01-01T00:00:00Z",
                        "url": f"https://{name}.example.com/h",
                    }
                }
            },
        )
    world.blooio.fail_next("list_webhooks", ServerError(503, message="down"))

    results = await asyncio.gather(
        *(world.run(deletion.finalize, name=n, action="delete") for n in names)
    )

    assert all(r is not None for r in results)
    assert world.blooio.count("list_webhooks") == 1  # the failure is shared for a while


async def test_snapshots_of_unused_keys_are_forgotten(world: World) -> None:
    cache = SnapshotCache(600.0, idle_seconds=0.05)
    await cache.get("key-a", world.blooio)
    assert len(cache) == 1
    await asyncio.sleep(0.1)
    await cache.get("key-b", world.blooio)
    assert len(cache) == 1  # key-a dropped


async def test_fresh_list_is_never_older_than_asked(world: World) -> None:
    cache = SnapshotCache(600.0)
    first = await cache.get("k", world.blooio)
    again = await cache.fresh("k", world.blooio, after=first.fetched_at)
    assert again is first
    newer = await cache.fresh("k", world.blooio, after=time.time() + 0.001)
    assert newer.fetched_at >= first.fetched_at
    assert world.blooio.count("list_webhooks") == 2


async def test_clients_of_unused_keys_are_dropped() -> None:
    from pydantic import SecretStr

    from blooio_operator.blooio import ClientPool

    pool = ClientPool("http://127.0.0.1:9/v4", idle_seconds=0.05)
    try:
        pool.get(SecretStr("bk_a"))
        assert len(pool) == 1
        await asyncio.sleep(0.1)
        pool.get(SecretStr("bk_b"))
        assert len(pool) == 1  # bk_a dropped
    finally:
        await pool.aclose()


def test_lifecycle_stays_small() -> None:
    import inspect

    assert len(inspect.getsource(lifecycle).splitlines()) < 200


# --- storm findings (tests/chaos/storm.py) ---------------------------------------------------


async def test_late_commits_of_own_abandoned_intents_are_not_ambiguous(world: World) -> None:
    # F1b: a create abandoned by recovery commits late, and so does the next one: two
    # webhooks match the pending intent, and the abandoned intent explains one of them.
    world.apply()
    world.blooio.commit_then_fail()  # first POST: answer lost (committed now)
    await world.run()
    first = next(iter(world.blooio.hooks))
    late = world.blooio.hooks.pop(first)  # ...but not visible yet: committed late
    await world.run(let_time_pass=False)  # waits for the interrupted create to settle
    world.advance(60)
    world.blooio.commit_then_fail()  # recovery finds nothing, abandons, creates: lost too
    await world.run()
    assert world.status().get("abandoned")
    world.blooio.hooks[late.id] = late  # the late commit of the abandoned one lands
    world.advance(60)

    await world.reconcile()

    (kept,) = world.blooio.hooks  # newest kept, the other one deleted: no Stalled
    assert world.status()["webhookId"] == kept
    assert world.secret()["signing-secret"] == world.blooio.secret_of(kept)
    assert reasons.AMBIGUOUS_RECOVERY not in world.events.reasons()


async def test_a_rotation_without_answer_is_not_overtaken(world: World) -> None:
    # F2: a rotate whose answer was lost may still commit; rotating again right away could
    # be overtaken by it and leave the Secret stale. The next rotation waits it out.
    from blooio_operator.blooio import ApiTimeout

    webhook_id = await world.ready()
    world.set_annotation(reasons.ANNOTATION_ROTATE, "t1")
    world.blooio.fail_next(
        "rotate_secret", ApiTimeout("read timeout", method="POST", path="/x"), commit=True
    )
    err = await world.run(let_time_pass=False)
    assert err is not None
    assert world.status()["rotating"]["webhookId"] == webhook_id
    rotations = world.blooio.count("rotate_secret")

    err = await world.run(let_time_pass=False)
    assert err is not None
    assert err.reason == reasons.SETTLING
    assert world.blooio.count("rotate_secret") == rotations  # nothing sent meanwhile

    world.advance(60)
    await world.reconcile()
    assert "rotating" not in world.status()
    assert world.secret()["signing-secret"] == world.blooio.secret_of(webhook_id)
    assert world.status()["rotateToken"] == "t1"


async def test_finalizer_waits_for_an_interrupted_create_before_releasing(world: World) -> None:
    # F3: deleted while its create's outcome is unknown; releasing before the POST could
    # no longer commit left an orphan nobody would ever delete.
    world.apply()
    world.blooio.commit_then_fail()
    await world.run()
    err = await world.run(deletion.finalize, action="delete", let_time_pass=False)
    assert err is not None
    assert err.reason == reasons.SETTLING
    assert world.blooio.count("list_webhooks") == 0
    world.advance(60)
    assert await world.run(deletion.finalize, action="delete") is None
    assert world.blooio.hooks == {}
