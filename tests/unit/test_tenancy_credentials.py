"""Which key a resource may use (issue 12): opt-in label, key shape, default-key namespaces,
and the credentials Secret's finalizer."""

from __future__ import annotations

import pytest

from blooio_operator.models import reasons
from blooio_operator.reconcile import credentials, deletion
from blooio_operator.reconcile.credentials import default_key_allowed, key_shape_problem
from blooio_operator.reconcile.errors import CredentialsFailure
from tests.unit.fakes import API_KEY, NAMESPACE, FakeBlooio, World, default_spec, make_settings

LABELS = {reasons.LABEL_CREDENTIALS: "true"}
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "-----END PRIVATE KEY-----\n"
)
PEM_PROBES = ("MIIEvQIBADAN", "MzEfYyjiWA4R", "BEGIN PRIVATE", "Bearer")


@pytest.fixture
def world() -> World:
    return World()


# --- the shape of a key --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [PEM.strip(), "short", "has space inside", "tab\tinside_123", "x" * 513, "ключ_12345678"],
    ids=["pem", "short", "space", "tab", "long", "non-ascii"],
)
def test_key_shape_refuses_what_is_no_api_key(value: str) -> None:
    problem = key_shape_problem(value)
    assert problem is not None
    assert value not in problem
    assert not any(p in problem for p in PEM_PROBES[:2])


@pytest.mark.parametrize("value", [API_KEY, "bl_live_" + "a" * 40, "x" * 512, "k-._~+/=12"])
def test_key_shape_accepts_api_keys(value: str) -> None:
    assert key_shape_problem(value) is None


# --- the default key's namespaces -----------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "namespace", "allowed"),
    [
        ("*", "anything", True),
        ("team-*, shop", "shop", True),
        ("team-*, shop", "team-a", True),
        ("team-*, shop", "shopping", False),
        ("", "shop", False),
        (" , ", "shop", False),
    ],
)
def test_default_key_namespaces(patterns: str, namespace: str, allowed: bool) -> None:
    settings = make_settings(default_key_namespaces=patterns)
    assert default_key_allowed(settings, namespace) is allowed


async def test_namespace_not_allowed_the_default_key_is_stalled_before_any_call() -> None:
    world = World(default_key_namespaces="platform-*")
    world.apply()
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_NOT_ALLOWED
    assert NAMESPACE in err.message
    assert "credentialsRef" in err.message
    assert world.pool.keys == []
    assert world.blooio.calls == []
    assert world.condition("Stalled")["reason"] == reasons.CREDENTIALS_NOT_ALLOWED
    assert world.events.reasons("Warning") == [reasons.CREDENTIALS_NOT_ALLOWED]


async def test_shrinking_the_allow_list_never_strands_a_finalizer() -> None:
    world = World()
    webhook_id = await world.ready()
    world.deps.settings = make_settings(default_key_namespaces="")
    body = world.kube.objects[(NAMESPACE, "orders")]
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert await world.run(deletion.finalize, action="delete") is None
    assert webhook_id not in world.blooio.hooks
    # ... but only for the key the webhook was made with: a new resource may not start.
    world.apply(default_spec(url="https://new.example.com/h"), name="fresh")
    err = await world.run(name="fresh")
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_NOT_ALLOWED


async def test_a_malformed_default_key_is_never_sent() -> None:
    world = World(api_key="bk_test key with spaces")
    world.apply()
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_INVALID
    assert "key with spaces" not in err.message
    assert world.pool.keys == []


# --- credentialsRef: consent and shape -----------------------------------------------------


async def test_unlabelled_secret_is_not_used_and_says_the_same_as_missing(world: World) -> None:
    world.kube.put_secret(NAMESPACE, "other-app", {"api-key": "bk_tenant_key_0001"})
    world.apply(default_spec(credentialsRef={"name": "other-app"}))
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_MISSING
    missing = World()
    missing.apply(default_spec(credentialsRef={"name": "other-app"}))
    other = await missing.run()
    assert isinstance(other, CredentialsFailure)
    assert other.message == err.message  # no oracle: exists-but-unlabelled == absent
    assert world.pool.keys == []
    assert [e.op for e in world.kube.writes] == ["patch_status"]  # no finalizer on it


