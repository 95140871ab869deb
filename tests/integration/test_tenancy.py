"""Tenancy and secret hygiene (issue 12), black-box on the real control plane.

One operator process for the whole module, run as the shipped Deployment runs it
(``--all-namespaces``) and authenticated as the ServiceAccount bound by the shipped
ClusterRole (deploy/manifests/rbac.yaml, trimmed), with one simulator. The default key
is allowed only in the two "team" namespaces; a third namespace is not allowed it.

What each test proves, as a tenant sees it: a second namespace cannot adopt or recover
into a webhook another resource holds, nor keep fighting over one; a namespace without
the default key gets a clear Stalled and nothing at Blooio; a credentialsRef to a PEM
key never shows its bytes; deleting a namespace whose resource uses credentialsRef
completes and deletes the webhook; a foreground delete under Orphan keeps the Secret; a
70-character name becomes Ready; a Kubernetes 422 on our write is a clear Stalled; the
CRD rejects bad label keys and userinfo in urls; the removed RBAC verbs are denied.
"""

from __future__ import annotations

import base64
import json
import secrets as pysecrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.helpers import FAST_OPERATOR_ENV, wait_for
from tests.integration.conftest import (
    API_KEY,
    KubectlFn,
    OperatorProcess,
    Simulator,
)
from tests.integration.webhooks import GROUP, PLURAL, VERSION, Webhooks

pytestmark = pytest.mark.integration

OTHER_KEY = "bl_test_other_key_abcdefghijkl"
CREDENTIALS_LABEL = {"blooio.com/credentials": "true"}
FINALIZER = "blooio.com/credentials-in-use"
ADOPT = "blooio.com/adopt-webhook-id"


class Tenants:
    """The module's namespaces: two teams allowed the default key, one not."""

    def __init__(self, prefix: str) -> None:
        self.a = f"{prefix}-a"
        self.b = f"{prefix}-b"
        self.locked = f"{prefix}-locked"
        self.all = [self.a, self.b, self.locked]


@pytest.fixture(scope="module")
def tenants(kube_api: k8s.ApiClient) -> Iterator[Tenants]:
    t = Tenants(f"tn-{uuid.uuid4().hex[:6]}")
    core = k8s.CoreV1Api(kube_api)
    for ns in t.all:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
    yield t
    for ns in t.all:
        try:
            core.delete_namespace(ns)
        except k8s.ApiException:
            pass


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    s = Simulator(tmp_path_factory.mktemp("tenancy-sim"), [API_KEY, OTHER_KEY])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def operator(
    operator_kubeconfig: Path,
    sim: Simulator,
    tenants: Tenants,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    env = {
        **FAST_OPERATOR_ENV,
        "BLOOIO_API_URL": sim.url,
        "BLOOIO_API_KEY": API_KEY,
        # The teams' namespaces, and the ones tests create under "<prefix>-x-*".
        "BLOOIO_DEFAULT_KEY_NAMESPACES": f"{tenants.a},{tenants.b},{tenants.a[:-2]}-x-*",
    }
    log = tmp_path_factory.mktemp("tenancy-operator") / "operator.log"
    op = OperatorProcess(operator_kubeconfig, log, env, ["--all-namespaces"]).start()
    yield op
    op.stop()
    print(f"--- operator log (tail) ---\n{op.logs()[-8000:]}")


@pytest.fixture
def hooks_a(kube_api: k8s.ApiClient, tenants: Tenants, operator: OperatorProcess) -> Webhooks:
    return Webhooks(kube_api, tenants.a)


@pytest.fixture
def hooks_b(kube_api: k8s.ApiClient, tenants: Tenants, operator: OperatorProcess) -> Webhooks:
    return Webhooks(kube_api, tenants.b)


def url(tag: str) -> str:
    return f"https://{tag}.tenancy.example.com/blooio"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def remote_calls(sim: Simulator, webhook_id: str, since: float = 0.0) -> list[str]:
    """Changing calls on one webhook (PATCH, rotate, DELETE) after ``since`` (simulator ts)."""
    return [
        c["endpoint"]
        for c in sim.calls()
        if webhook_id in c.get("path", "") and c.get("method") != "GET" and c.get("ts", 0) >= since
    ]


def wait_drift_checks(sim: Simulator, n: int) -> None:
    """Wait until the per-key drift list ran ``n`` more times (3 s apart here)."""
    start = sim.count("GET /webhooks")
    wait_for(lambda: sim.count("GET /webhooks") >= start + n, timeout=30, message="drift checks")


def put_secret(
    kube_api: k8s.ApiClient, ns: str, name: str, data: dict[str, str], labels: dict[str, str]
) -> None:
    k8s.CoreV1Api(kube_api).create_namespaced_secret(
        ns, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name, labels=labels), string_data=data)
    )


