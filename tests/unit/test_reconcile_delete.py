"""The finalizer: deletionPolicy Delete / Orphan / Disable and skip-remote-delete."""

from __future__ import annotations

import pytest

from blooio_operator.blooio import CreateOutcomeUnknown, ServerError
from blooio_operator.models import reasons
from blooio_operator.reconcile import deletion
from blooio_operator.reconcile.errors import CredentialsFailure, TransientFailure
from tests.unit.fakes import NAMESPACE, UID, SimulatedCrash, World, default_spec

SECRET = "orders-blooio-webhook"


@pytest.fixture
def world() -> World:
    return World()


async def finalize(world: World, **kwargs) -> Exception | None:
    return await world.run(deletion.finalize, action="delete", **kwargs)


async def test_delete_policy_deletes_the_webhook(world: World) -> None:
    webhook_id = await world.ready()
    assert await finalize(world) is None
    assert [(c.method, c.webhook_id) for c in world.blooio.calls] == [
        ("delete_webhook", webhook_id)
    ]
    assert world.blooio.hooks == {}
    assert world.events.reasons() == [reasons.DELETED]
    assert webhook_id in world.events.events[0][2]
    # The Secret is left to ownerReference garbage collection.
    assert world.kube.writes == []


async def test_delete_policy_counts_404_as_done(world: World) -> None:
    webhook_id = await world.ready()
    del world.blooio.hooks[webhook_id]
    assert await finalize(world) is None
    assert world.blooio.count("delete_webhook") == 1
    assert world.events.reasons() == [reasons.DELETED]


async def test_delete_policy_retries_a_5xx(world: World) -> None:
    await world.ready()
    world.blooio.fail_next("delete_webhook", ServerError(503, message="down"))
    err = await finalize(world)
    assert isinstance(err, TransientFailure)
    assert len(world.blooio.hooks) == 1
    assert await finalize(world) is None
    assert world.blooio.hooks == {}


async def test_crash_after_remote_delete_is_finished_on_retry(world: World) -> None:
    await world.ready()
    world.crash_at("after-remote-delete")
    with pytest.raises(SimulatedCrash):
        await finalize(world)
    world.no_crash()
    assert await finalize(world) is None
    assert world.events.reasons() == [reasons.DELETED]


async def test_orphan_policy_releases_the_secret_without_calling_blooio(world: World) -> None:
    webhook_id = await world.ready(default_spec(deletionPolicy="Orphan"))
    world.pool.keys.clear()
    assert await finalize(world) is None
    assert world.blooio.calls == []
    assert world.pool.keys == []  # works even when the credentials are gone
    assert webhook_id in world.blooio.hooks
    # Written under Orphan without an ownerReference (foreground deletion would collect
    # it before any finalizer could release it), so there is nothing to release.
    assert world.kube.writes == []
    stored = world.kube.secrets[(NAMESPACE, SECRET)]
    assert all(r["uid"] != UID for r in stored.owner_refs)
    assert world.secret()["webhook-id"] == webhook_id
    assert world.events.reasons() == [reasons.ORPHANED]


async def test_orphan_policy_without_credentials_still_finalizes() -> None:
    world = World(api_key=None)
    world.apply(default_spec(deletionPolicy="Orphan"), status={"webhookId": "wh_x"})
    assert await finalize(world) is None
    assert world.events.reasons() == [reasons.ORPHANED]


async def test_disable_policy_patches_status_disabled_and_keeps_it(world: World) -> None:
    webhook_id = await world.ready(default_spec(deletionPolicy="Disable"))
    assert await finalize(world) is None
    assert [(c.method, c.webhook_id, c.wire) for c in world.blooio.calls] == [
        ("update_webhook", webhook_id, {"status": "disabled"})
    ]
    assert world.blooio.hooks[webhook_id].status == "disabled"
    assert world.events.reasons() == [reasons.DISABLED]


async def test_disable_policy_counts_404_as_done(world: World) -> None:
    webhook_id = await world.ready(default_spec(deletionPolicy="Disable"))
    del world.blooio.hooks[webhook_id]
    assert await finalize(world) is None
    assert world.events.reasons() == [reasons.DISABLED]


