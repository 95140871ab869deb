"""The operator's core behaviour against the real control plane and the simulator.

Every test runs the operator as its own process, authenticated as the ServiceAccount
bound by the shipped RBAC (deploy/manifests/rbac.yaml), in a fresh namespace.
"""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from tests.integration.conftest import OperatorFactory, Simulator
from tests.integration.webhooks import Webhooks

pytestmark = pytest.mark.integration
URL = "https://orders.shop.example.com/blooio"


@pytest.fixture
def hooks(kube_api: k8s.ApiClient, namespace: str) -> Webhooks:
    return Webhooks(kube_api, namespace)


def test_create_writes_secret_then_status_and_posts_once(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received", "poll.*"]})
    status = hooks.wait_ready("orders")

    assert status["webhookId"].startswith("wh_")
    assert status["remoteStatus"] == "active"
    assert status["secretName"] == "orders-blooio-webhook"
    assert status["observedGeneration"] == 1
    remote = simulator.webhook(status["webhookId"])
    assert remote is not None
    assert remote["url"] == URL
    data = hooks.secret_data("orders-blooio-webhook")
    assert data["signing-secret"] == remote["signing_secret"]
    assert data["webhook-id"] == status["webhookId"]
    assert data["webhook-url"] == URL
    assert simulator.count("POST /webhooks") == 1
    hooks.wait_event("orders", "Created")
    secret = hooks.secret("orders-blooio-webhook")
    assert secret is not None
    assert secret.type == "Opaque"
    owner = secret.metadata.owner_references[0]
    assert owner.kind == "BlooioWebhook"
    assert owner.name == "orders"


def _quiet(simulator: Simulator, endpoint: str, seconds: float) -> int:
    """The call count for ``endpoint`` after staying unchanged for ``seconds``."""
    import time

    before = simulator.count(endpoint)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert simulator.count(endpoint) == before, f"{endpoint} was called again"
        time.sleep(1)
    return before


def test_edit_url_and_event_types_patches_in_place_keeping_the_secret(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received", "poll.*"]})
    first = hooks.wait_ready("orders")
    secret_before = hooks.secret_data("orders-blooio-webhook")["signing-secret"]

    # Reordering is not a change: eventTypes has set semantics.
    hooks.patch("orders", {"spec": {"eventTypes": ["poll.*", "message.received"]}})
    hooks.wait_ready("orders")
    assert simulator.count("PATCH /webhooks/{id}") == 0

    new_url = "https://orders-v2.shop.example.com/blooio"
    hooks.patch("orders", {"spec": {"url": new_url, "eventTypes": ["message.*"]}})
    status = hooks.wait_ready("orders")
    assert status["observedGeneration"] == 3
    assert status["webhookId"] == first["webhookId"]
    remote = simulator.webhook(status["webhookId"])
    assert remote is not None
    assert remote["url"] == new_url
    assert remote["event_types"] == ["message.*"]
    assert simulator.count("PATCH /webhooks/{id}") == 1
    assert simulator.count("POST /webhooks") == 1
    data = hooks.secret_data("orders-blooio-webhook")
    assert data["signing-secret"] == secret_before == remote["signing_secret"]
    assert data["webhook-url"] == new_url
    hooks.wait_event("orders", "Updated")


def test_channel_change_replaces_the_webhook(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "channelId": "ch_a1b2c3d4", "channelType": "blooio"})
    old = hooks.wait_ready("orders")["webhookId"]
    hooks.patch("orders", {"spec": {"channelId": "ch_e5f6a7b8", "channelType": "whatsapp"}})
    hooks.wait_event("orders", "Replaced")
    status = hooks.wait_ready("orders")
    new = status["webhookId"]
    assert new != old
    ids = [w["id"] for w in simulator.webhooks()]
    assert ids == [new], "the old webhook must be deleted after the switch"
    remote = simulator.webhook(new)
    assert remote is not None
    assert remote["channel_id"] == "ch_e5f6a7b8"
    data = hooks.secret_data("orders-blooio-webhook")
    assert data["signing-secret"] == remote["signing_secret"]
    assert data["webhook-id"] == new
    assert simulator.count("POST /webhooks") == 2
    assert simulator.count("DELETE /webhooks/{id}") == 1


def test_suspend_and_resume(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL})
    wid = hooks.wait_ready("orders")["webhookId"]
    hooks.patch("orders", {"spec": {"suspend": True}})
    hooks.wait_event("orders", "Suspended")
    status = hooks.wait_ready("orders")
    assert status["remoteStatus"] == "disabled"
    assert (simulator.webhook(wid) or {})["status"] == "disabled"
    ready = hooks.condition("orders", "Ready")
    assert ready is not None
    assert ready["reason"] == "Suspended"
    hooks.patch("orders", {"spec": {"suspend": False}})
    hooks.wait_event("orders", "Resumed")
    status = hooks.wait_ready("orders")
    assert status["remoteStatus"] == "active"
    assert (simulator.webhook(wid) or {})["status"] == "active"