async def test_opt_in_can_be_switched_off() -> None:
    world = World(credentials_require_label=False)
    tenant = FakeBlooio(world.journal, name="tenant")
    world.pool.by_key["bk_tenant_key_0001"] = tenant
    world.kube.put_secret(NAMESPACE, "k", {"api-key": "bk_tenant_key_0001"})
    world.apply(default_spec(credentialsRef={"name": "k"}))
    await world.reconcile()
    assert world.pool.keys[-1] == "bk_tenant_key_0001"


async def test_a_pem_key_is_refused_without_a_byte_of_it_anywhere(world: World) -> None:
    world.kube.put_secret(NAMESPACE, "tls", {"tls.key": PEM}, labels=LABELS)
    world.apply(default_spec(credentialsRef={"name": "tls", "key": "tls.key"}))
    err = await world.run()
    assert isinstance(err, CredentialsFailure)
    assert err.reason == reasons.CREDENTIALS_INVALID
    assert world.pool.keys == []
    assert world.blooio.calls == []
    seen = repr(world.status()) + repr(world.events.events) + err.message + repr(err)
    for probe in PEM_PROBES:
        assert probe not in seen
    assert world.kube.writes[-1].op == "patch_status"
    assert all(e.op != "add_secret_finalizer" for e in world.kube.writes)


async def test_a_usable_credentials_secret_gets_the_finalizer_once(world: World) -> None:
    tenant = FakeBlooio(world.journal, name="tenant")
    world.pool.by_key["bk_tenant_key_0001"] = tenant
    world.kube.put_secret(NAMESPACE, "k", {"api-key": "bk_tenant_key_0001\n"}, labels=LABELS)
    world.apply(default_spec(credentialsRef={"name": "k"}))
    await world.reconcile()
    stored = world.kube.secrets[(NAMESPACE, "k")]
    assert stored.finalizers == [reasons.CREDENTIALS_FINALIZER]
    world.reset_counters()
    await world.ctx().blooio()
    assert world.kube.writes == []  # already there: no write


# --- releasing the finalizer ----------------------------------------------------------------


async def _two_users(world: World) -> None:
    tenant = FakeBlooio(world.journal, name="tenant")
    world.pool.by_key["bk_tenant_key_0001"] = tenant
    world.kube.put_secret(NAMESPACE, "k", {"api-key": "bk_tenant_key_0001"}, labels=LABELS)
    world.apply(default_spec(credentialsRef={"name": "k"}))
    world.apply(default_spec(url="https://b.example.com/h", credentialsRef={"name": "k"}), name="b")
    await world.reconcile()
    await world.reconcile(name="b")


async def test_finalizer_released_only_by_the_last_user(world: World) -> None:
    await _two_users(world)
    stored = world.kube.secrets[(NAMESPACE, "k")]
    assert await world.run(deletion.finalize, action="delete") is None
    assert stored.finalizers == [reasons.CREDENTIALS_FINALIZER]  # "b" still needs it
    del world.kube.objects[(NAMESPACE, "orders")]
    assert await world.run(deletion.finalize, name="b", action="delete") is None
    assert stored.finalizers == []


async def test_release_after_the_objects_are_gone(world: World) -> None:
    """Two finalizers at once each saw the other: the DELETED handler settles it."""
    await _two_users(world)
    assert await world.run(deletion.finalize, action="delete") is None
    assert await world.run(deletion.finalize, name="b", action="delete") is None
    stored = world.kube.secrets[(NAMESPACE, "k")]
    assert stored.finalizers == [reasons.CREDENTIALS_FINALIZER]
    world.kube.objects.clear()
    assert await credentials.release_if_unused(world.kube, NAMESPACE, "k") is True
    assert stored.finalizers == []
    assert await credentials.release_if_unused(world.kube, NAMESPACE, "k") is False


async def test_finalize_works_with_the_key_secret_being_deleted(world: World) -> None:
    tenant = FakeBlooio(world.journal, name="tenant")
    world.pool.by_key["bk_tenant_key_0001"] = tenant
    world.kube.put_secret(NAMESPACE, "k", {"api-key": "bk_tenant_key_0001"}, labels=LABELS)
    world.apply(default_spec(credentialsRef={"name": "k"}))
    await world.reconcile()
    webhook_id = world.status()["webhookId"]
    assert await world.run(deletion.finalize, action="delete") is None
    assert webhook_id not in tenant.hooks
    assert world.kube.secrets[(NAMESPACE, "k")].finalizers == []
