"""Tenancy and secret hygiene (issue 12): claimed webhooks, label values that fit, Orphan
Secrets without ownerReference, Kubernetes 422 on our writes, transport error text, reprs."""

from __future__ import annotations

import traceback

import httpx
import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from blooio_operator.blooio import BlooioClient, RetryPolicy
from blooio_operator.blooio.errors import BlooioError
from blooio_operator.kube.client import OWNER_UID_ANNOTATION, KubeInvalid, SecretView, _convert
from blooio_operator.models import reasons
from blooio_operator.reconcile import deletion, periodic
from blooio_operator.reconcile.errors import (
    CredentialsFailure,
    PermanentFailure,
    TransientFailure,
    classify,
)
from blooio_operator.reconcile.secrets import label_value
from tests.unit.fakes import NAMESPACE, UID, World, default_spec, make_settings

SECRET = "orders-blooio-webhook"
HEADER_BYTES = "c2VjcmV0LWJ5dGVzLWZyb20tYS10bHMta2V5"


@pytest.fixture
def world() -> World:
    return World()


# --- one resource per webhook ----------------------------------------------------------------


async def test_adopting_a_claimed_webhook_is_refused_before_any_call(world: World) -> None:
    theirs = await world.ready(name="theirs")
    world.apply(
        default_spec(url="https://mine.example.com/h"),
        annotations={reasons.ANNOTATION_ADOPT: theirs},
    )
    err = await world.run(claimed_ids=[theirs])
    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.ADOPTION_FAILED
    assert "held by another" in err.message
    assert world.blooio.calls == []
    assert world.blooio.hooks[theirs].url != "https://mine.example.com/h"
    assert "webhookId" not in world.status()
    assert world.secret() is None


async def test_the_adopter_of_a_doubly_held_webhook_yields(world: World) -> None:
    webhook_id = await world.ready()
    status = world.status()
    status["adoptedWebhookId"] = webhook_id
    world.apply(status=status)
    # Another resource records the same id: no call at all, neither PATCH nor rotate.
    world.blooio.hooks[webhook_id].url = "https://theirs.example.com/h"
    err = await world.run(periodic.periodic_check, claimed_ids=[webhook_id], action="periodic")
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.WEBHOOK_CLAIMED
    assert world.blooio.calls == []
    assert world.blooio.hooks[webhook_id].url == "https://theirs.example.com/h"


async def test_the_creator_of_a_doubly_held_webhook_carries_on(world: World) -> None:
    webhook_id = await world.ready()
    await world.ctx(claimed_ids=[webhook_id]).blooio()  # not adopted by us: no refusal


async def test_finalize_never_touches_a_webhook_another_resource_holds(world: World) -> None:
    webhook_id = await world.ready()
    world.pool.keys.clear()
    assert await world.run(deletion.finalize, claimed_ids=[webhook_id], action="delete") is None
    assert world.blooio.calls == []
    assert world.pool.keys == []
    assert webhook_id in world.blooio.hooks
    assert world.events.reasons() == [reasons.DELETED]
    assert "held by another" in world.events.events[0][2]


# --- labels that fit ---------------------------------------------------------------------------


def test_label_values_always_fit() -> None:
    short = "orders"
    assert label_value(short) == short
    assert label_value("a" * 63) == "a" * 63
    long_a = "team-" + "x" * 60 + "-a"
    long_b = "team-" + "x" * 60 + "-b"
    for name in (long_a, long_b, "a" * 238, "ab-" * 30 + "c"):
        value = label_value(name)
        assert len(value) <= 63
        assert value[0].isalnum()
        assert value[-1].isalnum()
    assert label_value(long_a) != label_value(long_b)
    assert label_value(long_a) == label_value(long_a)


async def test_a_long_name_gets_a_label_that_fits(world: World) -> None:
    name = "n" * 70
    world.apply(name=name)
    await world.reconcile(name=name)
    stored = world.kube.secrets[(NAMESPACE, f"{name}-blooio-webhook")]
    assert len(stored.labels[reasons.LABEL_WEBHOOK]) <= 63


# --- Orphan: no ownerReference ----------------------------------------------------------------


