"""Resilience against the real control plane, the simulator and the operator process.

Crash safety of the one-time signing secret (SPEC §3): the operator is SIGKILLed at each
step boundary (``BLOOIO_CRASH_POINT``), Blooio misbehaves (commit-then-drop, hangs,
5xx and 429 storms), kube-apiserver restarts under it, and someone edits things behind
its back. After every scenario the invariants of ``tests/chaos/invariants.py`` hold:
one webhook per resource at Blooio, the Secret holds its *current* signing secret, and
deletion leaves neither a stuck finalizer nor an orphaned webhook.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from blooio_operator.devenv.controlplane import ControlPlane
from tests.chaos.invariants import (
    converged_state,
    delete_and_verify,
    remote_for,
    wait_converged,
    wait_deleted,
)
from tests.helpers import wait_for
from tests.integration.conftest import API_KEY, OperatorFactory, OperatorProcess, Simulator
from tests.integration.webhooks import GROUP, PLURAL, VERSION, Webhooks

pytestmark = pytest.mark.integration

URL = "https://orders.shop.example.com/blooio"
CH_BLOOIO, CH_WHATSAPP = "ch_a1b2c3d4", "ch_e5f6a7b8"
ROTATE = "blooio.com/rotate-secret"
ADOPT = "blooio.com/adopt-webhook-id"
SECRET = "orders-blooio-webhook"
POST = "POST /webhooks"
ROTATE_CALL = "POST /webhooks/{id}/secret/rotate"
KILLED = -signal.SIGKILL


@pytest.fixture
def hooks(kube_api: k8s.ApiClient, namespace: str) -> Webhooks:
    return Webhooks(kube_api, namespace)


def killed_at(op: OperatorProcess, point: str, timeout: float = 20) -> None:
    """The operator reached ``point`` and SIGKILLed itself."""
    code = op.wait_exit(timeout)
    assert code == KILLED, f"operator exited with {code}, not SIGKILL at {point}"


def restart_clean(op: OperatorProcess) -> None:
    """Start the same operator again without a crash point (an empty value unsets it)."""
    op.start(BLOOIO_CRASH_POINT="")


def assert_quiet(probe: Callable[[], object], seconds: float, what: str) -> None:
    """``probe()`` keeps its current value for ``seconds`` (a bounded quiet-period check)."""
    first = probe()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = probe()
        assert now == first, f"{what} changed from {first!r} to {now!r}"
        time.sleep(0.25)


def public_api(sim: Simulator) -> httpx.Client:
    """Blooio's public API as a user (not the operator) calls it."""
    return httpx.Client(
        base_url=sim.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )


def create_at_blooio(sim: Simulator, url: str, **body: Any) -> str:
    with public_api(sim) as api:
        resp = api.post("/webhooks", json={"url": url, **body})
        resp.raise_for_status()
        return str(resp.json()["data"]["id"])


