"""Changing a Ready resource: PATCH only what changed, suspend/resume, replace on a
channel change, the rotation and adoption annotations, and renaming the Secret."""

from __future__ import annotations

import pytest

from blooio_operator.blooio import ValidationFailed
from blooio_operator.kube import KubeError
from blooio_operator.models import reasons
from blooio_operator.reconcile import lifecycle
from blooio_operator.reconcile.errors import CredentialsFailure, PermanentFailure
from tests.unit.fakes import (
    EVENT_TYPES,
    NAMESPACE,
    URL,
    SimulatedCrash,
    World,
    default_spec,
)

NEW_URL = "https://orders-v2.shop.example.com/blooio"


@pytest.fixture
def world() -> World:
    return World()


def signing_secret(world: World, name: str = "orders-blooio-webhook") -> str:
    data = world.kube.secret_data(NAMESPACE, name)
    assert data is not None, f"Secret {name} missing"
    return data["signing-secret"]


async def assert_settled(world: World) -> None:
    """The next reconcile is free: zero Blooio calls, zero Kubernetes writes."""
    assert lifecycle.is_settled(world.ctx())
    world.reset_counters()
    await world.reconcile()
    assert world.blooio.calls == []
    assert world.kube.writes == []


# --- url / eventTypes --------------------------------------------------------------------


async def test_url_edit_is_one_patch_of_the_url_only_same_secret(world: World) -> None:
    webhook_id = await world.ready()
    before = signing_secret(world)
    world.edit_spec(url=NEW_URL)
    await world.reconcile()

    assert [c.method for c in world.blooio.calls] == ["update_webhook"]
    assert world.blooio.calls[0].webhook_id == webhook_id
    assert world.blooio.calls[0].wire == {"url": NEW_URL}
    assert world.blooio.hooks[webhook_id].url == NEW_URL
    assert signing_secret(world) == before
    assert world.secret()["webhook-url"] == NEW_URL
    status = world.status()
    assert status["applied"]["url"] == NEW_URL
    assert status["observedGeneration"] == 2
    assert world.events.reasons() == [reasons.UPDATED]
    await assert_settled(world)


async def test_event_types_edit_patches_event_types_only(world: World) -> None:
    webhook_id = await world.ready()
    before = signing_secret(world)
    world.edit_spec(eventTypes=["message.*"])
    await world.reconcile()
    assert [c.wire for c in world.blooio.calls_to("update_webhook")] == [
        {"event_types": ["message.*"]}
    ]
    assert world.blooio.count() == 1
    assert world.blooio.hooks[webhook_id].event_types == ["message.*"]
    assert signing_secret(world) == before
    assert world.events.reasons() == [reasons.UPDATED]
    assert [e.op for e in world.kube.writes if e.op == "write_secret"] == []
    await assert_settled(world)


async def test_event_types_reordering_is_not_a_change(world: World) -> None:
    await world.ready()
    world.edit_spec(eventTypes=list(reversed(EVENT_TYPES)))
    await world.reconcile()
    assert world.blooio.calls == []
    assert world.events.events == []
    assert world.status()["observedGeneration"] == 2
    assert [e.op for e in world.kube.writes] == ["patch_status"]
    await assert_settled(world)


async def test_rejected_update_stalls_and_reverting_recovers_without_calls(world: World) -> None:
    await world.ready()
    world.blooio.fail_next("update_webhook", ValidationFailed(message="url is not reachable"))
    world.edit_spec(url="https://unreachable.example.com/x")
    err = await world.run(action="update")
    assert isinstance(err, PermanentFailure)
    assert "url is not reachable" in err.message
    assert world.status()["applied"]["url"] == URL  # what Blooio has did not change
    assert world.condition("Stalled")["status"] == "True"

    world.edit_spec(url=URL)
    world.reset_counters()
    await world.reconcile()
    assert world.blooio.calls == []
    assert world.condition("Ready")["status"] == "True"
    assert world.condition("Stalled")["status"] == "False"


