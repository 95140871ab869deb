"""Delivery health and rotations that lose no events, end to end: the real control plane,
the simulator and the operator as processes, and examples/receiver/receiver.py as the
receiver (a real process reading its signing secret from a file).

A "kubelet" thread copies the Secret's ``signing-secret`` into that file with a delay,
as the kubelet refreshes a mounted Secret; deliveries made between a rotation and that
refresh are rejected with 401, and the operator replays them after its grace period.
Intervals are shortened through the environment (module constants below).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.helpers import wait_for
from tests.integration.conftest import OperatorFactory, Simulator
from tests.integration.test_gitops_kstatus import ensure_kstatus_binary, kstatus
from tests.integration.webhooks import Webhooks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = ROOT / "examples" / "receiver" / "receiver.py"
URL = "https://receiver.shop.example.com/blooio"
SECRET = "orders-blooio-webhook"
KUBELET_DELAY = 2.0  # seconds from a Secret change to the file (shorter than the grace)
RECEIVED = re.compile(r"received \S+ (\S+?)(?=received |\s|$)")
REPLAY_ENV = {
    "BLOOIO_REPLAY_GRACE_SECONDS": "8",
    "BLOOIO_REPLAY_WINDOW_SECONDS": "60",
    "BLOOIO_REPLAY_PROBE_DELAY_SECONDS": "1",
    "BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS": "4",
}


class ReceiverProcess:
    """examples/receiver/receiver.py on a free port, its stdout collected."""

    def __init__(self, secret_file: Path) -> None:
        env = {**os.environ, "PORT": "0", "HOST": "127.0.0.1"}
        env["BLOOIO_SIGNING_SECRET_FILE"] = str(secret_file)
        self.proc = subprocess.Popen(
            [sys.executable, str(RECEIVER)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        match = re.search(r"listening on (\S+):(\d+)", first)
        assert match, f"receiver did not start: {first!r}"
        self.url = f"http://127.0.0.1:{match.group(2)}/blooio"
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def received(self) -> Counter[str]:
        """Event ids the receiver accepted (it prints ``received <type> <id>``).

        Its request threads print without a lock, so two lines can interleave
        (``received a evt_1received b evt_2`` then an empty line): read the records, not
        the lines.
        """
        text = "\n".join(list(self.lines))
        return Counter(RECEIVED.findall(text))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Kubelet(threading.Thread):
    """Copies the Secret's signing secret into a file, ``delay`` seconds after it changed."""

    def __init__(self, hooks: Webhooks, path: Path, delay: float) -> None:
        super().__init__(daemon=True)
        self.hooks = hooks
        self.path = path
        self.delay = delay
        self.enabled = True
        self.stopped = threading.Event()

    def run(self) -> None:
        seen: str | None = None
        due: float | None = None
        while not self.stopped.wait(0.2):
            try:
                value = self.hooks.secret_data(SECRET).get("signing-secret")
            except Exception:
                continue
            if value and value != seen:
                seen, due = value, time.monotonic() + self.delay
            if due is not None and time.monotonic() >= due and self.enabled and seen:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(seen)
                tmp.replace(self.path)  # atomically, like the kubelet's symlink swap
                due = None

    def stop(self) -> None:
        self.stopped.set()


class FailingReceiver:
    """A receiver answering ``status`` to every POST (500 while "down")."""

    def __init__(self) -> None:
        box = self
        self.status = 500

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(box.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/blooio"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def argo_health(obj: dict[str, Any]) -> str:
    """The shipped Argo CD health check (deploy/argocd) run on ``obj``, as Argo CD runs it."""
    import lupa.lua51 as lupa

    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute((ROOT / "deploy" / "argocd" / "blooiowebhook-health.lua").read_text())
    return str(hs["status"])


@pytest.fixture(scope="module")
def kstatus_bin() -> Path:
    try:
        return ensure_kstatus_binary()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"kstatus checker unavailable: {exc}")


@pytest.fixture
def hooks(kube_api: k8s.ApiClient, namespace: str) -> Webhooks:
    return Webhooks(kube_api, namespace)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return tmp_path / "signing-secret"


@pytest.fixture
def receiver(secret_file: Path) -> Iterator[ReceiverProcess]:
    proc = ReceiverProcess(secret_file)
    yield proc
    proc.stop()


@pytest.fixture
def kubelet(hooks: Webhooks, secret_file: Path) -> Iterator[Kubelet]:
    thread = Kubelet(hooks, secret_file, KUBELET_DELAY)
    thread.start()
    yield thread
    thread.stop()