async def test_orphan_secrets_carry_no_owner_reference_and_stay_ours(world: World) -> None:
    await world.ready(default_spec(deletionPolicy="Orphan"))
    stored = world.kube.secrets[(NAMESPACE, SECRET)]
    assert stored.owner_refs == []
    assert stored.annotations[OWNER_UID_ANNOTATION] == UID
    # Still recognised as ours: restored, not a SecretConflict.
    stored.data.clear()
    await world.reconcile(attempt=1)
    world.edit_spec(deletionPolicy="Delete")
    await world.reconcile()
    assert [r["uid"] for r in world.kube.secrets[(NAMESPACE, SECRET)].owner_refs] == [UID]
    world.edit_spec(deletionPolicy="Orphan")
    await world.reconcile()
    assert world.kube.secrets[(NAMESPACE, SECRET)].owner_refs == []


async def test_an_older_orphan_secret_with_an_owner_reference_is_released(world: World) -> None:
    await world.ready(default_spec(deletionPolicy="Orphan"))
    stored = world.kube.secrets[(NAMESPACE, SECRET)]
    stored.owner_refs = [{"uid": UID, "controller": True}]  # as an earlier version wrote it
    assert await world.run(deletion.finalize, action="delete") is None
    assert [e.op for e in world.kube.writes] == ["release_secret"]
    assert stored.owner_refs == []


# --- Kubernetes 422 on our own writes -------------------------------------------------------------


def test_a_kubernetes_422_is_permanent_and_says_why() -> None:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = (
        '{"kind":"Status","message":"Secret \\"x\\" is invalid: metadata.labels: Invalid '
        'value: \\"whsec_do_not_show\\": must be no more than 63 characters"}'
    )
    converted = _convert(exc, "create Secret shop/x", ("whsec_do_not_show",))
    assert isinstance(converted, KubeInvalid)
    err = classify(converted, settings=make_settings(), attempt=0, action="create")
    assert isinstance(err, PermanentFailure)
    assert err.reason == reasons.WRITE_REJECTED
    assert "metadata.labels" in err.message
    assert "63 characters" in err.message
    assert "whsec_do_not_show" not in err.message


async def test_a_422_on_the_secret_write_is_stalled_not_retried(world: World) -> None:
    world.apply()
    world.kube.fail_next(
        "write_secret", KubeInvalid(422, "Unprocessable Entity", "create Secret", "too long")
    )
    err = await world.run()
    assert isinstance(err, PermanentFailure)
    assert world.condition("Stalled")["reason"] == reasons.WRITE_REJECTED
    assert world.status()["pending"]  # the intent stays: a fixed spec recovers, no duplicate
    await world.reconcile(attempt=1)
    assert world.blooio.count("create_webhook") == 1


# --- transport errors never quote our headers ---------------------------------------------------


async def test_a_local_protocol_error_keeps_its_text_out_of_messages() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"Illegal header value b'Bearer {HEADER_BYTES}\\n'")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = BlooioClient(
            http,
            SecretStr("bk_any_key_000000"),
            base_url="https://api.example.com/v4",
            retry=RetryPolicy(max_retries=0),
        )
        with pytest.raises(BlooioError) as info:
            await client.get_webhook("wh_1")
    err = info.value
    text = str(err) + repr(err) + "".join(traceback.format_exception(err))
    assert HEADER_BYTES not in text
    assert "LocalProtocolError" in str(err)
    reconciled = classify(err, settings=make_settings(), attempt=0, action="read")
    assert isinstance(reconciled, TransientFailure)
    assert HEADER_BYTES not in reconciled.message


async def test_a_connect_error_keeps_its_useful_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = BlooioClient(
            http,
            SecretStr("bk_any_key_000000"),
            base_url="https://api.example.com/v4",
            retry=RetryPolicy(max_retries=0),
        )
        with pytest.raises(BlooioError) as info:
            await client.get_webhook("wh_1")
    assert "Connection refused" in str(info.value)


# --- reprs ---------------------------------------------------------------------------------


async def test_reprs_hold_no_secret_bytes(world: World) -> None:
    view = SecretView(
        name="s",
        data={"signing-secret": b"whsec_super_secret_value"},
        owner_uids=frozenset(),
        controller_uid=None,
        labels={},
        annotations={},
        resource_version="1",
    )
    assert "whsec_super_secret_value" not in repr(view)
    await world.ready()
    ctx = world.ctx()
    ctx.secret_view = await world.kube.read_secret(NAMESPACE, SECRET)
    secret = world.secret()
    assert secret is not None
    assert secret["signing-secret"] not in repr(ctx)
    assert "bk_test_default_key" not in repr(ctx)