async def test_update_of_a_webhook_deleted_at_blooio_recreates_it(world: World) -> None:
    old_id = await world.ready()
    del world.blooio.hooks[old_id]
    world.edit_spec(url=NEW_URL)
    await world.reconcile()
    # The 404 is confirmed by a GET (one place decides "gone") before anything is created.
    assert [c.method for c in world.blooio.calls] == [
        "update_webhook",
        "get_webhook",
        "create_webhook",
    ]
    new_id = world.status()["webhookId"]
    assert new_id != old_id
    assert world.secret()["webhook-id"] == new_id
    assert signing_secret(world) == world.blooio.secret_of(new_id)
    assert reasons.RECREATED in world.events.reasons()
    await assert_settled(world)


# --- suspend / resume ----------------------------------------------------------------------


async def test_suspend_then_resume(world: World) -> None:
    webhook_id = await world.ready()
    before = signing_secret(world)

    world.edit_spec(suspend=True)
    await world.reconcile()
    assert [c.wire for c in world.blooio.calls] == [{"status": "disabled"}]
    assert world.blooio.hooks[webhook_id].status == "disabled"
    assert world.status()["remoteStatus"] == "disabled"
    assert world.events.reasons() == [reasons.SUSPENDED]
    ready = world.condition("Ready")
    assert ready is not None
    assert ready["status"] == "True"
    assert ready["reason"] == reasons.SUSPENDED_REASON
    await assert_settled(world)

    world.edit_spec(suspend=False)
    await world.reconcile()
    assert [c.wire for c in world.blooio.calls] == [{"status": "active"}]
    assert world.status()["remoteStatus"] == "active"
    assert world.events.reasons() == [reasons.RESUMED]
    assert world.condition("Ready")["reason"] == reasons.SYNCED
    assert signing_secret(world) == before
    await assert_settled(world)


async def test_created_suspended_is_disabled_at_blooio(world: World) -> None:
    world.apply(default_spec(suspend=True))
    await world.reconcile()
    (webhook_id,) = world.blooio.hooks
    assert world.blooio.hooks[webhook_id].status == "disabled"
    assert world.status()["remoteStatus"] == "disabled"
    await assert_settled(world)


async def test_replacing_a_suspended_webhook_keeps_it_disabled(world: World) -> None:
    await world.ready(default_spec(suspend=True, channelId="ch_old"))
    world.edit_spec(channelId="ch_new")
    await world.reconcile()
    (new_id,) = world.blooio.hooks
    assert world.blooio.hooks[new_id].status == "disabled"
    assert world.status()["remoteStatus"] == "disabled"


# --- channel change: replace ------------------------------------------------------------------


async def test_channel_change_replaces_the_webhook(world: World) -> None:
    old_id = await world.ready(default_spec(channelId="ch_old", channelType="blooio"))
    old_secret = signing_secret(world)
    world.edit_spec(channelId="ch_new")
    await world.reconcile()

    assert [c.method for c in world.blooio.calls] == ["create_webhook", "delete_webhook"]
    assert world.blooio.calls[0].wire["channel_id"] == "ch_new"
    assert world.blooio.calls[1].webhook_id == old_id
    (new_id,) = world.blooio.hooks
    assert new_id != old_id
    assert world.status()["webhookId"] == new_id
    assert world.status()["applied"]["channelId"] == "ch_new"
    assert "pending" not in world.status()
    assert signing_secret(world) == world.blooio.secret_of(new_id) != old_secret
    assert world.secret()["webhook-id"] == new_id

    journal = world.journal
    secret = journal.find(lambda e: e.op == "write_secret")
    switched = journal.find(
        lambda e: e.op == "patch_status" and e.detail.get("webhookId") == new_id
    )
    delete = journal.find(lambda e: e.op == "delete_webhook")
    assert secret < switched < delete
    assert world.events.reasons() == [reasons.REPLACED]
    assert old_id in world.events.events[0][2]
    assert new_id in world.events.events[0][2]
    await assert_settled(world)


async def test_replace_tolerates_the_old_webhook_being_gone(world: World) -> None:
    old_id = await world.ready(default_spec(channelId="ch_old"))
    del world.blooio.hooks[old_id]
    world.edit_spec(channelId="ch_new")
    await world.reconcile()
    assert len(world.blooio.hooks) == 1
    assert world.events.reasons() == [reasons.REPLACED]


async def test_removing_the_channel_replaces_once_then_settles(world: World) -> None:
    await world.ready(default_spec(channelId="ch_old", channelType="blooio"))
    world.edit_spec(channelId=None, channelType=None)
    await world.reconcile()
    assert world.blooio.count("create_webhook") == 1
    await assert_settled(world)  # fails: the next reconcile replaces the webhook again
    assert "channelId" not in world.status()["applied"]