class ConditionLog:
    """Every condition value a watch saw on the namespace's BlooioWebhooks.

    Polling could miss a short-lived ``Reconciling=True``; a watch sees each write.
    """

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.namespace = namespace
        self.seen: list[tuple[str, str, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConditionLog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        version: str | None = None  # resume where the last stream ended: no gaps
        while not self._stop.is_set():
            watcher = k8s_watch.Watch()
            try:
                for event in watcher.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    timeout_seconds=2,
                    **({"resource_version": version} if version else {}),
                ):
                    obj = event["object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    name = obj["metadata"]["name"]
                    for cond in (obj.get("status") or {}).get("conditions", []):
                        self.seen.append((name, cond["type"], cond["status"], cond["reason"]))
                    if self._stop.is_set():
                        break
            except Exception:  # e.g. 410 Gone: start over from a fresh list
                version = None
                self._stop.wait(0.2)
            finally:
                watcher.stop()

    def saw(self, name: str, type_: str, status: str = "True", reason: str | None = None) -> bool:
        return any(
            n == name and t == type_ and s == status and (reason is None or r == reason)
            for n, t, s, r in list(self.seen)
        )


# --- 1. SIGKILL at every crash point ----------------------------------------------------


@pytest.mark.parametrize(
    ("point", "rotations", "event"),
    [
        ("before-create", 0, "Created"),  # intent only: recovery finds nothing, creates
        ("after-create", 1, "Recovered"),  # secret lost: adopt the match, rotate
        ("after-secret", 0, None),  # the Secret holds it: recovered from the Secret
    ],
)
def test_crash_during_create(
    point: str,
    rotations: int,
    event: str | None,
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    op = start_operator(BLOOIO_CRASH_POINT=point)
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})
    killed_at(op, point)
    restart_clean(op)

    status = wait_converged(hooks, simulator, "orders", URL)
    assert simulator.count(POST) == 1, "a crash must never cost a second POST /webhooks"
    assert simulator.count(ROTATE_CALL) == rotations
    if event is not None:
        hooks.wait_event("orders", event)
    assert status["webhookId"] == hooks.secret_data(SECRET)["webhook-id"]
    delete_and_verify(hooks, simulator, "orders", URL)


@pytest.mark.parametrize("point", ["before-create", "after-create", "after-secret"])
def test_delete_while_create_is_interrupted(
    point: str, hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    # Deleted while the operator is down with only an intent recorded: the finalizer
    # must find (by matching) and delete a webhook whose id was never written down.
    op = start_operator(BLOOIO_CRASH_POINT=point)
    hooks.create("orders", {"url": URL})
    killed_at(op, point)
    hooks.delete("orders")
    restart_clean(op)

    wait_deleted(hooks, simulator, "orders", URL)
    assert simulator.count(POST) == (0 if point == "before-create" else 1)


@pytest.mark.parametrize("point", ["after-replace-create", "before-replace-delete"])
def test_crash_during_replace(
    point: str, hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    op = start_operator()
    hooks.create("orders", {"url": URL, "channelId": CH_BLOOIO})
    old = wait_converged(hooks, simulator, "orders", URL)["webhookId"]
    op.restart(BLOOIO_CRASH_POINT=point)
    hooks.patch("orders", {"spec": {"channelId": CH_WHATSAPP}})
    killed_at(op, point)
    restart_clean(op)

    status = wait_converged(hooks, simulator, "orders", URL)
    assert status["webhookId"] != old
    assert simulator.webhook(old) is None, "the replaced webhook must be deleted at Blooio"
    (remote,) = remote_for(simulator, URL)
    assert remote["channel_id"] == CH_WHATSAPP
    assert simulator.count(POST) == 2, "one POST for the original, one for the replacement"
    hooks.wait_event("orders", "Replaced")
    delete_and_verify(hooks, simulator, "orders", URL)


def test_crash_after_remote_delete(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    op = start_operator(BLOOIO_CRASH_POINT="after-remote-delete")
    hooks.create("orders", {"url": URL})
    wait_converged(hooks, simulator, "orders", URL)
    hooks.delete("orders")
    killed_at(op, "after-remote-delete")
    assert hooks.get("orders") is not None, "the finalizer holds the resource until released"
    assert remote_for(simulator, URL) == []
    restart_clean(op)

    wait_deleted(hooks, simulator, "orders", URL)


def test_crash_after_rotate(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    op = start_operator(BLOOIO_CRASH_POINT="after-rotate")
    hooks.create("orders", {"url": URL})
    before = wait_converged(hooks, simulator, "orders", URL)
    old_secret = hooks.secret_data(SECRET)["signing-secret"]
    hooks.patch("orders", {"metadata": {"annotations": {ROTATE: "2024-01"}}})
    killed_at(op, "after-rotate")
    (remote,) = remote_for(simulator, URL)
    assert remote["signing_secret"] != old_secret, "the rotation happened at Blooio"
    restart_clean(op)

    def rotated() -> dict[str, Any] | None:
        status = converged_state(hooks, simulator, "orders", URL)
        return status if status.get("secretRotatedAt") else None

    status = wait_for(rotated, timeout=30, message="rotation converged after the crash")
    assert status["webhookId"] == before["webhookId"]
    hooks.wait_event("orders", "SecretRotated")
    rotations = simulator.count(ROTATE_CALL)
    assert_quiet(lambda: simulator.count(ROTATE_CALL), 3, "rotate calls after convergence")
    assert rotations == 2, "the lost rotation is redone exactly once"
    delete_and_verify(hooks, simulator, "orders", URL)


# --- 2. Blooio faults ------------------------------------------------------------------


def test_create_committed_then_connection_dropped(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    simulator.admin.add_fault("commit_then_drop", endpoint=POST, count=1)
    start_operator()
    hooks.create("orders", {"url": URL})

    wait_converged(hooks, simulator, "orders", URL)
    assert simulator.count(POST) == 1
    assert simulator.admin.faults()["rules"][0]["fired"] == 1
    hooks.wait_event("orders", "Recovered")
    delete_and_verify(hooks, simulator, "orders", URL)


def test_create_hangs_past_the_client_timeout(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    # Held 3.5 s (the operator gives up after BLOOIO_HTTP_TIMEOUT_SECONDS=3), then
    # committed: the operator must find it instead of creating another.
    simulator.admin.add_fault("hang", endpoint=POST, seconds=3.5, count=1)
    start_operator()
    hooks.create("orders", {"url": URL})

    wait_converged(hooks, simulator, "orders", URL)
    assert simulator.count(POST) == 1
    assert simulator.admin.faults()["rules"][0]["fired"] == 1
    delete_and_verify(hooks, simulator, "orders", URL)


def test_create_committed_after_recovery_found_nothing(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    # Held 10 s: the operator times out at 3 s, waits until the request "can no longer
    # commit" (start + 2 x 3 s timeout + 1 s delay + 1 s = 8 s), lists, finds nothing and
    # creates again; then the first create commits. Blooio's commit latency is not
    # bounded by anything we can know, so the late one must be found and deleted later.
    simulator.admin.add_fault("hang", endpoint=POST, seconds=10, count=1)
    start_operator()
    hooks.create("orders", {"url": URL})
    wait_for(
        lambda: [c["status"] for c in simulator.calls(POST)] == [201, 201],
        timeout=30,
        message="both creates committed",
    )

    wait_converged(hooks, simulator, "orders", URL, timeout=20)
    delete_and_verify(hooks, simulator, "orders", URL)


def test_server_error_storm(
    kube_api: k8s.ApiClient,
    namespace: str,
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    names = {f"shop-{i}": f"https://shop-{i}.example.com/blooio" for i in range(3)}
    simulator.admin.set_faults(
        rules=[
            # The first create fails for sure, so Reconciling must show; then a coin flip
            # on every call (creates, lists, rotations, status patches alike).
            {"kind": "error", "status": 503, "endpoints": [POST], "count": 1},
            {"kind": "error", "status": 503, "probability": 0.5},
        ]
    )
    with ConditionLog(kube_api, namespace) as seen:
        start_operator()
        for name, url in names.items():
            hooks.create(name, {"url": url, "eventTypes": ["message.received"]})
        # Progress under the storm itself: all become Ready while it rages.
        for name in names:
            hooks.wait_ready(name, timeout=60)
        first = next(iter(names))
        hooks.patch(first, {"spec": {"eventTypes": ["message.received", "poll.*"]}})
        hooks.wait_ready(first, timeout=60)
        wait_for(
            lambda: simulator.admin.faults()["rules"][1]["fired"] >= 5,
            # A coin flip per call, and once all are Ready only drift lists (every 3 s)
            # are left to hit: give it time rather than a smaller count.
            timeout=90,
            message="the storm hit at least five calls",
        )
        assert any(seen.saw(name, "Reconciling", "True") for name in names)
    assert simulator.admin.faults()["rules"][0]["fired"] == 1
    simulator.admin.clear_faults()

    for name, url in names.items():
        wait_converged(hooks, simulator, name, url)
    for name, url in names.items():
        delete_and_verify(hooks, simulator, name, url)


def test_rate_limit_storm_honours_retry_after(
    kube_api: k8s.ApiClient,
    namespace: str,
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    simulator.admin.set_faults(
        rules=[
            # Three in a row exhaust the client's retries: the reconcile layer must wait.
            {"kind": "rate_limit", "endpoints": [POST], "count": 3, "retry_after": 2},
            {"kind": "rate_limit", "probability": 0.5, "retry_after": 1},
        ]
    )
    with ConditionLog(kube_api, namespace) as seen:
        start_operator()
        hooks.create("orders", {"url": URL})
        hooks.wait_ready("orders", timeout=60)
        assert seen.saw("orders", "Reconciling", "True", reason="RateLimited")
    simulator.admin.clear_faults()

    wait_converged(hooks, simulator, "orders", URL)
    posts = simulator.calls(POST)
    assert [c["status"] for c in posts[:3]] == [429, 429, 429]
    # Never sooner than Retry-After: every POST after a 429 waited the advertised delay.
    for prev, nxt in itertools.pairwise(posts):
        if prev["status"] == 429:
            wait = 2.0 if prev in posts[:3] else 1.0
            assert nxt["ts"] - prev["ts"] >= wait - 0.05, (prev, nxt)
    assert sum(1 for c in posts if c["status"] == 201) == 1
    delete_and_verify(hooks, simulator, "orders", URL)


# --- 3. kube-apiserver restart ------------------------------------------------------------


def test_apiserver_restart_mid_run(
    control_plane: ControlPlane,
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    other = "https://billing.shop.example.com/blooio"
    op = start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})
    wait_converged(hooks, simulator, "orders", URL)

    control_plane.restart()

    def create_billing() -> bool:
        if hooks.get("billing") is None:
            hooks.create("billing", {"url": other})
        return True

    wait_for(create_billing, timeout=30, message="create after the restart")

    def edit_orders() -> bool:
        hooks.patch("orders", {"spec": {"eventTypes": ["message.received", "poll.*"]}})
        return True

    wait_for(edit_orders, timeout=30, message="edit after the restart")
    wait_converged(hooks, simulator, "billing", other, timeout=60)
    wait_converged(hooks, simulator, "orders", URL, timeout=60)
    (remote,) = remote_for(simulator, URL)
    assert set(remote["event_types"]) == {"message.received", "poll.*"}
    assert op.alive()
    delete_and_verify(hooks, simulator, "orders", URL)
    delete_and_verify(hooks, simulator, "billing", other)


# --- 4. drift and Secret self-healing ------------------------------------------------------


def test_drift_is_corrected_and_missing_webhook_recreated(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})
    first = wait_converged(hooks, simulator, "orders", URL)
    webhook_id = first["webhookId"]

    simulator.admin.mutate(webhook_id, url="https://attacker.example.com/x", status="disabled")
    hooks.wait_event("orders", "DriftCorrected", timeout=30)

    def patched_back() -> bool:
        remote = simulator.webhook(webhook_id)
        return bool(remote and remote["url"] == URL and remote["status"] == "active")

    wait_for(patched_back, timeout=30, message="webhook patched back to the spec")
    wait_converged(hooks, simulator, "orders", URL)

    old_secret = hooks.secret_data(SECRET)["signing-secret"]
    simulator.admin.remove(webhook_id)
    hooks.wait_event("orders", "Recreated", timeout=30)

    def recreated() -> dict[str, Any] | None:
        status = converged_state(hooks, simulator, "orders", URL)
        return status if status["webhookId"] != webhook_id else None

    status = wait_for(recreated, timeout=30, message="recreated webhook converged")
    assert hooks.secret_data(SECRET)["signing-secret"] != old_secret
    assert simulator.webhook(status["webhookId"])["event_types"] == ["message.received"]
    delete_and_verify(hooks, simulator, "orders", URL)


def test_drift_recreation_racing_a_spec_edit(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})
    webhook_id = wait_converged(hooks, simulator, "orders", URL)["webhookId"]
    # The drift check finds the webhook gone and confirms with a GET held for 3 s; the
    # user edits the spec meanwhile, so the update handler waits for the check.
    simulator.admin.add_fault("latency", endpoint="GET /webhooks/{id}", ms=3000, count=1)
    simulator.admin.remove(webhook_id)
    wait_for(
        lambda: any(c["status"] is None for c in simulator.calls("GET /webhooks/{id}")),
        timeout=20,
        message="the drift check's GET in flight",
    )
    hooks.patch("orders", {"spec": {"eventTypes": ["message.received", "poll.*"]}})

    wait_converged(hooks, simulator, "orders", URL, timeout=20)
    assert simulator.count(POST) == 2, "one create, one recreate; never a third"
    delete_and_verify(hooks, simulator, "orders", URL)


def test_secret_deleted_or_emptied_is_restored(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL})
    wait_converged(hooks, simulator, "orders", URL)
    original = hooks.secret_data(SECRET)["signing-secret"]

    hooks.core.delete_namespaced_secret(SECRET, hooks.ns)
    hooks.wait_event("orders", "SecretRestored", timeout=30)
    wait_converged(hooks, simulator, "orders", URL)
    restored = hooks.secret_data(SECRET)["signing-secret"]
    assert restored != original, "a lost secret is rotated, not recovered"
    assert simulator.count(ROTATE_CALL) == 1

    secret = hooks.secret(SECRET)
    assert secret is not None
    secret.data = {}
    hooks.core.replace_namespaced_secret(SECRET, hooks.ns, secret)
    wait_for(
        lambda: simulator.count(ROTATE_CALL) == 2, timeout=30, message="emptied Secret restored"
    )
    wait_converged(hooks, simulator, "orders", URL)
    assert hooks.secret_data(SECRET)["signing-secret"] not in (original, restored)
    delete_and_verify(hooks, simulator, "orders", URL)


# --- 5. rotation, adoption, ambiguous recovery ----------------------------------------------


def test_rotation_annotation_rotates_once_per_token(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL})
    wait_converged(hooks, simulator, "orders", URL)
    original = hooks.secret_data(SECRET)["signing-secret"]
    assert simulator.count(ROTATE_CALL) == 0

    def rotated(count: int) -> dict[str, Any] | None:
        if simulator.count(ROTATE_CALL) != count:
            return None
        status = converged_state(hooks, simulator, "orders", URL)
        return status if status.get("secretRotatedAt") else None

    hooks.patch("orders", {"metadata": {"annotations": {ROTATE: "one"}}})
    wait_for(lambda: rotated(1), timeout=30, message="first rotation")
    first = hooks.secret_data(SECRET)["signing-secret"]
    assert first != original
    hooks.wait_event("orders", "SecretRotated")

    # Same token again, with an unrelated change to make the operator look: no rotation.
    hooks.patch(
        "orders", {"metadata": {"annotations": {ROTATE: "one", "example.com/touched": "1"}}}
    )
    assert_quiet(lambda: simulator.count(ROTATE_CALL), 4, "rotate calls for a repeated token")
    assert hooks.secret_data(SECRET)["signing-secret"] == first

    hooks.patch("orders", {"metadata": {"annotations": {ROTATE: "two"}}})
    wait_for(lambda: rotated(2), timeout=30, message="second rotation")
    assert hooks.secret_data(SECRET)["signing-secret"] not in (original, first)
    delete_and_verify(hooks, simulator, "orders", URL)


def test_adoption_of_an_existing_webhook(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    existing = create_at_blooio(simulator, URL, event_types=["*"])
    simulator.admin.reset_calls()
    start_operator()
    hooks.create(
        "orders", {"url": URL, "eventTypes": ["message.received"]}, annotations={ADOPT: existing}
    )

    status = wait_converged(hooks, simulator, "orders", URL)
    assert status["webhookId"] == existing
    assert simulator.count(POST) == 0, "adoption never creates"
    assert simulator.count(ROTATE_CALL) == 1, "the old secret is unrecoverable: rotate once"
    assert simulator.webhook(existing)["event_types"] == ["message.received"]
    hooks.wait_event("orders", "Adopted")
    delete_and_verify(hooks, simulator, "orders", URL)


def test_ambiguous_recovery_stalls_until_adoption(
    hooks: Webhooks, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    op = start_operator(BLOOIO_CRASH_POINT="before-create")
    hooks.create("orders", {"url": URL})
    killed_at(op, "before-create")
    # Two webhooks that both look like the interrupted create.
    keep = create_at_blooio(simulator, URL)
    extra = create_at_blooio(simulator, URL)
    restart_clean(op)

    stalled = hooks.wait_condition("orders", "Stalled", reason="AmbiguousRecovery", timeout=30)
    assert ADOPT in stalled["message"]
    assert keep in stalled["message"]
    assert extra in stalled["message"]
    assert simulator.count(POST) == 2, "the operator must not create a third"

    hooks.patch("orders", {"metadata": {"annotations": {ADOPT: keep}}})
    with public_api(simulator) as api:  # what the message tells the user to do
        api.delete(f"/webhooks/{extra}").raise_for_status()
    status = wait_converged(hooks, simulator, "orders", URL)
    assert status["webhookId"] == keep
    assert simulator.count(POST) == 2
    hooks.wait_event("orders", "Adopted")
    delete_and_verify(hooks, simulator, "orders", URL)