# --- 1. no cross-namespace hijack ----------------------------------------------------------


def test_second_namespace_cannot_adopt_a_held_webhook(
    hooks_a: Webhooks, hooks_b: Webhooks, sim: Simulator
) -> None:
    victim, thief = unique("victim"), unique("thief")
    hooks_a.create(victim, {"url": url(victim)})
    wid = hooks_a.wait_ready(victim)["webhookId"]
    secret_before = hooks_a.secret_data(f"{victim}-blooio-webhook")["signing-secret"]
    posts = sim.count("POST /webhooks")

    hooks_b.create(thief, {"url": url(thief)}, annotations={ADOPT: wid})
    cond = hooks_b.wait_condition(thief, "Stalled", "True", reason="AdoptionFailed")
    assert wid in cond["message"]
    assert "held by another" in cond["message"]
    hooks_b.wait_event(thief, "AdoptionFailed")

    remote = sim.webhook(wid)
    assert remote is not None
    assert remote["url"] == url(victim)
    assert remote["signing_secret"] == secret_before
    assert remote_calls(sim, wid) == [], "nothing may be called on the victim's webhook"
    assert sim.count("POST /webhooks") == posts
    assert "webhookId" not in hooks_b.status(thief)
    assert hooks_b.secret(f"{thief}-blooio-webhook") is None
    assert hooks_a.wait_ready(victim)["webhookId"] == wid


def test_recovery_never_matches_a_webhook_another_resource_holds(
    hooks_a: Webhooks, hooks_b: Webhooks, sim: Simulator
) -> None:
    original, twin = unique("orig"), unique("twin")
    shared = url(original)
    hooks_a.create(original, {"url": shared})
    wid = hooks_a.wait_ready(original)["webhookId"]
    secret_before = hooks_a.secret_data(f"{original}-blooio-webhook")["signing-secret"]

    # The twin's POST is never answered and never processed: its outcome is unknown, so
    # it lists webhooks to recover. The only one matching its url is the original's.
    sim.admin.add_fault("hang", endpoint="POST /webhooks", count=1)
    hooks_b.create(twin, {"url": shared})
    status = hooks_b.wait_ready(twin, timeout=60)

    assert status["webhookId"] != wid
    assert "Recovered" not in hooks_b.event_reasons(twin)
    remote = sim.webhook(wid)
    assert remote is not None
    assert remote["signing_secret"] == secret_before
    assert remote_calls(sim, wid) == []
    assert hooks_a.secret_data(f"{original}-blooio-webhook")["signing-secret"] == secret_before
    twin_remote = sim.webhook(status["webhookId"])
    assert twin_remote is not None
    assert (
        hooks_b.secret_data(f"{twin}-blooio-webhook")["signing-secret"]
        == (twin_remote["signing_secret"])
    )


