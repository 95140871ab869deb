"""WebhookContext: built from a kopf-like body; status saves patch only what changed;
credentials resolve to the right per-key client."""

from __future__ import annotations

import pytest

from blooio_operator.models import reasons
from blooio_operator.models.resource import Applied
from blooio_operator.reconcile.context import WebhookContext, key_id, ms_to_iso, parse_iso
from blooio_operator.reconcile.errors import CredentialsFailure
from tests.unit.fakes import (
    API_KEY,
    NAMESPACE,
    UID,
    FakeBlooio,
    FakeEvents,
    World,
    default_spec,
    make_body,
)

T0 = "2026-01-01T00:00:00Z"


@pytest.fixture
def world() -> World:
    return World()


def _ctx_with_status(world: World, status: dict) -> WebhookContext:
    world.apply(status=status)
    return world.ctx()


def test_build_reads_metadata_spec_and_status(world: World) -> None:
    body = make_body(
        generation=4,
        annotations={reasons.ANNOTATION_ROTATE: "t1"},
        spec=default_spec(suspend=True),
        status={"webhookId": "wh_1", "kopf": {"progress": {}}},
    )
    ctx = WebhookContext.build(world.deps, body=body, events=FakeEvents(), attempt=2)
    assert (ctx.namespace, ctx.name, ctx.uid, ctx.generation) == (NAMESPACE, "orders", UID, 4)
    assert ctx.annotations == {reasons.ANNOTATION_ROTATE: "t1"}
    assert ctx.spec.suspend is True
    assert ctx.status.webhook_id == "wh_1"
    assert ctx.attempt == 2
    assert ctx.secret_name == "orders-blooio-webhook"
    assert ctx.owner.uid == UID


def test_build_tolerates_missing_status_and_annotations(world: World) -> None:
    body = make_body()
    del body["metadata"]["annotations"]
    ctx = WebhookContext.build(world.deps, body=body, events=FakeEvents())
    assert ctx.annotations == {}
    assert ctx.status.webhook_id is None


async def test_save_status_without_changes_writes_nothing(world: World) -> None:
    ctx = _ctx_with_status(world, {"webhookId": "wh_1", "remoteStatus": "active"})
    assert await ctx.save_status() is False
    assert world.kube.writes == []


async def test_save_status_patches_only_changed_fields(world: World) -> None:
    ctx = _ctx_with_status(
        world,
        {
            "webhookId": "wh_1",
            "remoteStatus": "active",
            "secretName": "orders-blooio-webhook",
            "applied": {"url": "https://a", "eventTypes": ["*"]},
        },
    )
    ctx.status.remote_status = "disabled"
    assert await ctx.save_status() is True
    assert world.kube.status_patches == [{"remoteStatus": "disabled"}]
    assert world.status()["webhookId"] == "wh_1"
    assert world.status()["remoteStatus"] == "disabled"
    # Saved state is remembered: a second save with no change is free.
    assert await ctx.save_status() is False
    assert len(world.kube.status_patches) == 1


async def test_save_status_deletes_cleared_fields_with_null(world: World) -> None:
    ctx = _ctx_with_status(
        world,
        {"webhookId": "wh_1", "pending": {"operation": "create", "startedAt": T0, "url": "u"}},
    )
    ctx.status.pending = None
    await ctx.save_status()
    assert world.kube.status_patches == [{"pending": None}]
    assert "pending" not in world.status()


async def test_save_status_leaves_fields_it_does_not_model_alone(world: World) -> None:
    ctx = _ctx_with_status(world, {"webhookId": "wh_1", "kopf": {"progress": {"x": 1}}})
    ctx.status.webhook_id = "wh_2"
    await ctx.save_status()
    assert world.kube.status_patches == [{"webhookId": "wh_2"}]
    assert world.status()["kopf"] == {"progress": {"x": 1}}


