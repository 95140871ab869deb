"""Creating a webhook: one POST, Secret before status, failures classified and recorded,
and crash/lost-response recovery that never creates a duplicate."""

from __future__ import annotations

import time

import pytest

from blooio_operator.blooio import (
    ApiConnectionError,
    ApiTimeout,
    BadRequest,
    CreateOutcomeUnknown,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationFailed,
)
from blooio_operator.kube import KubeError
from blooio_operator.models import reasons
from blooio_operator.reconcile import lifecycle
from blooio_operator.reconcile.errors import (
    CredentialsFailure,
    PermanentFailure,
    TransientFailure,
)
from tests.unit.fakes import (
    EVENT_TYPES,
    NAMESPACE,
    UID,
    URL,
    SimulatedCrash,
    World,
    default_spec,
)


@pytest.fixture
def world() -> World:
    return World()


def assert_converged(world: World) -> str:
    """Exactly one webhook at Blooio, recorded in status, its current secret in the Secret."""
    assert len(world.blooio.hooks) == 1, f"duplicates at Blooio: {list(world.blooio.hooks)}"
    (webhook_id,) = world.blooio.hooks
    status = world.status()
    assert status["webhookId"] == webhook_id
    assert "pending" not in status
    secret = world.secret()
    assert secret is not None
    assert secret["signing-secret"] == world.blooio.secret_of(webhook_id)
    assert secret["webhook-id"] == webhook_id
    assert world.condition("Ready") is not None
    assert world.condition("Ready")["status"] == "True"
    return webhook_id


# --- the happy path --------------------------------------------------------------------


async def test_create_posts_once_and_records_everything(world: World) -> None:
    world.apply()
    await world.reconcile()

    assert [c.method for c in world.blooio.calls] == ["create_webhook"]
    assert world.blooio.calls[0].wire == {"url": URL, "event_types": EVENT_TYPES}
    webhook_id = assert_converged(world)

    status = world.status()
    assert status["applied"] == {"url": URL, "eventTypes": EVENT_TYPES}
    assert status["secretName"] == "orders-blooio-webhook"
    assert status["remoteStatus"] == "active"
    assert status["observedGeneration"] == 1
    assert status["createdAt"].endswith("Z")
    assert status["lastSyncedAt"].endswith("Z")
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["reason"] == reasons.SYNCED
    assert conds["Reconciling"]["status"] == "False"
    assert conds["Stalled"]["status"] == "False"

    secret = world.secret()
    assert secret == {
        "signing-secret": world.blooio.secret_of(webhook_id),
        "webhook-id": webhook_id,
        "webhook-url": URL,
    }
    stored = world.kube.secrets[(NAMESPACE, "orders-blooio-webhook")]
    assert stored.owner_refs[0]["uid"] == UID
    assert stored.owner_refs[0]["controller"] is True
    assert stored.labels[reasons.LABEL_MANAGED_BY] == reasons.MANAGED_BY
    assert stored.labels[reasons.LABEL_WEBHOOK] == "orders"

    assert world.events.events == [
        ("Normal", reasons.CREATED, f"Created webhook {webhook_id} for {URL}.")
    ]


async def test_intent_before_post_and_secret_before_status(world: World) -> None:
    world.apply()
    await world.reconcile()
    journal = world.journal
    intent = journal.find(lambda e: e.op == "patch_status" and "pending" in e.detail)
    post = journal.find(lambda e: e.op == "create_webhook")
    secret = journal.find(lambda e: e.op == "write_secret")
    recorded = journal.find(lambda e: e.op == "patch_status" and "webhookId" in e.detail)
    assert intent < post < secret < recorded
    # The write recording the webhook id is the one clearing the intent: never both/neither.
    assert journal[recorded].detail["pending"] is None
    assert journal[intent].detail["pending"]["url"] == URL


async def test_create_sends_channel_and_default_event_types(world: World) -> None:
    world.apply({"url": URL, "channelId": "ch_a1b2c3d4", "channelType": "blooio"})
    await world.reconcile()
    assert world.blooio.calls[0].wire == {
        "url": URL,
        "event_types": ["*"],
        "channel_id": "ch_a1b2c3d4",
        "channel_type": "blooio",
    }
    assert world.status()["applied"]["channelId"] == "ch_a1b2c3d4"