def test_a_webhook_held_twice_is_not_fought_over_nor_deleted_by_the_adopter(
    hooks_a: Webhooks, hooks_b: Webhooks, sim: Simulator, kube_api: k8s.ApiClient
) -> None:
    """A double hold left from before the adoption check: the adopter yields."""
    victim, thief = unique("victim"), unique("thief")
    hooks_a.create(victim, {"url": url(victim)})
    wid = hooks_a.wait_ready(victim)["webhookId"]
    hooks_b.create(thief, {"url": url(thief)})
    thief_status = hooks_b.wait_ready(thief)
    own = thief_status["webhookId"]
    # What the unchecked adoption used to record (the thief's own webhook aside).
    k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        hooks_b.ns,
        PLURAL,
        thief,
        {"status": {"webhookId": wid, "adoptedWebhookId": wid}},
    )
    started = time.time()
    hooks_b.wait_condition(thief, "Stalled", "True", reason="WebhookClaimed", timeout=30)
    # Several drift checks later the victim's webhook was never PATCHed to the thief's url.
    wait_drift_checks(sim, 2)
    remote = sim.webhook(wid)
    assert remote is not None
    assert remote["url"] == url(victim)
    assert "PATCH /webhooks/{id}" not in remote_calls(sim, wid, since=started)

    # Deleting the adopter (deletionPolicy Delete) leaves the victim's webhook alone.
    hooks_b.delete(thief)
    wait_for(lambda: hooks_b.get(thief) is None, timeout=30, message="thief deleted")
    assert sim.webhook(wid) is not None
    assert "DELETE /webhooks/{id}" not in remote_calls(sim, wid)
    assert own  # the thief's own webhook is a leftover of this setup, not under test
    assert hooks_a.wait_ready(victim)["webhookId"] == wid


# --- 1b. the default key is not for every namespace ----------------------------------------


def test_namespace_not_allowed_the_default_key_is_stalled_and_sends_nothing(
    kube_api: k8s.ApiClient, tenants: Tenants, sim: Simulator, operator: OperatorProcess
) -> None:
    hooks = Webhooks(kube_api, tenants.locked)
    name = unique("all-events")
    hooks.create(name, {"url": url(name), "eventTypes": ["*"]})
    cond = hooks.wait_condition(name, "Stalled", "True", reason="CredentialsNotAllowed")
    assert tenants.locked in cond["message"]
    assert "credentialsRef" in cond["message"]
    hooks.wait_event(name, "CredentialsNotAllowed")
    assert not [w for w in sim.webhooks() if w["url"] == url(name)]
    assert not [c for c in sim.calls() if url(name) in json.dumps(c)]

    # Its own key (an opted-in Secret) is the way out.
    put_secret(kube_api, tenants.locked, "own-key", {"api-key": OTHER_KEY}, CREDENTIALS_LABEL)
    hooks.patch(name, {"spec": {"credentialsRef": {"name": "own-key"}}})
    hooks.wait_ready(name)


# --- 2. no confused deputy ------------------------------------------------------------------