def deliveries(simulator: Simulator, webhook_id: str) -> list[dict[str, Any]]:
    return simulator.admin.deliveries(webhook_id)


def deliver(simulator: Simulator, webhook_id: str, url: str, n: int) -> list[str]:
    events = []
    for _ in range(n):
        out = simulator.admin.deliver(webhook_id, target_url=url)
        events.append(out["event"]["id"])
    return events


def codes_of(simulator: Simulator, webhook_id: str, events: list[str]) -> list[int | None]:
    """Response codes of the original deliveries of ``events``."""
    firsts = {
        d["event_id"]: d["response_status"]
        for d in deliveries(simulator, webhook_id)
        if d["replay_of"] is None
    }
    return [firsts[e] for e in events]


def replays_of(simulator: Simulator, webhook_id: str) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {}
    for d in deliveries(simulator, webhook_id):
        if d["replay_of"] is not None:
            out.setdefault(d["event_id"], []).append(d["response_status"])
    return out


def ready_with_secret_in_file(
    hooks: Webhooks, secret_file: Path, *, name: str = "orders"
) -> dict[str, Any]:
    hooks.create(name, {"url": URL, "eventTypes": ["message.received"]})
    status = hooks.wait_ready(name)
    secret = hooks.secret_data(SECRET)["signing-secret"]
    wait_for(
        lambda: secret_file.is_file() and secret_file.read_text() == secret,
        timeout=KUBELET_DELAY + 10,
        message="the receiver's secret file",
    )
    return status


def rotate(hooks: Webhooks, token: str, *, name: str = "orders") -> str:
    before = hooks.status(name).get("secretRotatedAt")
    hooks.patch(name, {"metadata": {"annotations": {"blooio.com/rotate-secret": token}}})
    rotated: str = wait_for(
        lambda: (at := hooks.status(name).get("secretRotatedAt")) != before and at,
        timeout=30,
        message="secretRotatedAt",
    )
    return rotated


def test_rotation_gap_is_replayed_once_and_health_is_reported(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    receiver: ReceiverProcess,
    kubelet: Kubelet,
    secret_file: Path,
) -> None:
    start_operator(**REPLAY_ENV)
    webhook_id = ready_with_secret_in_file(hooks, secret_file)["webhookId"]
    before = deliver(simulator, webhook_id, receiver.url, 3)
    assert codes_of(simulator, webhook_id, before) == [204, 204, 204]
    healthy = hooks.wait_condition("orders", "DeliveriesHealthy", "True", timeout=15)
    assert healthy["reason"] == "ReceiverAccepting"
    summary = hooks.status("orders")["deliveries"]
    assert summary["newest"]["responseCode"] == 204
    assert summary["delivered"] == 3

    # The file is updated KUBELET_DELAY after the Secret, but not before the gap's
    # deliveries are made (however slow this machine is): they are rejected with 401.
    kubelet.enabled = False
    rotate(hooks, "r1")
    gap = deliver(simulator, webhook_id, receiver.url, 4)
    kubelet.enabled = True
    assert codes_of(simulator, webhook_id, gap) == [401] * 4

    hooks.wait_event("orders", "DeliveriesReplayed", timeout=45)
    replays = replays_of(simulator, webhook_id)
    assert replays == {e: [204] for e in gap}  # each gap delivery replayed once, accepted
    expected = Counter(dict.fromkeys(before + gap, 1))
    # The receiver's stdout is read by a thread: give it a moment.
    wait_for(lambda: receiver.received() == expected, timeout=5, message="receiver's log")
    status = hooks.status("orders")
    last = status["deliveries"]["lastReplay"]
    assert (last["outcome"], last["replayed"], last["accepted"]) == ("replayed", 4, 4)
    assert "replay" not in status["deliveries"]
    (event,) = [e for e in hooks.events("orders") if e.reason == "DeliveriesReplayed"]
    assert "Replayed 4 deliveries" in event.message
    assert "4 accepted" in event.message
    # Delivery health never touches Ready.
    assert hooks.condition("orders", "Ready")["status"] == "True"
    # No secret and no payload anywhere in the status or Events.
    secret = hooks.secret_data(SECRET)["signing-secret"]
    text = str(status) + " ".join(str(e.message) for e in hooks.events("orders"))
    assert secret not in text
    assert "message.received" not in str(status["deliveries"])