def _wait_gone(hooks: Webhooks, name: str, timeout: float = 30) -> None:
    from tests.helpers import wait_for

    wait_for(lambda: hooks.get(name) is None, timeout=timeout, message=f"{name} deleted")


def test_delete_policy_delete_removes_the_webhook_and_secret(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    from tests.helpers import wait_for

    start_operator()
    hooks.create("orders", {"url": URL})
    hooks.wait_ready("orders")
    hooks.delete("orders")
    _wait_gone(hooks, "orders")
    assert simulator.webhooks() == []
    assert simulator.count("DELETE /webhooks/{id}") == 1
    wait_for(
        lambda: hooks.secret("orders-blooio-webhook") is None,
        timeout=30,
        message="Secret garbage-collected",
    )


def test_delete_policy_orphan_keeps_webhook_and_secret(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "deletionPolicy": "Orphan"})
    wid = hooks.wait_ready("orders")["webhookId"]
    hooks.delete("orders")
    _wait_gone(hooks, "orders")
    assert simulator.webhook(wid) is not None
    assert simulator.count("DELETE /webhooks/{id}") == 0
    secret = hooks.secret("orders-blooio-webhook")
    assert secret is not None
    assert not secret.metadata.owner_references
    remote = simulator.webhook(wid)
    assert remote is not None
    assert hooks.secret_data("orders-blooio-webhook")["signing-secret"] == remote["signing_secret"]


def test_delete_policy_disable_keeps_a_disabled_webhook(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "deletionPolicy": "Disable"})
    wid = hooks.wait_ready("orders")["webhookId"]
    hooks.delete("orders")
    _wait_gone(hooks, "orders")
    assert (simulator.webhook(wid) or {})["status"] == "disabled"
    assert simulator.count("DELETE /webhooks/{id}") == 0


def test_skip_remote_delete_releases_a_stuck_finalizer(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory, kube_api: k8s.ApiClient
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL})
    wid = hooks.wait_ready("orders")["webhookId"]
    # Blooio becomes unreachable: every DELETE fails.
    simulator.admin.add_fault("error", status=503, endpoints=["DELETE /webhooks/{id}"])
    hooks.delete("orders")
    hooks.wait_condition("orders", "Reconciling", "True", timeout=30)
    assert hooks.get("orders") is not None
    hooks.patch("orders", {"metadata": {"annotations": {"blooio.com/skip-remote-delete": "true"}}})
    _wait_gone(hooks, "orders")
    assert simulator.webhook(wid) is not None  # left alone, as asked


def test_credentials_missing_then_provided(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    from tests.integration.conftest import API_KEY

    start_operator()
    hooks.create("orders", {"url": URL, "credentialsRef": {"name": "blooio-key"}})
    cond = hooks.wait_condition("orders", "Stalled", "True", reason="CredentialsMissing")
    assert "blooio-key" in cond["message"]
    hooks.wait_event("orders", "CredentialsMissing")
    assert simulator.count("POST /webhooks") == 0
    k8s.CoreV1Api(kube_api).create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            # The label is the Secret's consent to be used as a Blooio key (issue 12).
            metadata=k8s.V1ObjectMeta(name="blooio-key", labels={"blooio.com/credentials": "true"}),
            string_data={"api-key": API_KEY},
        ),
    )
    hooks.wait_ready("orders", timeout=60)
    assert simulator.count("POST /webhooks") == 1