def pem_key() -> tuple[str, list[str]]:
    """A PEM-shaped private key, and distinct substrings of it to grep for."""
    body = base64.b64encode(pysecrets.token_bytes(600)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"
    probes = [lines[0][:24], lines[1][10:34], lines[len(lines) // 2][:24], lines[-2][-24:]]
    # ... and as the API server holds it (Secret data is base64 of the whole PEM).
    encoded = base64.b64encode(pem.encode()).decode()
    probes += [encoded[40:64], encoded[400:424]]
    return pem, probes


def test_credentials_ref_to_a_pem_key_never_shows_its_bytes(
    hooks_a: Webhooks, kube_api: k8s.ApiClient, operator: OperatorProcess, sim: Simulator
) -> None:
    pem, probes = pem_key()
    ns = hooks_a.ns
    # Opted in (so the operator goes as far as it ever would), and not opted in.
    put_secret(kube_api, ns, "tls-labelled", {"tls.key": pem}, CREDENTIALS_LABEL)
    put_secret(kube_api, ns, "tls-plain", {"tls.key": pem, "api-key": API_KEY}, {})
    labelled, plain, plain_key = unique("pem"), unique("pem-plain"), unique("unlabelled")
    hooks_a.create(
        labelled,
        {"url": url(labelled), "credentialsRef": {"name": "tls-labelled", "key": "tls.key"}},
    )
    hooks_a.create(
        plain, {"url": url(plain), "credentialsRef": {"name": "tls-plain", "key": "tls.key"}}
    )
    # A perfectly good key in a Secret that did not opt in is not used either.
    hooks_a.create(plain_key, {"url": url(plain_key), "credentialsRef": {"name": "tls-plain"}})

    cond = hooks_a.wait_condition(labelled, "Stalled", "True", reason="CredentialsInvalid")
    assert "not an API key" in cond["message"]
    hooks_a.wait_event(labelled, "CredentialsInvalid")
    for name in (plain, plain_key):
        hooks_a.wait_condition(name, "Stalled", "True", reason="CredentialsMissing")
        hooks_a.wait_event(name, "CredentialsMissing")
    # Let the slow retries (3 s here) come round at least once.
    wait_for(lambda: operator.logs().count("tls-labelled") >= 2, timeout=20, message="a retry")

    seen = [json.dumps(hooks_a.get(n)) for n in (labelled, plain, plain_key)] + [
        f"{e.reason} {e.message}" for e in hooks_a.events()
    ]
    seen.append(operator.logs())
    seen.append(json.dumps(sim.calls()))
    everything = "\n".join(seen)
    for probe in probes:
        assert probe not in everything, "PEM bytes leaked"
    assert "BEGIN PRIVATE KEY" not in everything
    assert not [
        w for w in sim.webhooks() if w["url"] in (url(labelled), url(plain), url(plain_key))
    ]
    # Nothing was put on Secrets that never became credentials.
    for name in ("tls-labelled", "tls-plain"):
        secret = hooks_a.secret(name)
        assert secret is not None
        assert FINALIZER not in (secret.metadata.finalizers or [])


# --- 3. deleting a whole namespace completes ----------------------------------------------


def test_deleting_a_namespace_with_credentials_ref_completes_and_deletes_the_webhook(
    kube_api: k8s.ApiClient,
    kubectl: KubectlFn,
    tenants: Tenants,
    sim: Simulator,
    operator: OperatorProcess,
) -> None:
    ns = f"{tenants.a[:-2]}-x-{uuid.uuid4().hex[:4]}"
    core = k8s.CoreV1Api(kube_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
    put_secret(kube_api, ns, "blooio-key", {"api-key": OTHER_KEY}, CREDENTIALS_LABEL)
    hooks = Webhooks(kube_api, ns)
    hooks.create("orders", {"url": url(ns), "credentialsRef": {"name": "blooio-key"}})
    hooks.create("audit", {"url": url(f"{ns}-audit"), "credentialsRef": {"name": "blooio-key"}})
    ids = [hooks.wait_ready(n)["webhookId"] for n in ("orders", "audit")]
    wait_for(
        lambda: (
            FINALIZER in ((hooks.secret("blooio-key") or k8s.V1Secret()).metadata.finalizers or [])
        ),
        timeout=20,
        message="credentials Secret protected",
    )

    # The operator finds a Secret's users by field selector (the CRD's selectableFields).
    users = k8s.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, field_selector="spec.credentialsRef.name=blooio-key"
    )
    assert sorted(i["metadata"]["name"] for i in users["items"]) == ["audit", "orders"]

    kubectl("delete", "namespace", ns, "--wait=false")

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except k8s.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=90, interval=0.5, message=f"namespace {ns} deleted")
    for wid in ids:
        assert sim.webhook(wid) is None, f"{wid} left at Blooio"


# --- 4. Orphan under foreground deletion ------------------------------------------------


def test_foreground_delete_with_orphan_keeps_the_secret(
    hooks_a: Webhooks, kubectl: KubectlFn, sim: Simulator
) -> None:
    name = unique("keep")
    hooks_a.create(name, {"url": url(name), "deletionPolicy": "Orphan"})
    wid = hooks_a.wait_ready(name)["webhookId"]
    secret_name = f"{name}-blooio-webhook"
    data = hooks_a.secret_data(secret_name)
    secret = hooks_a.secret(secret_name)
    assert secret is not None
    assert not secret.metadata.owner_references

    kubectl("-n", hooks_a.ns, "delete", "bwh", name, "--cascade=foreground", "--wait=false")
    wait_for(lambda: hooks_a.get(name) is None, timeout=30, message=f"{name} deleted")
    assert hooks_a.secret_data(secret_name) == data
    assert sim.webhook(wid) is not None
    hooks_a.wait_event(name, "Orphaned")


# --- 5. long names, and Kubernetes 422s on our writes --------------------------------------


def test_a_70_character_name_becomes_ready(hooks_a: Webhooks) -> None:
    name = ("long-" + uuid.uuid4().hex * 3)[:70]
    assert len(name) == 70
    hooks_a.create(name, {"url": url(name[:30])})
    status = hooks_a.wait_ready(name)
    secret = hooks_a.secret(status["secretName"])
    assert secret is not None
    value = secret.metadata.labels["blooio.com/webhook"]
    assert len(value) <= 63
    assert name.startswith(value[:40])


def test_a_kubernetes_422_on_the_secret_is_a_clear_stall_without_retries(
    hooks_a: Webhooks, sim: Simulator
) -> None:
    name = unique("huge")
    # A single value over 4096 bytes is refused by the CRD (issue 19: every free-form value
    # is bounded) ...
    with pytest.raises(k8s.ApiException) as refused:
        hooks_a.create(name, {"url": url(name), "secret": {"annotations": {"n": "x" * 300_000}}})
    assert refused.value.status == 422
    # ... but 64 values of 4096 bytes pass it, and a Secret may hold at most 256 KiB of
    # annotations, keys included.
    notes = {f"note-{i:02d}": "x" * 4096 for i in range(64)}
    hooks_a.create(name, {"url": url(name), "secret": {"annotations": notes}})
    cond = hooks_a.wait_condition(name, "Stalled", "True", reason="WriteRejected")
    assert "422" in cond["message"]
    assert "annotations" in cond["message"]
    hooks_a.wait_event(name, "WriteRejected")
    rotations = sim.count("POST /webhooks/{id}/secret/rotate")
    wait_drift_checks(sim, 1)
    assert sim.count("POST /webhooks/{id}/secret/rotate") == rotations, "no retry loop"

    hooks_a.patch(
        name, {"spec": {"secret": {"annotations": dict.fromkeys(notes) | {"note": "short"}}}}
    )
    status = hooks_a.wait_ready(name)
    remote = sim.webhook(status["webhookId"])
    assert remote is not None
    assert (
        hooks_a.secret_data(f"{name}-blooio-webhook")["signing-secret"]
        == (remote["signing_secret"])
    )
    assert len([w for w in sim.webhooks() if w["url"] == url(name)]) == 1


# --- 6. the CRD refuses what would fail later or spread secrets --------------------------


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"url": "https://user:pass@example.com/hook"}, "credentials"),
        ({"url": "https://x.example.com/h", "secret": {"labels": {"bad key!": "v"}}}, "label key"),
        ({"url": "https://x.example.com/h", "secret": {"labels": {"k": "not ok!"}}}, "labels"),
        ({"url": "https://x.example.com/h", "secret": {"labels": {"k": "v" * 64}}}, "labels"),
        (
            {"url": "https://x.example.com/h", "secret": {"annotations": {"a/b/c": "v"}}},
            "annotation key",
        ),
    ],
    ids=["userinfo", "label-key", "label-value", "label-length", "annotation-key"],
)
def test_crd_rejects(
    kube_api: k8s.ApiClient, tenants: Tenants, crd: str, spec: dict[str, Any], needle: str
) -> None:
    with pytest.raises(k8s.ApiException) as info:
        Webhooks(kube_api, tenants.b).create(unique("bad"), spec)
    assert info.value.status == 422
    assert needle in str(info.value.body)


