"""Signing secrets and API keys live only in the Secret: never in Events, status,
status patches, exception text or log records, along every reconcile path."""

from __future__ import annotations

import json
import logging

import pytest

from blooio_operator.blooio import CreateOutcomeUnknown, ServerError, ValidationFailed
from blooio_operator.models import reasons
from blooio_operator.reconcile import deletion, periodic
from tests.unit.fakes import API_KEY, NAMESPACE, World, default_spec

TENANT_KEY = "bk_tenant_key_fedcba9876543210"


async def _exercise_every_path(world: World) -> None:
    # create, then every kind of change
    world.apply()
    await world.reconcile()
    world.edit_spec(url="https://v2.example.com/h", suspend=True)
    await world.reconcile()
    world.set_annotation(reasons.ANNOTATION_ROTATE, "t1")
    await world.reconcile()
    world.edit_spec(channelId="ch_new")
    await world.reconcile()
    # periodic: Secret deleted, drift, webhook deleted at Blooio
    del world.kube.secrets[(NAMESPACE, "orders-blooio-webhook")]
    await world.run(periodic.periodic_check)
    webhook_id = world.status()["webhookId"]
    world.blooio.hooks[webhook_id].url = "https://drift.example.com/"
    world.kube.objects[(NAMESPACE, "orders")]["status"]["lastSyncedAt"] = "2020-01-01T00:00:00Z"
    await world.run(periodic.periodic_check)
    # failures
    world.blooio.fail_next("update_webhook", ValidationFailed(message="bad url"))
    world.edit_spec(url="https://v3.example.com/h")
    await world.run()
    world.blooio.fail_next("update_webhook", ServerError(503, message="down"))
    world.edit_spec(url="https://v4.example.com/h")
    await world.run()
    await world.reconcile(attempt=1)

    # a second resource, with its own key, through a lost response and recovery
    world.kube.put_secret(
        NAMESPACE, "tenant", {"api-key": TENANT_KEY}, labels={"blooio.com/credentials": "true"}
    )
    spec = default_spec(url="https://t.example.com/h", credentialsRef={"name": "tenant"})
    world.apply(spec, name="tenant-hook")
    world.blooio.commit_then_fail()
    await world.run(name="tenant-hook")
    await world.reconcile(name="tenant-hook", attempt=1)
    world.blooio.fail_next("create_webhook", CreateOutcomeUnknown("reset"))
    world.apply(default_spec(url="https://x.example.com/h"), name="third")
    await world.run(name="third")
    await world.run(name="third", attempt=1)

    # a third, stalled on missing credentials; then everything deleted
    world.apply(default_spec(credentialsRef={"name": "missing"}), name="nokey")
    await world.run(name="nokey")
    for name in ("orders", "tenant-hook", "third"):
        await world.run(deletion.finalize, name=name, action="delete")


async def test_no_secret_or_key_outside_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    world.pool.by_key[TENANT_KEY] = world.blooio
    caplog.set_level(logging.DEBUG)
    await _exercise_every_path(world)

    secrets = [*world.blooio.issued_secrets, API_KEY, TENANT_KEY]
    assert len(world.blooio.issued_secrets) >= 6
    # Not vacuous: the Secret does hold a signing secret.
    stored = json.dumps(world.kube.secret_data(NAMESPACE, "tenant-hook-blooio-webhook"))
    assert any(s in stored for s in world.blooio.issued_secrets)

    places = {
        "events": json.dumps(world.events.events),
        "status patches": json.dumps(world.kube.status_patches),
        "stored status": json.dumps(
            [obj.get("status") for obj in world.kube.objects.values()], default=str
        ),
        "errors": json.dumps([[str(e), repr(e), getattr(e, "message", "")] for e in world.errors]),
        "logs": json.dumps([r.getMessage() for r in caplog.records]),
        "annotations": json.dumps(
            [obj["metadata"].get("annotations") for obj in world.kube.objects.values()]
        ),
    }
    assert world.errors, "the scenario should have produced failures"
    for where, text in places.items():
        leaked = [s[:10] + "..." for s in secrets if s in text]
        assert not leaked, f"secret material in {where}: {leaked}"


async def test_every_event_reason_is_in_the_one_vocabulary() -> None:
    world = World()
    world.pool.by_key[TENANT_KEY] = world.blooio
    await _exercise_every_path(world)
    assert len(set(world.events.reasons())) >= 10
    assert set(world.events.reasons()) <= reasons.EVENT_REASONS