async def test_named_secret_gets_template_labels_and_annotations(world: World) -> None:
    world.apply(
        default_spec(
            secret={
                "name": "custom-secret",
                "labels": {"team": "shop"},
                "annotations": {"reloader.stakater.com/match": "true"},
            }
        )
    )
    await world.reconcile()
    stored = world.kube.secrets[(NAMESPACE, "custom-secret")]
    assert stored.labels["team"] == "shop"
    assert stored.annotations == {
        "reloader.stakater.com/match": "true",
        "blooio.com/owner-uid": UID,  # ours, also under deletionPolicy Orphan
    }
    assert world.status()["secretName"] == "custom-secret"
    assert world.secret() is None  # nothing under the default name


async def test_second_reconcile_is_settled_zero_calls_zero_writes(world: World) -> None:
    world.apply()
    await world.reconcile()
    assert lifecycle.is_settled(world.ctx())
    world.reset_counters()
    await world.reconcile()
    assert world.blooio.calls == []
    assert world.kube.writes == []
    assert world.pool.keys == []  # settled before even resolving the credentials
    assert world.events.events == []


# --- failures --------------------------------------------------------------------------


async def test_validation_failure_is_permanent_and_reported(world: World) -> None:
    world.apply()
    world.blooio.fail_next(
        "create_webhook",
        ValidationFailed(code="invalid_event_type", message="message.bogus is not an event type"),
    )
    err = await world.run()

    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.VALIDATION_FAILED
    assert "message.bogus is not an event type" in err.message
    status = world.status()
    assert "pending" not in status  # Blooio answered: nothing was created
    assert "webhookId" not in status
    stalled = world.condition("Stalled")
    assert stalled is not None
    assert stalled["status"] == "True"
    assert stalled["reason"] == reasons.VALIDATION_FAILED
    assert "message.bogus is not an event type" in stalled["message"]
    assert world.condition("Ready")["status"] == "False"
    assert world.condition("Reconciling")["status"] == "False"
    assert status["observedGeneration"] == 1
    assert world.events.of(reasons.VALIDATION_FAILED) == [
        ("Warning", reasons.VALIDATION_FAILED, err.message)
    ]
    assert world.secret() is None
    assert world.blooio.hooks == {}


