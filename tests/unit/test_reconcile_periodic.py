"""periodic_check: restore a deleted/emptied Secret, correct drift from the per-key
snapshot, recreate a webhook deleted at Blooio — and do nothing when nothing is wrong."""

from __future__ import annotations

import pytest

from blooio_operator.blooio import ServerError
from blooio_operator.models import reasons
from blooio_operator.reconcile import periodic
from tests.unit.fakes import (
    EVENT_TYPES,
    NAMESPACE,
    URL,
    World,
    default_spec,
    merge_patch,
)

SECRET = "orders-blooio-webhook"
LONG_AGO = "2020-01-01T00:00:00Z"


@pytest.fixture
def world() -> World:
    return World()


def backdate_sync(world: World, name: str = "orders") -> None:
    """Pretend our last write to Blooio was long ago, so a fresh snapshot may judge us."""
    obj = world.kube.objects[(NAMESPACE, name)]
    merge_patch(obj["status"], {"lastSyncedAt": LONG_AGO})


async def check(world: World, name: str = "orders") -> None:
    err = await world.run(periodic.periodic_check, name=name, action="periodic")
    assert err is None, f"periodic check failed: {err}"


def drift_count(world: World, kind: str) -> float:
    value = world.deps.metrics.registry.get_sample_value(
        "blooio_operator_drift_corrections_total", {"kind": kind}
    )
    return value or 0.0


# --- nothing to do -------------------------------------------------------------------------


async def test_healthy_resource_costs_one_list_and_no_writes(world: World) -> None:
    await world.ready()
    backdate_sync(world)
    await check(world)
    assert [c.method for c in world.blooio.calls] == ["list_webhooks"]
    assert world.kube.writes == []
    assert world.events.events == []


async def test_resources_sharing_a_key_share_one_list(world: World) -> None:
    await world.ready()
    await world.ready(default_spec(url="https://b.example.com/h"), name="other")
    backdate_sync(world)
    backdate_sync(world, "other")
    await check(world)
    await check(world, "other")
    assert world.blooio.count("list_webhooks") == 1
    assert world.blooio.count() == 1


@pytest.mark.parametrize(
    "status_patch",
    [
        {"webhookId": None},
        {"pending": {"operation": "create", "startedAt": LONG_AGO, "url": URL}},
        {"conditions": []},
        {"observedGeneration": 0},
    ],
    ids=["no-webhook", "pending", "not-ready", "stale-generation"],
)
async def test_skips_resources_that_are_not_settled(world: World, status_patch) -> None:
    await world.ready()
    merge_patch(world.kube.objects[(NAMESPACE, "orders")]["status"], status_patch)
    del world.kube.secrets[(NAMESPACE, SECRET)]  # would otherwise be restored
    await check(world)
    assert world.blooio.calls == []
    assert world.kube.writes == []
    assert world.pool.keys == []


# --- the Secret -----------------------------------------------------------------------------


async def test_deleted_secret_is_restored_by_rotation(world: World) -> None:
    webhook_id = await world.ready()
    old = world.secret()["signing-secret"]
    del world.kube.secrets[(NAMESPACE, SECRET)]
    await check(world)

    assert [c.method for c in world.blooio.calls][:1] == ["rotate_secret"]
    assert world.blooio.count("create_webhook") == 0
    secret = world.secret()
    assert secret is not None
    assert secret["signing-secret"] == world.blooio.secret_of(webhook_id) != old
    assert secret["webhook-id"] == webhook_id
    assert secret["webhook-url"] == URL
    assert world.kube.secrets[(NAMESPACE, SECRET)].owner_refs[0]["uid"] == world.ctx().uid
    assert world.status()["secretRotatedAt"].endswith("Z")
    assert world.events.reasons() == [reasons.SECRET_RESTORED]
    write = world.journal.find(lambda e: e.op == "write_secret")
    rotate = world.journal.find(lambda e: e.op == "rotate_secret")
    assert rotate < write


async def test_emptied_secret_is_restored(world: World) -> None:
    webhook_id = await world.ready()
    world.kube.secrets[(NAMESPACE, SECRET)].data.pop("signing-secret")
    await check(world)
    assert world.blooio.count("rotate_secret") == 1
    assert world.secret()["signing-secret"] == world.blooio.secret_of(webhook_id)
    assert world.events.reasons() == [reasons.SECRET_RESTORED]


async def test_secret_naming_another_webhook_is_restored(world: World) -> None:
    webhook_id = await world.ready()
    world.kube.secrets[(NAMESPACE, SECRET)].data["webhook-id"] = b"wh_someone_else"
    await check(world)
    assert world.blooio.count("rotate_secret") == 1
    assert world.secret()["webhook-id"] == webhook_id
    assert world.events.reasons() == [reasons.SECRET_RESTORED]


async def test_secret_taken_over_by_someone_else_is_not_overwritten(world: World) -> None:
    await world.ready()
    world.kube.put_secret(NAMESPACE, SECRET, {"x": "y"}, owner_uid="intruder")
    err = await world.run(periodic.periodic_check, action="periodic")
    assert err is not None
    assert err.reason == reasons.SECRET_CONFLICT
    assert world.blooio.calls == []
    assert world.secret() == {"x": "y"}


