from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s

from tests.chaos.invariants import remote_for, wait_converged
from tests.helpers import wait_for
from tests.integration.conftest import OperatorFactory, Simulator
from tests.integration.webhooks import Webhooks

URL = "https://orders.shop.example.com/blooio"


@pytest.fixture
def hooks(kube_api: k8s.ApiClient, namespace: str) -> Webhooks:
    return Webhooks(kube_api, namespace)


@pytest.mark.parametrize("seconds", [4.5, 6, 10])
def test_long_hang(seconds, hooks, simulator, start_operator):
    simulator.admin.add_fault("hang", endpoint="POST /webhooks", seconds=seconds, count=1)
    start_operator()
    hooks.create("orders", {"url": URL})
    hooks.wait_ready("orders", timeout=40)
    deadline = time.monotonic() + seconds + 2
    while time.monotonic() < deadline:
        time.sleep(0.5)
    print("remote", [w["id"] for w in remote_for(simulator, URL)], "posts", simulator.count("POST /webhooks"))
    wait_converged(hooks, simulator, "orders", URL, timeout=10)


def test_drift_recreate_races_edit(hooks, simulator, start_operator):
    op = start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})
    wid = wait_converged(hooks, simulator, "orders", URL)["webhookId"]
    simulator.admin.add_fault("latency", endpoint="POST /webhooks", ms=3000, count=1)
    simulator.admin.remove(wid)
    # wait until the timer's POST is in flight
    wait_for(lambda: any(c["status"] is None for c in simulator.calls("POST /webhooks")), timeout=20)
    hooks.patch("orders", {"spec": {"eventTypes": ["message.received", "poll.*"]}})
    wait_for(lambda: simulator.count("POST /webhooks") >= 2 and all(c["status"] for c in simulator.calls("POST /webhooks")), timeout=20)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        time.sleep(0.5)
    print("remote", [(w["id"], w["event_types"]) for w in remote_for(simulator, URL)], "posts", simulator.count("POST /webhooks"))
    print(hooks.status("orders"))
    wait_converged(hooks, simulator, "orders", URL, timeout=10)