def test_health_goes_false_on_500_and_back(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    receiver: ReceiverProcess,
    kubelet: Kubelet,
    secret_file: Path,
    kstatus_bin: Path,
) -> None:
    start_operator(**REPLAY_ENV)
    webhook_id = ready_with_secret_in_file(hooks, secret_file)["webhookId"]
    down = FailingReceiver()
    try:
        deliver(simulator, webhook_id, down.url, 2)
        started = time.monotonic()
        cond = hooks.wait_condition("orders", "DeliveriesHealthy", "False", timeout=12)
        assert cond["reason"] == "ReceiverFailing"
        assert "HTTP 500" in cond["message"]
        assert time.monotonic() - started < 4 * 2 + 2  # within about one interval
        assert hooks.condition("orders", "Ready")["status"] == "True"
        assert hooks.condition("orders", "Stalled")["status"] == "False"
        # Neither Flux (kstatus) nor Argo CD changes its verdict for a failing receiver.
        obj = hooks.get("orders")
        assert obj is not None
        assert kstatus(kstatus_bin, obj)["status"] == "Current"
        assert argo_health(obj) == "Healthy"
        down.status = 204
        deliver(simulator, webhook_id, down.url, 1)
        cond = hooks.wait_condition("orders", "DeliveriesHealthy", "True", timeout=12)
        assert cond["reason"] == "ReceiverAccepting"
    finally:
        down.stop()
    # 5xx failures are not replayed automatically.
    assert replays_of(simulator, webhook_id) == {}


def test_receiver_that_never_picks_up_the_secret_gets_one_warning(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    receiver: ReceiverProcess,
    kubelet: Kubelet,
    secret_file: Path,
) -> None:
    start_operator(
        **{
            **REPLAY_ENV,
            "BLOOIO_REPLAY_GRACE_SECONDS": "2",
            "BLOOIO_REPLAY_WINDOW_SECONDS": "10",
            "BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS": "60",
        }
    )
    webhook_id = ready_with_secret_in_file(hooks, secret_file)["webhookId"]
    kubelet.enabled = False  # the pod never sees the new secret
    rotate(hooks, "r1")
    gap = deliver(simulator, webhook_id, receiver.url, 3)
    assert codes_of(simulator, webhook_id, gap) == [401] * 3
    warning = hooks.wait_event("orders", "DeliveriesNotReplayed", timeout=40)
    assert warning.type == "Warning"
    assert warning.message.startswith("3 deliveries")
    time.sleep(3)  # nothing more comes
    assert [e.reason for e in hooks.events("orders")].count("DeliveriesNotReplayed") == 1
    cond = hooks.condition("orders", "DeliveriesHealthy")
    assert cond is not None
    assert cond["status"] == "False"
    assert "not replayed" in cond["message"]
    replays = replays_of(simulator, webhook_id)
    assert set(replays) <= {gap[0]}  # only the probe was tried
    assert all(code == 401 for codes in replays.values() for code in codes)
    assert hooks.status("orders")["deliveries"]["lastReplay"]["outcome"] == "gaveUp"


def test_sigkill_in_the_middle_of_replays_replays_nothing_twice(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    receiver: ReceiverProcess,
    kubelet: Kubelet,
    secret_file: Path,
) -> None:
    env = dict(REPLAY_ENV)
    # Killed right after the 4th replay was posted (probe + 3), before it was recorded.
    first = start_operator(**env, BLOOIO_CRASH_POINT="after-replay:4")
    webhook_id = ready_with_secret_in_file(hooks, secret_file)["webhookId"]
    kubelet.enabled = False
    rotate(hooks, "r1")
    gap = deliver(simulator, webhook_id, receiver.url, 12)
    kubelet.enabled = True
    assert codes_of(simulator, webhook_id, gap) == [401] * 12
    wait_for(lambda: not first.alive(), timeout=40, message="the operator killed mid-replays")
    assert first.wait_exit(10) == -9
    assert len(replays_of(simulator, webhook_id)) == 4
    assert hooks.status("orders")["deliveries"]["replay"]["inflight"]
    start_operator(**env)
    hooks.wait_event("orders", "DeliveriesReplayed", timeout=45)
    assert replays_of(simulator, webhook_id) == {e: [204] for e in gap}
    expected = Counter(dict.fromkeys(gap, 1))
    wait_for(lambda: receiver.received() == expected, timeout=5, message="receiver's log")
    last = hooks.status("orders")["deliveries"]["lastReplay"]
    assert (last["replayed"], last["accepted"]) == (12, 12)