def test_invalid_key_stalls_then_recovers_when_fixed(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    from tests.integration.conftest import API_KEY

    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="blooio-key", labels={"blooio.com/credentials": "true"}),
            string_data={"api-key": "bl_test_wrong_key_000000000"},
        ),
    )
    start_operator()
    hooks.create("orders", {"url": URL, "credentialsRef": {"name": "blooio-key"}})
    cond = hooks.wait_condition("orders", "Stalled", "True", reason="CredentialsInvalid")
    assert "401" in cond["message"]
    assert "bl_test_wrong_key" not in cond["message"]
    hooks.wait_event("orders", "CredentialsInvalid")
    core.patch_namespaced_secret("blooio-key", namespace, {"stringData": {"api-key": API_KEY}})
    hooks.wait_ready("orders", timeout=60)
    assert len(simulator.webhooks()) == 1


def test_refuses_to_overwrite_a_secret_it_does_not_own(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="orders-blooio-webhook"),
            string_data={"mine": "do not touch"},
        ),
    )
    start_operator()
    hooks.create("orders", {"url": URL})
    cond = hooks.wait_condition("orders", "Stalled", "True", reason="SecretConflict")
    assert "orders-blooio-webhook" in cond["message"]
    assert simulator.count("POST /webhooks") == 0
    assert hooks.secret_data("orders-blooio-webhook") == {"mine": "do not touch"}


