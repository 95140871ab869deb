"""Issue 11: an operator serving more resources than its concurrency bound keeps working
after a restart, and failures found by the periodic check reach the conditions.

Before the fix, kopf's worker limit (50) and its indexes deadlocked after any restart
with more than 50 resources: the indexers ran for exactly 50 objects, then nothing did.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s

from tests.helpers import wait_for
from tests.integration.conftest import API_KEY, OperatorFactory, Simulator
from tests.integration.webhooks import Webhooks

pytestmark = pytest.mark.integration

N = 120


def url(i: int) -> str:
    return f"https://r{i}.shop.example.com/blooio"


def all_ready(hooks: Webhooks, names: list[str]) -> bool:
    items = hooks.custom.list_namespaced_custom_object(
        "blooio.com", "v1alpha1", hooks.ns, "blooiowebhooks"
    )["items"]
    ready = {
        o["metadata"]["name"]
        for o in items
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (o.get("status") or {}).get("conditions", [])
        )
        and (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
    }
    return set(names) <= ready


def test_restart_with_more_resources_than_workers_handles_new_edited_and_deleted(
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    hooks = Webhooks(kube_api, namespace)
    # A small bound makes the scale of the old deadlock cheap to reach: 120 > 20.
    op = start_operator(BLOOIO_MAX_WORKERS="20", BLOOIO_SECRET_CHECK_INTERVAL_SECONDS="30")
    names = [f"r{i}" for i in range(N)]
    for i, name in enumerate(names):
        hooks.create(name, {"url": url(i)})
    wait_for(lambda: all_ready(hooks, names), timeout=180, message=f"{N} Ready")
    assert len(simulator.webhooks()) == N

    op.restart()
    restarted = time.monotonic()
    hooks.create("fresh", {"url": "https://fresh.shop.example.com/blooio"})
    hooks.patch("r1", {"spec": {"url": "https://edited.shop.example.com/blooio"}})
    gone_id = hooks.status("r2")["webhookId"]
    hooks.delete("r2")

    hooks.wait_ready("fresh", timeout=60)
    hooks.wait_ready("r1", timeout=60)
    wait_for(lambda: hooks.get("r2") is None, timeout=60, message="r2 finalized")
    took = time.monotonic() - restarted
    print(f"new/edited/deleted handled {took:.1f} s after the restart with {N} resources")

    edited = simulator.webhook(hooks.status("r1")["webhookId"])
    assert edited is not None
    assert edited["url"] == "https://edited.shop.example.com/blooio"
    assert simulator.webhook(gone_id) is None
    assert len(simulator.webhooks()) == N  # 120 - 1 deleted + 1 new
    assert simulator.count("POST /webhooks") == N + 1


def test_secret_deleted_while_the_key_is_revoked_is_not_ready(
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    hooks = Webhooks(kube_api, namespace)
    start_operator()
    hooks.create("orders", {"url": url(0)})
    hooks.wait_ready("orders")
    simulator.admin.revoke_api_key(API_KEY)
    hooks.core.delete_namespaced_secret("orders-blooio-webhook", namespace)

    cond = hooks.wait_condition("orders", "Stalled", "True", timeout=60)
    assert cond["reason"] == "CredentialsInvalid"
    assert hooks.condition("orders", "Ready")["status"] == "False"  # type: ignore[index]
    hooks.wait_event("orders", "CredentialsInvalid")

    simulator.admin.add_api_key(API_KEY)  # the key works again: the check's retry heals it
    hooks.wait_ready("orders", timeout=60)
    webhook_id = hooks.status("orders")["webhookId"]
    remote = simulator.webhook(webhook_id)
    assert remote is not None
    assert hooks.secret_data("orders-blooio-webhook")["signing-secret"] == remote["signing_secret"]