def test_suspend_during_a_replay_defers_it_until_resumed(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
    receiver: ReceiverProcess,
    kubelet: Kubelet,
    secret_file: Path,
) -> None:
    """Suspended for longer than the whole window: the replays wait (nothing is posted,
    nothing is refused, no give-up) and run once the resource is resumed."""
    start_operator(
        **{
            **REPLAY_ENV,
            "BLOOIO_REPLAY_GRACE_SECONDS": "2",
            "BLOOIO_REPLAY_WINDOW_SECONDS": "8",
            "BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS": "60",
        }
    )
    webhook_id = ready_with_secret_in_file(hooks, secret_file)["webhookId"]
    kubelet.enabled = False
    rotate(hooks, "r1")
    gap = deliver(simulator, webhook_id, receiver.url, 3)
    assert codes_of(simulator, webhook_id, gap) == [401] * 3
    hooks.patch("orders", {"spec": {"suspend": True}})
    wait_for(
        lambda: hooks.status("orders").get("remoteStatus") == "disabled",
        timeout=30,
        message="remoteStatus disabled",
    )
    kubelet.enabled = True  # the receiver has the new secret from now on

    def parked() -> dict[str, Any] | None:
        episode: dict[str, Any] | None = (hooks.status("orders").get("deliveries") or {}).get(
            "replay"
        )
        return (
            episode
            if episode and episode["phase"] == "waiting" and "nextAt" not in episode
            else None
        )

    episode = wait_for(parked, timeout=30, message="the replay episode held while suspended")
    give_up = parse_rfc3339(episode["giveUpAt"])
    # Suspended past the episode's whole window (the scenario's duration, not a wait).
    time.sleep(max(0.0, give_up - time.time()) + 3)
    assert replays_of(simulator, webhook_id) == {}
    assert "DeliveriesNotReplayed" not in hooks.event_reasons("orders")
    assert "DeliveriesReplayed" not in hooks.event_reasons("orders")
    assert parked() is not None
    hooks.patch("orders", {"spec": {"suspend": False}})
    event = hooks.wait_event("orders", "DeliveriesReplayed", timeout=60)
    assert "3 accepted" in event.message
    assert replays_of(simulator, webhook_id) == {e: [204] for e in gap}
    wait_for(
        lambda: receiver.received() == Counter(dict.fromkeys(gap, 1)),
        timeout=5,
        message="receiver's log",
    )
    assert "DeliveriesNotReplayed" not in hooks.event_reasons("orders")


def parse_rfc3339(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_request_after_adoption_never_resends_the_previous_owners_deliveries(
    hooks: Webhooks,
    simulator: Simulator,
    start_operator: OperatorFactory,
) -> None:
    """``replay-failed-since`` on an adopted webhook: the previous owner's failed
    deliveries (made for its url) are not re-sent; this resource's are."""
    from tests.integration.test_resilience import create_at_blooio

    start_operator(
        **{
            **REPLAY_ENV,
            "BLOOIO_REPLAY_GRACE_SECONDS": "1",
            "BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS": "60",
        }
    )
    down = FailingReceiver()
    try:
        previous = create_at_blooio(simulator, "https://previous.example.com/blooio")
        theirs = deliver(simulator, previous, down.url, 2)
        assert codes_of(simulator, previous, theirs) == [500, 500]
        made = time.time()
        wait_for(lambda: time.time() >= made + 1.0, timeout=5, message="the next second")
        hooks.create(
            "orders",
            {"url": URL, "eventTypes": ["message.received"]},
            annotations={"blooio.com/adopt-webhook-id": previous},
        )
        assert hooks.wait_ready("orders")["webhookId"] == previous
        hooks.wait_event("orders", "Adopted")
        adopted_at = hooks.status("orders")["secretRotatedAt"]
        mine = deliver(simulator, previous, down.url, 1)
        assert codes_of(simulator, previous, mine) == [500]
        down.status = 204  # the receiver is fixed; its owner asks for everything
        hooks.patch(
            "orders",
            {
                "metadata": {
                    "annotations": {"blooio.com/replay-failed-since": "2020-01-01T00:00:00Z"}
                }
            },
        )
        event = hooks.wait_event("orders", "DeliveriesReplayed", timeout=45)
    finally:
        down.stop()
    assert replays_of(simulator, previous) == {mine[0]: [204]}
    assert adopted_at in event.message
    last = hooks.status("orders")["deliveries"]["lastReplay"]
    assert (last["trigger"], last["since"], last["replayed"]) == ("request", adopted_at, 1)