def test_secret_template_labels_and_annotations(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create(
        "orders",
        {
            "url": URL,
            "secret": {
                "name": "custom-name",
                "labels": {"team": "shop"},
                "annotations": {"reloader.stakater.com/match": "true"},
            },
        },
    )
    status = hooks.wait_ready("orders")
    assert status["secretName"] == "custom-name"
    secret = hooks.secret("custom-name")
    assert secret is not None
    assert secret.metadata.labels["team"] == "shop"
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "blooio-operator"
    assert secret.metadata.annotations["reloader.stakater.com/match"] == "true"


SCHEMA_REJECTS = [
    ("http-url", {"url": "http://x.example.com/h"}, "spec.url"),
    ("missing-url", {}, "spec.url"),
    ("long-url", {"url": "https://x.example.com/" + "a" * 3000}, "spec.url"),
    ("bad-token", {"url": URL, "eventTypes": ["Message.."]}, "spec.eventTypes"),
    ("bad-channel-type", {"url": URL, "channelType": "telegram"}, "spec.channelType"),
    ("bad-policy", {"url": URL, "deletionPolicy": "Keep"}, "spec.deletionPolicy"),
]

BLOOIO_REJECTS = [
    ("unknown-event", {"url": URL, "eventTypes": ["message.bogus"]}, "message.bogus"),
    ("unknown-category", {"url": URL, "eventTypes": ["contact.*"]}, "contact.*"),
    ("unknown-poll-event", {"url": URL, "eventTypes": ["poll.closed"]}, "poll.closed"),
    ("unknown-channel", {"url": URL, "channelId": "ch_doesnotexist"}, "ch_doesnotexist"),
    (
        "channel-type-mismatch",
        {"url": URL, "channelId": "ch_a1b2c3d4", "channelType": "whatsapp"},
        "channel",
    ),
    (
        "unknown-typing-event",
        {"url": URL, "eventTypes": ["message.received", "typing.paused"]},
        "typing.paused",
    ),
]


def test_bad_input_is_rejected_clearly_creates_nothing_and_stays_quiet(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    """12 bad resources: 6 rejected by the CRD schema at apply time, 6 by Blooio (422)."""
    for name, spec, field in SCHEMA_REJECTS:
        with pytest.raises(k8s.ApiException) as err:
            hooks.create(name, spec)
        assert err.value.status == 422, name
        assert field in str(err.value.body), f"{name}: {err.value.body}"

    start_operator()
    for name, spec, _ in BLOOIO_REJECTS:
        hooks.create(name, spec)
    for name, _, needle in BLOOIO_REJECTS:
        cond = hooks.wait_condition(name, "Stalled", "True", reason="ValidationFailed")
        assert needle in cond["message"], f"{name}: {cond['message']}"
        event = hooks.wait_event(name, "ValidationFailed")
        assert event.type == "Warning"
        assert needle in event.message
        ready = hooks.condition(name, "Ready")
        assert ready is not None
        assert ready["status"] == "False"
        assert hooks.secret(f"{name}-blooio-webhook") is None
    assert simulator.webhooks() == []
    posts = _quiet(simulator, "POST /webhooks", 30)
    assert posts <= len(BLOOIO_REJECTS), "at most one attempt per bad resource"


def test_restart_costs_zero_blooio_calls_and_zero_kubernetes_writes(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    import time

    op = start_operator(BLOOIO_DRIFT_INTERVAL_SECONDS="600")
    for i in range(3):
        hooks.create(f"wh{i}", {"url": f"{URL}/{i}"})
    for i in range(3):
        hooks.wait_ready(f"wh{i}")
    op.stop()
    simulator.admin.reset_calls()
    versions = {
        f"wh{i}": (hooks.get(f"wh{i}") or {})["metadata"]["resourceVersion"] for i in range(3)
    }
    secrets = {
        f"wh{i}": hooks.secret(f"wh{i}-blooio-webhook").metadata.resource_version  # type: ignore[union-attr]
        for i in range(3)
    }
    events_before = len(hooks.events())
    op.start(BLOOIO_DRIFT_INTERVAL_SECONDS="600")
    # Long enough for kopf to resume every object and the first periodic check to run.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(1)
        assert op.alive()
    calls = [c for c in simulator.calls() if c["endpoint"] != "GET /webhooks"]
    assert calls == [], f"unexpected Blooio calls after restart: {calls}"
    for i in range(3):
        assert (hooks.get(f"wh{i}") or {})["metadata"]["resourceVersion"] == versions[f"wh{i}"]
        assert hooks.secret(f"wh{i}-blooio-webhook").metadata.resource_version == secrets[f"wh{i}"]  # type: ignore[union-attr]
    assert len(hooks.events()) == events_before


def test_upgrade_from_the_annotation_diff_base_costs_nothing(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    namespace: str,
) -> None:
    """Resources last handled by a build that kept kopf's diff base in an annotation:
    the new operator reads it, sees no change, and neither calls Blooio nor writes."""
    import time

    from tests.helpers import wait_for

    op = start_operator(BLOOIO_DRIFT_INTERVAL_SECONDS="600")
    hooks.create("legacy", {"url": f"{URL}/legacy"}, annotations={"team": "shop"})
    hooks.wait_ready("legacy")
    op.stop()
    essence = hooks.status("legacy")["kopf"]["last-handled-configuration"]
    # What the earlier build left: the annotation (+ kopf's marker), nothing in status.
    hooks.patch(
        "legacy",
        {
            "metadata": {
                "annotations": {
                    "operator.blooio.com/last-handled-configuration": essence + "\n",
                    "operator.blooio.com/kopf-managed": "yes",
                }
            }
        },
    )
    hooks.custom.patch_namespaced_custom_object_status(
        "blooio.com",
        "v1alpha1",
        namespace,
        "blooiowebhooks",
        "legacy",
        {"status": {"kopf": {"last-handled-configuration": None}}},
    )
    assert "last-handled-configuration" not in hooks.status("legacy").get("kopf", {})
    version = (hooks.get("legacy") or {})["metadata"]["resourceVersion"]
    events_before = len(hooks.events())
    simulator.admin.reset_calls()
    op.start(BLOOIO_DRIFT_INTERVAL_SECONDS="600")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        time.sleep(1)
        assert op.alive()
    assert [c for c in simulator.calls() if c["endpoint"] != "GET /webhooks"] == []
    assert (hooks.get("legacy") or {})["metadata"]["resourceVersion"] == version
    assert len(hooks.events()) == events_before
    # An edit afterwards is handled as usual, and its diff base goes to the status.
    hooks.patch("legacy", {"spec": {"url": f"{URL}/legacy-2"}})
    hooks.wait_event("legacy", "Updated")
    # The Event is posted by the handler; the diff base arrives with kopf's final status
    # patch just after it (reading the status at the Event raced it once in CI).
    hooks.wait_ready("legacy")
    wait_for(
        lambda: "last-handled-configuration" in hooks.status("legacy").get("kopf", {}),
        timeout=30,
        message="diff base in status.kopf",
    )
