"""Faults that last (issue 18), against the real API server, simulator and operator process.

Each test holds a fault in place for a measured window and counts what a user (and the
API server) would see per resource: Blooio calls, status writes (MODIFIED watch events
of the resource), Events, log lines. Then the fault clears and the resource must
converge without a restart, and handle the next change.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from blooio_operator.devenv.controlplane import ControlPlane
from tests.helpers import wait_for
from tests.integration.conftest import API_KEY, OperatorFactory, Simulator
from tests.integration.webhooks import GROUP, PLURAL, VERSION, Webhooks

URL = "https://orders.shop.example.com/blooio"
DRIFTED = "https://drifted.example.com/blooio"
PATCH = "PATCH /webhooks/{id}"


def url(i: int) -> str:
    return f"https://r{i}.shop.example.com/blooio"


@contextmanager
def modifications(api: k8s.ApiClient, namespace: str) -> Iterator[dict[str, int]]:
    """Count MODIFIED watch events per BlooioWebhook of ``namespace`` (its writes)."""
    counts: dict[str, int] = {}
    stop = threading.Event()
    custom = k8s.CustomObjectsApi(api)
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["metadata"][
        "resourceVersion"
    ]

    def run() -> None:
        w = k8s_watch.Watch()
        for event in w.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            resource_version=rv,
            timeout_seconds=120,
        ):
            if event["type"] == "MODIFIED":
                name = event["object"]["metadata"]["name"]
                counts[name] = counts.get(name, 0) + 1
            if stop.is_set():
                w.stop()
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()


def warnings(hooks: Webhooks, name: str, reason: str) -> int:
    """Warning Events of ``reason`` about ``name``, counting the API's own aggregation."""
    return sum(
        (e.count or 1) for e in hooks.events(name) if e.type == "Warning" and e.reason == reason
    )


def hold(seconds: float) -> None:
    """A measured window: the fault lasts this long while counts accumulate."""
    end = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= end, timeout=seconds + 5, interval=0.5, message="window")


def test_a_lasting_patch_failure_backs_off_with_one_warning_and_no_flips(
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    """Found by issue 18: a drift whose PATCH answers 503 for a minute got 137 PATCHes,
    90 status writes, 89 Ready flips and 45 Warning Events (the sweep retried at attempt
    0 forever, and each retry marked Ready before the correction failed again)."""
    hooks = Webhooks(kube_api, namespace)
    start_operator(BLOOIO_TRANSIENT_RETRY_BASE_SECONDS="2", BLOOIO_TRANSIENT_RETRY_CAP_SECONDS="8")
    hooks.create("orders", {"url": URL})
    webhook_id = hooks.wait_ready("orders")["webhookId"]
    simulator.admin.add_fault("error", status=503, endpoints=[PATCH])
    simulator.admin.mutate(webhook_id, url=DRIFTED)
    hooks.wait_condition("orders", "Reconciling", "True", reason="RemoteError", timeout=60)
    before = simulator.count(PATCH)
    with modifications(kube_api, namespace) as writes:
        hold(30)
    patches = simulator.count(PATCH) - before
    print(f"30 s of a failing PATCH: {patches} PATCH calls, {writes} status writes")
    # Backoff 2 s doubling to 8 s with full jitter: about 8 tries of up to 3 calls each.
    assert patches <= 45, patches
    assert writes.get("orders", 0) == 0, writes  # the failure is shown; nothing changed
    assert warnings(hooks, "orders", "RemoteError") == 1

    simulator.admin.clear_faults()
    hooks.wait_ready("orders", timeout=60)
    remote = simulator.webhook(webhook_id)
    assert remote is not None
    assert remote["url"] == URL
    assert warnings(hooks, "orders", "RemoteError") == 1
    hooks.wait_event("orders", "DriftCorrected")  # Events are posted after the status
    # The next change is handled as usual.
    hooks.patch("orders", {"spec": {"eventTypes": ["message.received"]}})
    wait_for(
        lambda: simulator.webhook(webhook_id)["event_types"] == ["message.received"],  # type: ignore[index]
        timeout=60,
        message="edit after the outage",
    )


def test_a_revoked_default_key_shows_on_every_resource_once_and_heals(
    kube_api: k8s.ApiClient,
    namespace: str,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    """Found by issue 18: resources that were Ready stayed Ready=True/Synced forever
    after the default key was revoked; the list error was only logged, one WARNING per
    resource per pass."""
    hooks = Webhooks(kube_api, namespace)
    op = start_operator(BLOOIO_LOG_LEVEL="INFO")
    names = [f"r{i}" for i in range(6)]
    for i, name in enumerate(names):
        hooks.create(name, {"url": url(i)})
    for name in names:
        hooks.wait_ready(name)
    log_before = len(op.logs().splitlines())

    simulator.admin.revoke_api_key(API_KEY)
    for name in names:  # within one check interval (2 s) plus a list's failure memory
        cond = hooks.wait_condition(name, "Stalled", "True", timeout=30)
        assert cond["reason"] == "CredentialsInvalid"
    with modifications(kube_api, namespace) as writes:
        hold(15)  # five credentials retries (3 s) and seven check intervals
    lines = op.logs().splitlines()[log_before:]
    assert all(warnings(hooks, name, "CredentialsInvalid") == 1 for name in names)
    assert sum(writes.values()) == 0, writes
    per_resource = [line for line in lines if any(f"/{n}" in line for n in names)]
    print(f"revoked: {len(lines)} log lines, {len(per_resource)} naming a resource")
    assert len(per_resource) <= 2 * len(names), per_resource[:20]
    assert len(lines) <= 40, lines[:40]

    simulator.admin.add_api_key(API_KEY)
    for name in names:
        hooks.wait_ready(name, timeout=60)
        hooks.wait_event(name, "FailureCleared")  # kopf posts Events after the status
        assert warnings(hooks, name, "CredentialsInvalid") == 1
    hooks.create("fresh", {"url": url(99)})
    hooks.wait_ready("fresh", timeout=60)
    assert op.alive()


def test_the_registry_forgets_what_a_relist_no_longer_holds(
    kube_api: k8s.ApiClient,
    namespace: str,
    control_plane: ControlPlane,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    """Found by issue 18: after a re-list kopf sends no DELETED for what vanished in the
    gap; the registry kept the claim and adopting the orphaned webhook was refused
    ("held by another BlooioWebhook") until the operator restarted."""
    hooks = Webhooks(kube_api, namespace)
    op = start_operator()
    hooks.create("old", {"url": URL, "deletionPolicy": "Orphan"})
    orphan = hooks.wait_ready("old")["webhookId"]

    assert op.proc is not None
    op.proc.send_signal(signal.SIGSTOP)  # the operator's watch is away ...
    try:
        control_plane.restart()  # ... across an API server restart (a re-list follows)

        def gone() -> bool:  # ... while "old" vanishes without its finalizer
            if hooks.get("old") is None:
                return True
            hooks.patch("old", {"metadata": {"finalizers": None}})
            hooks.delete("old")
            return hooks.get("old") is None

        wait_for(gone, timeout=60, message="old deleted in the gap")
    finally:
        op.proc.send_signal(signal.SIGCONT)
    hooks.create("new", {"url": URL}, annotations={"blooio.com/adopt-webhook-id": orphan})
    status = hooks.wait_ready("new", timeout=90)
    assert status["webhookId"] == orphan
    hooks.wait_event("new", "Adopted")
    assert len(simulator.webhooks()) == 1
