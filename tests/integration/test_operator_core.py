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