@pytest.mark.parametrize("policy", ["Delete", "Disable", "Orphan"])
async def test_skip_remote_delete_releases_without_calling_blooio(
    world: World, policy: str
) -> None:
    webhook_id = await world.ready(default_spec(deletionPolicy=policy))
    world.set_annotation(reasons.ANNOTATION_SKIP_REMOTE_DELETE, "true")
    world.pool.keys.clear()
    assert await finalize(world) is None
    assert world.blooio.calls == []
    assert world.pool.keys == []
    assert webhook_id in world.blooio.hooks
    assert world.events.reasons() == [reasons.DELETED]
    assert reasons.ANNOTATION_SKIP_REMOTE_DELETE in world.events.events[0][2]
    assert world.kube.writes == []
    # Under Orphan the Secret never had an ownerReference; otherwise it keeps it and is
    # garbage-collected with the resource.
    stored = world.kube.secrets[(NAMESPACE, SECRET)]
    assert any(r["uid"] == UID for r in stored.owner_refs) == (policy != "Orphan")


async def test_skip_remote_delete_unsticks_a_finalizer_without_credentials() -> None:
    world = World(api_key=None)
    world.apply(status={"webhookId": "wh_x"})
    err = await finalize(world)
    assert isinstance(err, CredentialsFailure)
    world.set_annotation(reasons.ANNOTATION_SKIP_REMOTE_DELETE, "true")
    assert await finalize(world) is None


async def test_skip_remote_delete_needs_the_exact_value_true(world: World) -> None:
    await world.ready()
    world.set_annotation(reasons.ANNOTATION_SKIP_REMOTE_DELETE, "yes")
    await finalize(world)
    assert world.blooio.count("delete_webhook") == 1


async def test_nothing_created_means_nothing_to_do(world: World) -> None:
    world.apply()
    assert await finalize(world) is None
    assert world.blooio.calls == []
    assert world.pool.keys == []
    assert world.events.events == []


async def test_delete_during_an_unknown_create_outcome_finds_and_deletes_it(
    world: World,
) -> None:
    world.apply()
    world.blooio.commit_then_fail()
    await world.run()
    assert world.status()["pending"]
    world.reset_counters()
    assert await finalize(world) is None
    assert [c.method for c in world.blooio.calls] == ["list_webhooks", "delete_webhook"]
    assert world.blooio.hooks == {}  # nothing leaked at Blooio


async def test_delete_with_pending_create_that_never_committed(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", CreateOutcomeUnknown("reset"))
    await world.run()
    world.reset_counters()
    assert await finalize(world) is None
    assert [c.method for c in world.blooio.calls] == ["list_webhooks"]


async def test_delete_mid_replace_deletes_old_and_new(world: World) -> None:
    old_id = await world.ready(default_spec(channelId="ch_old"))
    world.edit_spec(channelId="ch_new")
    world.crash_at("before-replace-delete")
    with pytest.raises(SimulatedCrash):
        await world.run()
    world.no_crash()
    (new_id,) = (i for i in world.blooio.hooks if i != old_id)
    world.reset_counters()
    assert await finalize(world) is None
    assert world.blooio.hooks == {}
    assert sorted(c.webhook_id for c in world.blooio.calls_to("delete_webhook")) == sorted(
        [old_id, new_id]
    )


async def test_delete_mid_replace_calls_each_webhook_once(world: World) -> None:
    old_id = await world.ready(default_spec(channelId="ch_old"))
    world.edit_spec(channelId="ch_new")
    world.crash_at("after-replace-create")
    with pytest.raises(SimulatedCrash):
        await world.run()
    world.no_crash()
    world.reset_counters()
    assert await finalize(world) is None
    assert world.blooio.hooks == {}
    deleted = [c.webhook_id for c in world.blooio.calls_to("delete_webhook")]
    assert sorted(deleted) == sorted(set(deleted))
    assert old_id in deleted
    assert world.events.events[0][2].count(old_id) == 1