@pytest.mark.parametrize("point", ["after-replace-create", "after-secret", "before-replace-delete"])
async def test_replace_survives_a_crash_at_every_step(world: World, point: str) -> None:
    old_id = await world.ready(default_spec(channelId="ch_old"))
    world.edit_spec(channelId="ch_new")
    world.crash_at(point)
    with pytest.raises(SimulatedCrash):
        await world.run()
    world.no_crash()
    await world.reconcile(attempt=1)

    assert old_id not in world.blooio.hooks
    (new_id,) = world.blooio.hooks
    assert world.blooio.hooks[new_id].channel_id == "ch_new"
    assert world.status()["webhookId"] == new_id
    assert "pending" not in world.status()
    assert signing_secret(world) == world.blooio.secret_of(new_id)
    assert world.blooio.count("create_webhook") == 1
    await assert_settled(world)


# --- rotation annotation --------------------------------------------------------------------


async def test_rotation_annotation_rotates_once_per_token(world: World) -> None:
    webhook_id = await world.ready()
    first = signing_secret(world)

    world.set_annotation(reasons.ANNOTATION_ROTATE, "2026-01-01")
    await world.reconcile()
    assert [c.method for c in world.blooio.calls] == ["rotate_secret"]
    second = signing_secret(world)
    assert second != first
    assert second == world.blooio.secret_of(webhook_id)
    status = world.status()
    assert status["rotateToken"] == "2026-01-01"
    assert status["secretRotatedAt"].endswith("Z")
    assert world.events.reasons() == [reasons.SECRET_ROTATED]
    await assert_settled(world)  # same token again: nothing

    world.set_annotation(reasons.ANNOTATION_ROTATE, "2026-02-01")
    await world.reconcile()
    assert world.blooio.count("rotate_secret") == 1
    assert signing_secret(world) not in (first, second)
    assert world.status()["rotateToken"] == "2026-02-01"
    await assert_settled(world)


async def test_rotation_token_present_at_creation_costs_no_rotation(world: World) -> None:
    world.apply(annotations={reasons.ANNOTATION_ROTATE: "t1"})
    await world.reconcile()
    assert [c.method for c in world.blooio.calls] == ["create_webhook"]
    assert world.status()["rotateToken"] == "t1"
    await assert_settled(world)


async def test_rotation_crash_before_the_secret_write_rotates_again(world: World) -> None:
    webhook_id = await world.ready()
    world.set_annotation(reasons.ANNOTATION_ROTATE, "t1")
    world.crash_at("after-rotate")
    with pytest.raises(SimulatedCrash):
        await world.run()
    world.no_crash()
    await world.reconcile()
    assert world.blooio.count("rotate_secret") == 2
    assert signing_secret(world) == world.blooio.secret_of(webhook_id)
    await assert_settled(world)


# --- adoption annotation ---------------------------------------------------------------------


async def test_adopt_annotation_adopts_instead_of_creating(world: World) -> None:
    existing = world.blooio.seed(url="https://legacy.example.com/hook", event_types=["*"])
    original_secret = existing.secret
    world.apply(annotations={reasons.ANNOTATION_ADOPT: existing.id})
    await world.reconcile()

    assert [c.method for c in world.blooio.calls] == [
        "get_webhook",
        "update_webhook",
        "rotate_secret",
    ]
    assert world.blooio.calls[1].wire == {"url": URL, "event_types": EVENT_TYPES}
    assert world.blooio.hooks[existing.id].url == URL
    assert list(world.blooio.hooks) == [existing.id]
    status = world.status()
    assert status["webhookId"] == existing.id
    assert status["adoptedWebhookId"] == existing.id
    assert signing_secret(world) == world.blooio.secret_of(existing.id) != original_secret
    assert world.events.reasons() == [reasons.ADOPTED]
    await assert_settled(world)


async def test_adoption_survives_a_failed_secret_write(world: World) -> None:
    existing = world.blooio.seed()
    world.apply(annotations={reasons.ANNOTATION_ADOPT: existing.id})
    world.kube.fail_next("write_secret", KubeError(500, "InternalError", "create Secret"))
    assert await world.run() is not None
    await world.reconcile(attempt=1)
    assert world.blooio.count("create_webhook") == 0
    assert world.status()["webhookId"] == existing.id
    assert signing_secret(world) == world.blooio.secret_of(existing.id)


