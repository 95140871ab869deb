"""The shipped CRD against a real kube-apiserver: validation, defaults, printer
columns, `kubectl explain`, status subresource and pruning, RBAC, and ownerReference
garbage collection of the Secret."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "blooio.com", "v1alpha1", "blooiowebhooks"
URL = "https://orders.shop.example.com/blooio"


def bwh(name: str = "orders", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BlooioWebhook",
        "metadata": {"name": name},
        "spec": {"url": URL, **spec},
    }


def create(api: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    return obj


def rejection(api: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> str:
    """Create `body`, expect the apiserver to refuse it, return its message."""
    with pytest.raises(k8s.ApiException) as info:
        create(api, namespace, body)
    assert info.value.status in (400, 422), info.value.body
    message: str = json.loads(info.value.body)["message"]
    return message


def test_crd_is_established(crd: str, kube_api: k8s.ApiClient) -> None:
    obj = k8s.ApiextensionsV1Api(kube_api).read_custom_resource_definition(crd)
    conds = {c.type: c.status for c in obj.status.conditions}
    assert conds["Established"] == "True"
    assert conds["NamesAccepted"] == "True"
    assert obj.status.accepted_names.short_names == ["bwh"]
    assert obj.status.accepted_names.categories == ["blooio"]


def test_valid_resource_gets_schema_defaults(
    crd: str, kube_api: k8s.ApiClient, namespace: str
) -> None:
    obj = create(kube_api, namespace, bwh())
    assert obj["spec"] == {
        "url": URL,
        "eventTypes": ["*"],
        "suspend": False,
        "deletionPolicy": "Delete",
    }
    full = create(
        kube_api,
        namespace,
        bwh(
            "full",
            eventTypes=["message.received", "poll.*", "*", "all"],
            channelId="ch_a1b2c3d4",
            channelType="whatsapp_business",
            credentialsRef={"name": "blooio-api-key"},
            secret={
                "name": "full-secret",
                "labels": {"app": "orders"},
                "annotations": {"secret.reloader.stakater.com/match": "true"},
            },
            suspend=True,
            deletionPolicy="Orphan",
        ),
    )
    assert full["spec"]["credentialsRef"] == {"name": "blooio-api-key", "key": "api-key"}
    assert full["spec"]["eventTypes"] == ["message.received", "poll.*", "*", "all"]
    assert full["spec"]["deletionPolicy"] == "Orphan"


def _without(field: str) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        body["spec"].pop(field)

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(body: dict[str, Any]) -> None:
        node = body
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    return edit


INVALID = [
    pytest.param(
        _set("spec.url", "http://orders.shop.example.com/"), ["spec.url", "https://"], id="http-url"
    ),
    pytest.param(_without("url"), ["spec.url", "Required value"], id="missing-url"),
    pytest.param(
        _set("spec.url", "https://e.com/" + "a" * 3000), ["spec.url", "2048"], id="overlong-url"
    ),
    pytest.param(
        _set("spec.url", "https:///only/a/path"), ["spec.url", "host"], id="url-without-host"
    ),
    pytest.param(
        _set("spec.eventTypes", ["Message.."]), ["spec.eventTypes[0]"], id="token-Message.."
    ),
    pytest.param(
        _set("spec.eventTypes", ["message.received", "message."]),
        ["spec.eventTypes[1]"],
        id="token-message.",
    ),
    pytest.param(
        _set("spec.eventTypes", ["poll.*", "poll.*"]),
        ["spec.eventTypes[1]", "Duplicate"],
        id="duplicate-tokens",
    ),
    pytest.param(_set("spec.eventTypes", []), ["spec.eventTypes"], id="empty-event-types"),
    pytest.param(
        _set("spec.eventTypes", "message.received"),
        ["spec.eventTypes", "array"],
        id="event-types-string",
    ),
    pytest.param(
        _set("spec.channelType", "amb"),
        ["spec.channelType", "Unsupported value"],
        id="channel-type",
    ),
    pytest.param(_set("spec.channelId", "chan_1"), ["spec.channelId"], id="channel-id"),
    pytest.param(_set("spec.bogus", 1), ['unknown field "spec.bogus"'], id="unknown-spec-field"),
    pytest.param(_set("spec.suspend", "yes"), ["spec.suspend", "boolean"], id="suspend-string"),
    pytest.param(
        _set("spec.deletionPolicy", "Destroy"),
        ["spec.deletionPolicy", "Unsupported value"],
        id="deletion-policy",
    ),
    pytest.param(_set("spec.secret.name", "Orders_Secret"), ["spec.secret.name"], id="secret-name"),
    pytest.param(
        _set("spec.secret.labels", {"a": 1}), ["spec.secret.labels.a"], id="secret-label-type"
    ),
    pytest.param(
        _set("spec.credentialsRef", {"key": "k"}),
        ["spec.credentialsRef.name", "Required value"],
        id="credentials-without-name",
    ),
    pytest.param(lambda body: body.pop("spec"), ["spec", "Required value"], id="no-spec"),
]


@pytest.mark.parametrize(("edit", "expected"), INVALID)
def test_invalid_resource_is_rejected_naming_the_field(
    crd: str,
    kube_api: k8s.ApiClient,
    namespace: str,
    edit: Callable[[dict[str, Any]], None],
    expected: list[str],
) -> None:
    body = bwh()
    edit(body)
    message = rejection(kube_api, namespace, body)
    for part in expected:
        assert part in message, message
    assert not k8s.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]


def test_kubectl_apply_rejects_unknown_fields(crd: str, kubectl: Any, namespace: str) -> None:
    body = bwh()
    body["spec"]["evenTypes"] = ["message.received"]  # a typo that must not pass silently
    out = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert out.returncode != 0
    assert 'unknown field "spec.evenTypes"' in out.stderr


def test_update_is_validated_too(crd: str, kube_api: k8s.ApiClient, namespace: str) -> None:
    create(kube_api, namespace, bwh())
    api = k8s.CustomObjectsApi(kube_api)
    with pytest.raises(k8s.ApiException) as info:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "orders", {"spec": {"url": "http://x.example.com"}}
        )
    assert info.value.status == 422
    assert "spec.url" in json.loads(info.value.body)["message"]


def ready_status() -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "webhookId": "wh_abc123",
        "remoteStatus": "active",
        "secretName": "orders-blooio-webhook",
        "createdAt": "2026-01-01T00:00:00Z",
        "lastSyncedAt": "2026-01-01T00:00:01Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Synced",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:01Z",
                "observedGeneration": 1,
            },
            {
                "type": "Reconciling",
                "status": "False",
                "reason": "Synced",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:01Z",
                "observedGeneration": 1,
            },
        ],
        "kopf": {"progress": {"some-handler": {"retries": 1}}},
    }


def test_status_subresource_prunes_all_but_kopf(
    crd: str, kube_api: k8s.ApiClient, namespace: str
) -> None:
    api = k8s.CustomObjectsApi(kube_api)
    create(kube_api, namespace, bwh())
    status = ready_status()
    status["notInSchema"] = "dropped"
    obj = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "orders", {"status": status}
    )
    assert "notInSchema" not in obj["status"]
    assert obj["status"]["kopf"] == {"progress": {"some-handler": {"retries": 1}}}
    assert obj["status"]["webhookId"] == "wh_abc123"
    # spec changes through /status are ignored; status changes through the main
    # resource are ignored: the operator's writes cannot touch spec.
    obj = api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "orders", {"spec": {"suspend": True}}
    )
    assert obj["spec"]["suspend"] is False
    assert obj["metadata"]["generation"] == 1


def test_status_is_validated(crd: str, kube_api: k8s.ApiClient, namespace: str) -> None:
    api = k8s.CustomObjectsApi(kube_api)
    create(kube_api, namespace, bwh())
    bad = ready_status()
    bad["conditions"][0]["status"] = "Yes"
    with pytest.raises(k8s.ApiException) as info:
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "orders", {"status": bad}
        )
    assert "status.conditions[0].status" in json.loads(info.value.body)["message"]


def test_printer_columns(crd: str, kube_api: k8s.ApiClient, kubectl: Any, namespace: str) -> None:
    create(kube_api, namespace, bwh())
    k8s.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "orders", {"status": ready_status()}
    )
    out = kubectl("get", "bwh", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "WEBHOOK", "URL", "READY", "REMOTE", "SECRET", "AGE"]
    assert out[1].split()[:6] == [
        "orders",
        "wh_abc123",
        URL,
        "True",
        "active",
        "orders-blooio-webhook",
    ]
    wide = kubectl("get", "blooio", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert "REASON" in wide[0].split()
    assert "Synced" in wide[1].split()


def test_kubectl_explain_teaches(crd: str, kubectl: Any) -> None:
    def explain() -> str | None:
        out = kubectl("explain", "bwh.spec.url", check=False)
        return out.stdout if out.returncode == 0 and "https://" in out.stdout else None

    # The OpenAPI document of a new CRD is published asynchronously.
    text = wait_for(explain, timeout=60, interval=0.5, message="kubectl explain bwh.spec.url")
    assert "HTTPS endpoint" in text
    assert "2048" in text
    policy = kubectl("explain", "blooiowebhook.spec.deletionPolicy").stdout
    assert "Orphan" in policy
    assert "Disable" in policy


def test_rbac_secret_create_needs_a_role(
    kube_api: k8s.ApiClient, namespace: str, sa_api_client: Any
) -> None:
    sa = f"sa-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(sa_api_client(namespace, sa))
    secret = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s1"), string_data={"k": "v"})
    with pytest.raises(k8s.ApiException) as info:
        core.create_namespaced_secret(namespace, secret)
    assert info.value.status == 403

    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="secret-writer"),
            rules=[k8s.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["create"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="secret-writer"),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="secret-writer"
            ),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=sa, namespace=namespace)],
        ),
    )

    # The RBAC authorizer sees new bindings through an informer: wait, don't sleep.
    def created() -> bool:
        core.create_namespaced_secret(namespace, secret)
        return True

    wait_for(created, timeout=30, message="secret create allowed by the Role")
    # Create only: still no read.
    with pytest.raises(k8s.ApiException) as info:
        core.read_namespaced_secret("s1", namespace)
    assert info.value.status == 403


def test_owned_secret_is_garbage_collected(
    crd: str, kube_api: k8s.ApiClient, namespace: str
) -> None:
    owner = create(kube_api, namespace, bwh())
    core = k8s.CoreV1Api(kube_api)
    owner_ref = k8s.V1OwnerReference(
        api_version=f"{GROUP}/{VERSION}",
        kind="BlooioWebhook",
        name=owner["metadata"]["name"],
        uid=owner["metadata"]["uid"],
        controller=True,
        block_owner_deletion=True,
    )
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="orders-blooio-webhook", owner_references=[owner_ref]),
            string_data={"signing-secret": "whsec_x"},
        ),
    )
    # An unowned neighbour must survive.
    core.create_namespaced_secret(
        namespace,
        k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="bystander"), string_data={"a": "b"}),
    )
    k8s.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "orders"
    )

    def gone() -> bool:
        try:
            core.read_namespaced_secret("orders-blooio-webhook", namespace)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    # The GC notices a new CRD's resource on its periodic discovery resync (~30 s).
    wait_for(gone, timeout=120, interval=0.5, message="owned Secret garbage-collected")
    assert core.read_namespaced_secret("bystander", namespace).metadata.name == "bystander"


def test_long_names_need_an_explicit_secret_name(
    crd: str, kube_api: k8s.ApiClient, namespace: str
) -> None:
    """The default Secret name, "<name>-blooio-webhook", must fit in 253 characters."""
    longest_ok = "a" * 238
    create(kube_api, namespace, bwh(longest_ok))
    too_long = "b" * 239
    message = rejection(kube_api, namespace, bwh(too_long))
    assert "spec.secret" in message
    assert "set spec.secret.name" in message
    create(kube_api, namespace, bwh(too_long, secret={"name": "short"}))