def test_crd_accepts_valid_label_and_annotation_keys(
    kube_api: k8s.ApiClient, tenants: Tenants, crd: str
) -> None:
    hooks = Webhooks(kube_api, tenants.b)
    name = unique("ok")
    spec = {
        "url": "https://x.example.com/h",
        "secret": {
            "labels": {"app.kubernetes.io/part-of": "shop", "team": "a_b.c-d"},
            "annotations": {"reloader.stakater.com/match": "true", "note": "any text: ok!"},
        },
    }
    hooks.create(name, spec)
    hooks.delete(name)


# --- 7. least privilege -------------------------------------------------------------------


def test_the_trimmed_role_denies_the_removed_verbs(
    operator_kubeconfig: Path, hooks_a: Webhooks
) -> None:
    """As the operator's own ServiceAccount (the tests above ran under this role)."""
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=str(operator_kubeconfig))
    ns = hooks_a.ns
    name = unique("rbac")
    hooks_a.create(name, {"url": url(name)})
    status = hooks_a.wait_ready(name)
    core = k8s.CoreV1Api(api)
    custom = k8s.CustomObjectsApi(api)
    args = (GROUP, VERSION, ns, PLURAL)

    def status_of(call: Any) -> int:
        try:
            call()
        except k8s.ApiException as exc:
            return int(exc.status)
        return 200

    secret = core.read_namespaced_secret(status["secretName"], ns)  # allowed: get
    obj = custom.get_namespaced_custom_object(*args, name)
    assert (
        status_of(lambda: core.replace_namespaced_secret(secret.metadata.name, ns, secret)) == 403
    )
    assert status_of(lambda: custom.replace_namespaced_custom_object(*args, name, obj)) == 403
    assert (
        status_of(lambda: custom.replace_namespaced_custom_object_status(*args, name, obj)) == 403
    )
    assert status_of(lambda: core.list_namespace()) == 403
    assert status_of(lambda: core.list_namespaced_secret(ns)) == 403
    assert status_of(lambda: core.patch_namespaced_event("x", ns, {})) == 403
    event = k8s.EventsV1Event(
        metadata=k8s.V1ObjectMeta(name=unique("ev")),
        event_time=datetime.now(UTC),
        reporting_controller="x/y",
        reporting_instance="x",
        action="A",
        reason="R",
        type="Normal",
    )
    assert status_of(lambda: k8s.EventsV1Api(api).create_namespaced_event(ns, event)) == 403