async def test_replace_survives_a_failed_secret_write(world: World) -> None:
    old_id = await world.ready(default_spec(channelId="ch_old"))
    world.edit_spec(channelId="ch_new")
    world.kube.fail_next("write_secret", KubeError(500, "InternalError", "patch Secret"))
    assert await world.run() is not None
    await world.reconcile(attempt=1)
    (new_id,) = world.blooio.hooks
    assert new_id != old_id
    assert world.blooio.count("create_webhook") == 1
    assert signing_secret(world) == world.blooio.secret_of(new_id)
    await assert_settled(world)


async def test_adopt_replaces_a_previous_webhook_but_leaves_it_at_blooio(world: World) -> None:
    previous = await world.ready()
    other = world.blooio.seed()
    world.set_annotation(reasons.ANNOTATION_ADOPT, other.id)
    await world.reconcile()
    assert world.status()["webhookId"] == other.id
    assert previous in world.blooio.hooks
    assert world.blooio.count("delete_webhook") == 0
    assert previous in world.events.of(reasons.ADOPTED)[0][2]
    await assert_settled(world)


async def test_adopting_an_unknown_webhook_is_permanent(world: World) -> None:
    world.apply(annotations={reasons.ANNOTATION_ADOPT: "wh_nope"})
    err = await world.run()
    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.ADOPTION_FAILED
    assert "wh_nope" in err.message
    assert world.blooio.count("create_webhook") == 0
    assert world.condition("Stalled")["reason"] == reasons.ADOPTION_FAILED


async def test_adopting_a_webhook_on_another_channel_is_permanent(world: World) -> None:
    existing = world.blooio.seed(channel_id="ch_x")
    world.apply(annotations={reasons.ANNOTATION_ADOPT: existing.id})
    err = await world.run()
    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.ADOPTION_FAILED
    assert [c.method for c in world.blooio.calls] == ["get_webhook"]


async def test_adopting_into_a_foreign_secret_is_refused_before_any_call(world: World) -> None:
    existing = world.blooio.seed()
    world.kube.put_secret(NAMESPACE, "orders-blooio-webhook", {"a": "b"}, owner_uid="other")
    world.apply(annotations={reasons.ANNOTATION_ADOPT: existing.id})
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.SECRET_CONFLICT
    assert world.blooio.calls == []


async def test_adopt_annotation_matching_the_current_webhook_is_recorded_only(
    world: World,
) -> None:
    webhook_id = await world.ready()
    world.set_annotation(reasons.ANNOTATION_ADOPT, webhook_id)
    assert lifecycle.is_settled(world.ctx())


# --- the Secret's name and metadata --------------------------------------------------------


async def test_secret_rename_moves_the_secret_without_rotating(world: World) -> None:
    await world.ready()
    before = signing_secret(world)
    world.edit_spec(secret={"name": "renamed"})
    await world.reconcile()
    assert world.blooio.calls == []
    assert signing_secret(world, "renamed") == before
    assert world.kube.secret_data(NAMESPACE, "orders-blooio-webhook") is None
    assert world.status()["secretName"] == "renamed"
    await assert_settled(world)


async def test_secret_label_edit_rewrites_the_secret_with_the_same_value(world: World) -> None:
    await world.ready()
    before = signing_secret(world)
    world.edit_spec(secret={"labels": {"team": "shop"}})
    await world.reconcile()
    assert world.blooio.calls == []
    stored = world.kube.secrets[(NAMESPACE, "orders-blooio-webhook")]
    assert stored.labels["team"] == "shop"
    assert signing_secret(world) == before
    await assert_settled(world)


async def test_credentials_ref_edit_is_not_a_remote_change(world: World) -> None:
    await world.ready()
    world.kube.put_secret(
        NAMESPACE, "k", {"api-key": "bk_other"}, labels={"blooio.com/credentials": "true"}
    )
    world.edit_spec(credentialsRef={"name": "k"})
    await world.reconcile()
    # One read with the new key: can it see the webhook? (It can: same account here.)
    assert [c.method for c in world.blooio.calls] == ["get_webhook"]
    assert world.pool.keys[-1] == "bk_other"