async def test_validation_failure_waits_for_a_spec_change(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", ValidationFailed(message="bad url"))
    await world.run()
    assert lifecycle.is_waiting_for_human(world.ctx())
    world.edit_spec(url="https://fixed.example.com/hook")
    assert not lifecycle.is_waiting_for_human(world.ctx())
    await world.reconcile()
    assert world.blooio.count("create_webhook") == 2
    assert world.blooio.count("list_webhooks") == 0  # the intent was cleared: no recovery
    assert_converged(world)
    assert world.condition("Stalled")["status"] == "False"


async def test_bad_request_is_permanent(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", BadRequest(message="malformed body"))
    err = await world.run()
    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.BAD_REQUEST
    assert "malformed body" in err.message
    assert world.condition("Stalled")["reason"] == reasons.BAD_REQUEST
    assert "pending" not in world.status()


async def test_unauthorized_is_credentials_invalid_with_slow_retry(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", Unauthorized(message="Invalid API key"))
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_INVALID
    assert err.delay == world.settings.credentials_retry_seconds
    assert world.condition("Stalled")["reason"] == reasons.CREDENTIALS_INVALID
    assert world.events.reasons("Warning") == [reasons.CREDENTIALS_INVALID]
    assert "pending" not in world.status()
    assert not lifecycle.is_waiting_for_human(world.ctx())  # retried: a fixed key is picked up
    await world.reconcile()
    assert_converged(world)


async def test_missing_key_is_credentials_missing_without_calling_blooio() -> None:
    world = World(api_key=None)
    world.apply()
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_MISSING
    assert err.delay == world.settings.credentials_retry_seconds
    stalled = world.condition("Stalled")
    assert stalled is not None
    assert stalled["status"] == "True"
    assert stalled["reason"] == reasons.CREDENTIALS_MISSING
    assert world.events.reasons("Warning") == [reasons.CREDENTIALS_MISSING]
    assert world.blooio.calls == []
    assert world.pool.keys == []


async def test_missing_credentials_ref_secret_is_credentials_missing(world: World) -> None:
    world.apply(default_spec(credentialsRef={"name": "nope", "key": "api-key"}))
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_MISSING
    assert "nope" in err.message
    assert world.blooio.calls == []


@pytest.mark.parametrize(
    "exc",
    [
        ServerError(503, message="unavailable", retry_after=4.0),
        RateLimited(message="slow down", retry_after=4.0),
    ],
    ids=["5xx", "429"],
)
async def test_transient_errors_retry_within_retry_after_and_cap(world: World, exc) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", exc)
    err = await world.run(attempt=3)
    assert isinstance(err, TransientFailure)
    assert 4.0 <= err.delay <= world.settings.transient_retry_cap_seconds
    reconciling = world.condition("Reconciling")
    assert reconciling is not None
    assert reconciling["status"] == "True"
    assert world.condition("Stalled")["status"] == "False"
    assert world.condition("Ready")["status"] == "False"


async def test_5xx_on_create_keeps_the_intent_and_lists_before_posting_again(
    world: World,
) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", ServerError(500, message="internal"))
    await world.run()
    assert world.status()["pending"]["operation"] == "create"  # 5xx may have committed
    await world.reconcile(attempt=1)
    assert [c.method for c in world.blooio.calls] == [
        "create_webhook",
        "list_webhooks",
        "create_webhook",
    ]
    assert_converged(world)


async def test_429_on_create_clears_the_intent(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", RateLimited(message="slow", retry_after=1.0))
    await world.run()
    assert "pending" not in world.status()  # a 429 means nothing was created


@pytest.mark.parametrize(
    "exc",
    [ApiTimeout("read timed out"), ApiConnectionError("connection refused")],
    ids=["timeout", "connection"],
)
async def test_timeouts_and_connection_errors_are_transient(world: World, exc) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", exc)
    err = await world.run(attempt=2)
    assert isinstance(err, TransientFailure)
    assert err.reason == reasons.REMOTE_ERROR
    assert 0.0 <= err.delay <= world.settings.transient_retry_cap_seconds
    assert world.condition("Reconciling")["status"] == "True"
    # The episode's first failure posts one Warning (whatever kopf's retry count says:
    # the status showed no failure yet) ...
    assert world.events.reasons("Warning") == ["RemoteError"]
    shown = world.condition("Reconciling")
    world.reset_counters()
    # ... and a retry that fails the same way posts nothing and writes nothing.
    world.blooio.fail_next("create_webhook", exc)
    await world.run(attempt=3)
    assert world.events.reasons("Warning") == []
    assert world.condition("Reconciling") == shown
    assert world.kube.status_patches == [] or all(
        "conditions" not in p for p in world.kube.status_patches
    )


async def test_first_transient_failure_posts_a_warning(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", ServerError(502, message="bad gateway"))
    err = await world.run(attempt=0)
    assert world.events.events == [("Warning", reasons.REMOTE_ERROR, err.message)]


async def test_status_write_failure_in_record_failure_keeps_the_original_error(
    world: World,
) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", ValidationFailed(message="bad"))
    ctx = world.ctx()
    with pytest.raises(ValidationFailed) as info:
        await lifecycle.reconcile(ctx)
    world.kube.fail_next("patch_status", KubeError(500, "Internal", "patch status"))
    err = await lifecycle.record_failure(ctx, info.value, action="create")
    assert isinstance(err, PermanentFailure)


# --- lost responses: CreateOutcomeUnknown --------------------------------------------


async def test_outcome_unknown_keeps_pending_and_recovery_adopts_the_one_match(
    world: World,
) -> None:
    world.apply()
    world.blooio.commit_then_fail()
    err = await world.run()

    assert isinstance(err, TransientFailure)
    assert err.reason == reasons.OUTCOME_UNKNOWN
    assert err.delay >= world.settings.recovery_delay_seconds
    assert world.status()["pending"]["operation"] == "create"
    assert world.condition("Reconciling")["reason"] == reasons.OUTCOME_UNKNOWN
    assert world.secret() is None
    (webhook_id,) = world.blooio.hooks
    lost_secret = world.blooio.secret_of(webhook_id)

    world.blooio.reset_calls()
    world.events.clear()
    await world.reconcile(attempt=1)

    assert [c.method for c in world.blooio.calls] == ["list_webhooks", "rotate_secret"]
    assert world.blooio.calls[1].webhook_id == webhook_id
    assert assert_converged(world) == webhook_id
    assert world.secret()["signing-secret"] != lost_secret
    assert world.events.reasons() == [reasons.RECOVERED]


async def test_outcome_unknown_that_did_not_commit_creates_after_listing(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", CreateOutcomeUnknown("connection reset"))
    await world.run()
    assert world.blooio.hooks == {}
    world.blooio.reset_calls()
    await world.reconcile(attempt=1)
    assert [c.method for c in world.blooio.calls] == ["list_webhooks", "create_webhook"]
    assert_converged(world)
    assert reasons.CREATED in world.events.reasons()


async def test_recovery_patches_a_match_to_the_current_spec(world: World) -> None:
    world.apply()
    world.blooio.commit_then_fail()
    await world.run()
    world.edit_spec(eventTypes=["message.received"])  # edited while the outcome was unknown
    world.blooio.reset_calls()
    await world.reconcile(attempt=1)
    # Rotated and recorded first, then patched: a failure in between leaves a webhook
    # that still matches the intent (storm finding F1a).
    assert [c.method for c in world.blooio.calls] == [
        "list_webhooks",
        "rotate_secret",
        "update_webhook",
    ]
    assert world.blooio.calls[2].wire == {"event_types": ["message.received"]}
    webhook_id = assert_converged(world)
    assert world.blooio.hooks[webhook_id].event_types == ["message.received"]


async def test_ambiguous_recovery_stalls_and_names_the_adopt_annotation(world: World) -> None:
    world.apply()
    world.blooio.commit_then_fail()
    await world.run()
    twin = world.blooio.seed()  # e.g. a second create that also went through
    first = next(i for i in world.blooio.hooks if i != twin.id)

    world.blooio.reset_calls()
    world.events.clear()
    err = await world.run(attempt=1)

    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.AMBIGUOUS_RECOVERY
    assert reasons.ANNOTATION_ADOPT in err.message
    assert first in err.message
    assert twin.id in err.message
    assert [c.method for c in world.blooio.calls] == ["list_webhooks"]  # no POST, no rotate
    stalled = world.condition("Stalled")
    assert stalled is not None
    assert stalled["reason"] == reasons.AMBIGUOUS_RECOVERY
    assert reasons.ANNOTATION_ADOPT in stalled["message"]
    assert world.events.reasons("Warning") == [reasons.AMBIGUOUS_RECOVERY]
    assert lifecycle.is_waiting_for_human(world.ctx())

    # The human picks one: adopted without another POST.
    world.set_annotation(reasons.ANNOTATION_ADOPT, first)
    assert not lifecycle.is_waiting_for_human(world.ctx())
    world.blooio.reset_calls()
    world.events.clear()
    await world.reconcile()
    assert world.blooio.count("create_webhook") == 0
    assert world.status()["webhookId"] == first
    assert world.status()["adoptedWebhookId"] == first
    assert "pending" not in world.status()
    assert world.secret()["signing-secret"] == world.blooio.secret_of(first)
    assert reasons.ADOPTED in world.events.reasons()
    assert lifecycle.is_settled(world.ctx())


async def test_recovery_ignores_old_webhooks_with_the_same_url(world: World) -> None:
    old = world.blooio.seed(created_at=int((time.time() - 86400) * 1000))
    world.apply()
    world.blooio.fail_next("create_webhook", CreateOutcomeUnknown("reset"))
    await world.run()
    await world.reconcile(attempt=1)
    assert world.status()["webhookId"] != old.id
    assert world.blooio.count("create_webhook") == 2
    assert world.blooio.count("rotate_secret") == 0


async def test_recovery_ignores_webhooks_claimed_by_other_resources(world: World) -> None:
    world.apply()
    world.blooio.fail_next("create_webhook", CreateOutcomeUnknown("reset"))
    await world.run()
    theirs = world.blooio.seed()  # another BlooioWebhook with the same url owns this one
    await world.reconcile(attempt=1, claimed_ids={theirs.id})
    assert world.status()["webhookId"] != theirs.id
    assert world.blooio.count("rotate_secret") == 0
    assert theirs.id in world.blooio.hooks


# --- crashes -------------------------------------------------------------------------------


async def test_crash_after_secret_recovers_without_rotating(world: World) -> None:
    world.apply()
    world.crash_at("after-secret")
    with pytest.raises(SimulatedCrash):
        await world.run()
    world.no_crash()
    status = world.status()
    assert "webhookId" not in status
    assert status["pending"]["operation"] == "create"
    (webhook_id,) = world.blooio.hooks
    assert world.secret()["webhook-id"] == webhook_id
    written = world.secret()["signing-secret"]

    world.reset_counters()
    await world.reconcile()
    assert [c.method for c in world.blooio.calls] == ["list_webhooks"]
    assert assert_converged(world) == webhook_id
    assert world.secret()["signing-secret"] == written
    # The first look waits until the interrupted create can no longer commit (its
    # condition recorded), then recovery records the webhook and Ready.
    assert [e.op for e in world.kube.writes] == ["patch_status"] * 3
    assert world.errors[-1].reason == reasons.SETTLING


@pytest.mark.parametrize(
    "points",
    [
        ["before-create"],
        ["after-create"],
        ["after-secret"],
        ["after-create", "after-rotate"],
        ["after-create", "after-secret"],
        ["before-create", "after-create", "after-secret"],
    ],
    ids="+".join,
)
async def test_crash_at_any_step_converges_without_duplicates(
    world: World, points: list[str]
) -> None:
    world.apply()
    for point in points:
        world.crash_at(point)
        with pytest.raises(SimulatedCrash):
            await world.run(attempt=1)
    world.no_crash()
    await world.reconcile(attempt=1)
    assert_converged(world)
    world.reset_counters()
    await world.reconcile()
    assert world.blooio.calls == []
    assert world.kube.writes == []


async def test_crash_after_lost_response_then_recovery_crash_still_converges(
    world: World,
) -> None:
    world.apply()
    world.blooio.commit_then_fail()
    await world.run()
    world.crash_at("after-rotate")
    with pytest.raises(SimulatedCrash):
        await world.run(attempt=1)
    world.no_crash()
    await world.reconcile(attempt=2)
    assert_converged(world)
    assert world.blooio.count("create_webhook") == 1
    assert world.blooio.count("rotate_secret") == 2


# --- Kubernetes failing after Blooio committed -----------------------------------------


async def test_secret_write_failure_after_create_does_not_duplicate(world: World) -> None:
    world.apply()
    world.kube.fail_next("write_secret", KubeError(500, "InternalError", "create Secret"))
    err = await world.run()
    assert isinstance(err, TransientFailure)
    assert world.status().get("pending") or world.status().get("webhookId")
    await world.reconcile(attempt=1)
    assert_converged(world)
    assert world.blooio.count("create_webhook") == 1


async def test_status_write_failure_after_create_does_not_duplicate(world: World) -> None:
    world.apply()
    # The intent write succeeds; the write recording the webhook id fails twice (also the
    # one record_failure makes), so only the intent and the Secret are persisted.
    ctx = world.ctx()
    original = world.kube.patch_status
    calls = 0

    async def flaky(namespace: str, name: str, status: dict) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KubeError(500, "InternalError", "patch status")
        await original(namespace, name, status)

    world.kube.patch_status = flaky
    with pytest.raises(KubeError) as info:
        await lifecycle.reconcile(ctx)
    await lifecycle.record_failure(ctx, info.value, action="create")
    world.kube.patch_status = original
    assert world.status()["pending"]
    await world.reconcile(attempt=1)
    assert_converged(world)
    assert world.blooio.count("create_webhook") == 1
    assert world.blooio.count("rotate_secret") == 0  # recovered from the Secret


# --- the Secret belongs to someone else --------------------------------------------------


async def test_foreign_secret_is_a_conflict_before_any_blooio_call(world: World) -> None:
    world.kube.put_secret(
        NAMESPACE, "orders-blooio-webhook", {"signing-secret": "theirs"}, owner_uid="someone"
    )
    world.apply()
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.SECRET_CONFLICT
    assert "orders-blooio-webhook" in err.message
    assert world.blooio.calls == []
    assert world.secret() == {"signing-secret": "theirs"}
    assert "pending" not in world.status()
    assert world.condition("Stalled")["reason"] == reasons.SECRET_CONFLICT
    assert world.events.reasons("Warning") == [reasons.SECRET_CONFLICT]


async def test_unowned_secret_is_also_a_conflict(world: World) -> None:
    world.kube.put_secret(NAMESPACE, "orders-blooio-webhook", {"x": "y"})
    world.apply()
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.SECRET_CONFLICT
    assert world.blooio.calls == []