def test_a_credentials_secret_no_longer_referred_to_is_released(
    hooks_a: Webhooks, kube_api: k8s.ApiClient
) -> None:
    ns = hooks_a.ns
    first, second, name = unique("key-one"), unique("key-two"), unique("switch")
    put_secret(kube_api, ns, first, {"api-key": OTHER_KEY}, CREDENTIALS_LABEL)
    put_secret(kube_api, ns, second, {"api-key": OTHER_KEY}, CREDENTIALS_LABEL)
    hooks_a.create(name, {"url": url(name), "credentialsRef": {"name": first}})
    hooks_a.wait_ready(name)

    def finalizers(secret: str) -> list[str]:
        obj = hooks_a.secret(secret)
        return list((obj.metadata.finalizers or []) if obj is not None else [])

    wait_for(lambda: FINALIZER in finalizers(first), timeout=20, message="first protected")
    hooks_a.patch(name, {"spec": {"credentialsRef": {"name": second}}})
    wait_for(lambda: FINALIZER in finalizers(second), timeout=30, message="second protected")
    wait_for(lambda: FINALIZER not in finalizers(first), timeout=30, message="first released")
    hooks_a.delete(name)
    wait_for(lambda: FINALIZER not in finalizers(second), timeout=30, message="second released")
    assert hooks_a.get(name) is None


# --- ownership is not taken from status (issue 19) -----------------------------------------