async def test_save_status_removes_a_nested_field_that_became_unset(world: World) -> None:
    ctx = _ctx_with_status(
        world,
        {
            "webhookId": "wh_1",
            "applied": {"url": "https://a", "eventTypes": ["*"], "channelId": "ch_old"},
        },
    )
    ctx.status.applied = Applied(url="https://a", event_types=["*"])
    await ctx.save_status()
    # What the API server stores after the merge patch must equal what we meant.
    assert world.status()["applied"] == {"url": "https://a", "eventTypes": ["*"]}


async def test_last_save_goes_to_the_status_sink_and_writes_nothing_itself(world: World) -> None:
    ctx = _ctx_with_status(world, {"webhookId": "wh_1", "remoteStatus": "active"})
    sink: dict[str, object] = {"kopf": {"last-handled-configuration": "{}"}}
    ctx.status_sink = sink
    ctx.status.remote_status = "disabled"
    # An intermediate save is still written at once: a crash must find it.
    ctx.status.secret_name = "s"
    assert await ctx.save_status() is True
    assert world.kube.status_patches == [{"remoteStatus": "disabled", "secretName": "s"}]
    ctx.status.webhook_id = "wh_2"
    assert await ctx.save_status(last=True) is True
    assert world.kube.status_patches == [{"remoteStatus": "disabled", "secretName": "s"}]
    assert sink == {"kopf": {"last-handled-configuration": "{}"}, "webhookId": "wh_2"}
    assert ctx.writes == 2


async def test_last_save_without_a_sink_writes_directly(world: World) -> None:
    ctx = _ctx_with_status(world, {"webhookId": "wh_1"})
    ctx.status.webhook_id = "wh_2"
    assert await ctx.save_status(last=True) is True
    assert world.kube.status_patches == [{"webhookId": "wh_2"}]


# --- credentials ---------------------------------------------------------------------


async def test_default_key_selects_the_client_and_records_a_key_id(world: World) -> None:
    world.apply()
    ctx = world.ctx()
    client = await ctx.blooio()
    assert client is world.blooio
    assert world.pool.keys == [API_KEY]
    assert ctx.key_id == key_id(API_KEY)
    assert API_KEY not in (ctx.key_id or "")


async def test_credentials_ref_selects_the_per_resource_key(world: World) -> None:
    other = FakeBlooio(world.journal, name="tenant")
    world.pool.by_key["bk_tenant_key"] = other
    world.kube.put_secret(
        NAMESPACE,
        "tenant-key",
        {"api-key": "bk_tenant_key\n"},
        labels={"blooio.com/credentials": "true"},
    )
    world.apply(default_spec(credentialsRef={"name": "tenant-key"}))
    ctx = world.ctx()
    assert await ctx.blooio() is other
    assert world.pool.keys == ["bk_tenant_key"]


@pytest.mark.parametrize(
    "secret",
    [None, {"other-key": "x"}, {"api-key": "   "}],
    ids=["no-secret", "no-key", "blank"],
)
async def test_credentials_ref_missing_is_credentials_missing(
    world: World, secret: dict[str, str] | None
) -> None:
    if secret is not None:
        world.kube.put_secret(
            NAMESPACE, "tenant-key", secret, labels={"blooio.com/credentials": "true"}
        )
    world.apply(default_spec(credentialsRef={"name": "tenant-key"}))
    with pytest.raises(CredentialsFailure) as info:
        await world.ctx().blooio()
    assert info.value.reason == reasons.CREDENTIALS_MISSING
    assert info.value.delay == world.settings.credentials_retry_seconds
    assert "tenant-key" in info.value.message
    assert world.pool.keys == []


async def test_no_default_key_is_credentials_missing() -> None:
    world = World(api_key=None)
    world.apply()
    with pytest.raises(CredentialsFailure) as info:
        await world.ctx().blooio()
    assert info.value.reason == reasons.CREDENTIALS_MISSING
    assert "BLOOIO_API_KEY" in info.value.message


def test_time_helpers() -> None:
    assert parse_iso(None) is None
    assert parse_iso(T0) == 1767225600.0
    assert ms_to_iso(1767225600000) == T0
    assert ms_to_iso(None) is None
    assert key_id("a") == key_id("a") != key_id("b")