async def test_restored_secret_for_a_webhook_deleted_at_blooio_recreates_it(
    world: World,
) -> None:
    old_id = await world.ready()
    del world.blooio.hooks[old_id]
    del world.kube.secrets[(NAMESPACE, SECRET)]
    await check(world)
    (new_id,) = world.blooio.hooks
    assert world.status()["webhookId"] == new_id
    assert world.secret()["signing-secret"] == world.blooio.secret_of(new_id)
    assert world.blooio.count("create_webhook") == 1


# --- drift ---------------------------------------------------------------------------------


async def test_drift_is_patched_back(world: World) -> None:
    webhook_id = await world.ready()
    secret_before = world.secret()
    hook = world.blooio.hooks[webhook_id]
    hook.url = "https://attacker.example.com/steal"
    hook.status = "disabled"
    backdate_sync(world)
    await check(world)

    assert [c.method for c in world.blooio.calls] == ["list_webhooks", "update_webhook"]
    assert world.blooio.calls[1].wire == {"url": URL, "status": "active"}
    assert hook.url == URL
    assert hook.status == "active"
    assert world.events.reasons() == [reasons.DRIFT_CORRECTED]
    assert world.status()["applied"]["url"] == URL
    assert world.status()["lastSyncedAt"] != LONG_AGO
    assert world.secret() == secret_before
    assert drift_count(world, "patched") == 1


async def test_drift_in_event_types_only_patches_event_types(world: World) -> None:
    webhook_id = await world.ready()
    world.blooio.hooks[webhook_id].event_types = ["*"]
    backdate_sync(world)
    await check(world)
    assert [c.wire for c in world.blooio.calls_to("update_webhook")] == [
        {"event_types": EVENT_TYPES}
    ]


async def test_event_type_order_at_blooio_is_not_drift(world: World) -> None:
    webhook_id = await world.ready()
    world.blooio.hooks[webhook_id].event_types = list(reversed(EVENT_TYPES))
    backdate_sync(world)
    await check(world)
    assert world.blooio.count("update_webhook") == 0
    assert world.events.events == []


async def test_suspended_resource_reenabled_at_blooio_is_disabled_again(world: World) -> None:
    webhook_id = await world.ready()
    world.edit_spec(suspend=True)
    await world.reconcile()
    world.blooio.hooks[webhook_id].status = "active"
    world.reset_counters()
    backdate_sync(world)
    await check(world)
    assert [c.wire for c in world.blooio.calls_to("update_webhook")] == [{"status": "disabled"}]
    assert world.events.reasons() == [reasons.DRIFT_CORRECTED]


async def test_webhook_missing_at_blooio_is_recreated(world: World) -> None:
    old_id = await world.ready()
    old_secret = world.secret()["signing-secret"]
    del world.blooio.hooks[old_id]
    backdate_sync(world)
    await check(world)

    assert [c.method for c in world.blooio.calls] == [
        "list_webhooks",
        "get_webhook",  # the confirming read: gone, for the key that created it
        "create_webhook",
    ]
    (new_id,) = world.blooio.hooks
    assert new_id != old_id
    status = world.status()
    assert status["webhookId"] == new_id
    assert "pending" not in status
    assert world.condition("Ready")["status"] == "True"
    secret = world.secret()
    assert secret is not None
    assert secret["webhook-id"] == new_id
    assert secret["signing-secret"] == world.blooio.secret_of(new_id) != old_secret
    assert world.events.reasons() == [reasons.RECREATED]
    assert drift_count(world, "recreated") == 1
    await world.reconcile()
    assert world.blooio.count() == 3  # settled: the reconcile after it is free


async def take_snapshot(world: World) -> None:
    """Fill the per-key snapshot cache from Blooio's current state."""
    ctx = world.ctx()
    await ctx.blooio()
    assert ctx.key_id is not None
    await world.deps.snapshots.get(ctx.key_id, world.blooio)


async def test_missing_from_snapshot_but_present_is_left_alone(world: World) -> None:
    webhook_id = await world.ready()
    backdate_sync(world)
    hook = world.blooio.hooks.pop(webhook_id)
    await take_snapshot(world)  # the list misses it (e.g. created/listed concurrently)
    world.blooio.hooks[webhook_id] = hook
    world.reset_counters()
    await check(world)
    assert [c.method for c in world.blooio.calls] == ["get_webhook"]
    assert world.events.events == []
    assert world.kube.writes == []


async def test_get_errors_other_than_404_do_not_recreate(world: World) -> None:
    webhook_id = await world.ready()
    backdate_sync(world)
    hook = world.blooio.hooks.pop(webhook_id)
    await take_snapshot(world)
    world.blooio.hooks[webhook_id] = hook
    world.blooio.fail_next("get_webhook", ServerError(503, message="down"))
    # A failure to look is not a finding: logged, left to the next pass, Ready untouched.
    await periodic.periodic_check(world.ctx())
    assert world.blooio.count("create_webhook") == 0
    assert world.condition("Ready")["status"] == "True"
    assert list(world.blooio.hooks) == [webhook_id]


async def test_snapshot_older_than_our_last_write_cannot_judge(world: World) -> None:
    webhook_id = await world.ready()
    await take_snapshot(world)  # taken while Blooio still has the old url...
    # ...then the operator updates the webhook (lastSyncedAt moves past the snapshot).
    world.edit_spec(url="https://new.example.com/h")
    await world.reconcile()
    assert world.blooio.hooks[webhook_id].url == "https://new.example.com/h"
    world.reset_counters()

    await check(world)
    assert world.blooio.calls == []  # the cached, older snapshot is not used to "correct"
    assert world.kube.writes == []
    assert world.events.events == []