def test_a_tenant_who_may_write_status_cannot_take_over_another_namespaces_webhook(
    kube_api: k8s.ApiClient,
    sa_api_client: Any,
    tenants: Tenants,
    sim: Simulator,
    hooks_a: Webhooks,
    hooks_b: Webhooks,
) -> None:
    """Found by issue 19: a tenant whose role grants blooiowebhooks/status set its own
    resource's status.webhookId to another namespace's webhook id; the operator rotated
    that webhook's secret into the tenant's Secret and fought over its url."""
    victim = unique("victim")
    hooks_b.create(victim, {"url": url(victim)})
    victim_id = hooks_b.wait_ready(victim)["webhookId"]
    victim_secret = hooks_b.secret_data(f"{victim}-blooio-webhook")["signing-secret"]

    # A namespace-admin-like Role in team a only, with the status subresource.
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    role = unique("bwh-status")
    rbac.create_namespaced_role(
        tenants.a,
        {
            "metadata": {"name": role},
            "rules": [
                {
                    "apiGroups": ["blooio.com"],
                    "resources": ["blooiowebhooks", "blooiowebhooks/status"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                }
            ],
        },
    )
    sa = unique("tenant")
    tenant_api = sa_api_client(tenants.a, sa)
    rbac.create_namespaced_role_binding(
        tenants.a,
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": tenants.a}],
        },
    )
    tenant = k8s.CustomObjectsApi(tenant_api)
    with pytest.raises(k8s.ApiException) as denied:  # team b is not theirs to see
        tenant.get_namespaced_custom_object(GROUP, VERSION, tenants.b, PLURAL, victim)
    assert denied.value.status == 403

    thief = unique("thief")
    wait_for(
        lambda: tenant.create_namespaced_custom_object(
            GROUP,
            VERSION,
            tenants.a,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "BlooioWebhook",
                "metadata": {"name": thief},
                "spec": {"url": url(thief)},
            },
        ),
        timeout=30,
        message="the tenant's RBAC in effect",
    )
    own_id = hooks_a.wait_ready(thief)["webhookId"]
    forged_at = time.time()
    # The forgery, with the tenant's own credentials, through the status subresource; a
    # copy of the victim's seal is no better (it is bound to the victim's uid).
    claim = hooks_b.status(victim)["claim"]
    tenant.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        tenants.a,
        PLURAL,
        thief,
        {"status": {"webhookId": victim_id, "claim": claim}},
    )
    cond = hooks_a.wait_condition(thief, "Stalled", "True", reason="ClaimUnverified", timeout=60)
    assert victim_id in cond["message"]
    wait_drift_checks(sim, 2)  # the sweeps had their chance to act on it
    assert remote_calls(sim, victim_id, since=forged_at) == []
    reads = [
        c for c in sim.calls() if victim_id in c.get("path", "") and c.get("ts", 0) >= forged_at
    ]
    assert reads == [], reads  # not even its deliveries were read
    assert hooks_b.condition(victim, "Ready")["status"] == "True"  # type: ignore[index]
    assert hooks_b.secret_data(f"{victim}-blooio-webhook")["signing-secret"] == victim_secret
    thief_secret = hooks_a.secret_data(f"{thief}-blooio-webhook")
    assert thief_secret.get("webhook-id") == own_id  # never the victim's

    # Adopting the victim's webhook by annotation is refused (the victim holds it) ...
    tenant.patch_namespaced_custom_object(
        GROUP, VERSION, tenants.a, PLURAL, thief, {"metadata": {"annotations": {ADOPT: victim_id}}}
    )
    hooks_a.wait_condition(thief, "Stalled", "True", reason="AdoptionFailed", timeout=60)
    assert remote_calls(sim, victim_id, since=forged_at) == []
    # ... and deleting the tenant's resource leaves the victim's webhook in place.
    tenant.delete_namespaced_custom_object(GROUP, VERSION, tenants.a, PLURAL, thief)
    wait_for(lambda: hooks_a.get(thief) is None, timeout=60, message="thief deleted")
    assert sim.webhook(victim_id) is not None
    assert remote_calls(sim, victim_id, since=forged_at) == []
    assert hooks_b.condition(victim, "Ready")["status"] == "True"  # type: ignore[index]
