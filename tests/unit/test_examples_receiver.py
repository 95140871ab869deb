"""examples/receiver/receiver.py: signature verification, and a real delivery.

The end-to-end test runs the receiver as users would (a process reading its secret
from a file named by BLOOIO_SIGNING_SECRET_FILE) and has the Blooio simulator deliver
signed events to it, before and after the secret changes.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
RECEIVER = ROOT / "examples" / "receiver" / "receiver.py"

# blooio-api.md §4: computed independently of any implementation.
SECRET = "whsec_test_secret"
T = 1700000000
BODY = b'{"id":"evt_123","type":"message.received"}'
V1 = "f4544645bd4887571db0b498c3ad114c3316b8225d8a3df45664143ca6fd942b"
API_KEY = "bl_live_receiver_test"


def load_receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_receiver", RECEIVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


receiver = load_receiver()
verify = receiver.verify_signature


def test_reference_vector() -> None:
    assert verify(SECRET, f"t={T},v1={V1}", BODY, tolerance=300, now=T)
    # The vector really is HMAC-SHA256(secret, "<t>." + body), hex.
    mac = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert mac == V1


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300])
def test_within_tolerance(offset: int) -> None:
    assert verify(SECRET, f"t={T},v1={V1}", BODY, tolerance=300, now=T + offset)


@pytest.mark.parametrize("offset", [-301, 301, 86400])
def test_outside_tolerance(offset: int) -> None:
    assert not verify(SECRET, f"t={T},v1={V1}", BODY, tolerance=300, now=T + offset)


@pytest.mark.parametrize(
    ("secret", "header", "body"),
    [
        ("whsec_other", f"t={T},v1={V1}", BODY),
        (SECRET, f"t={T},v1={V1}", BODY + b" "),
        (SECRET, f"t={T + 1},v1={V1}", BODY),
        (SECRET, f"v1={V1}", BODY),
        (SECRET, f"t={T}", BODY),
        (SECRET, f"t=abc,v1={V1}", BODY),
        (SECRET, f"t={T},v0={V1}", BODY),
        (SECRET, f"t={T},v1={V1[:-1]}", BODY),
        (SECRET, "", BODY),
    ],
    ids=[
        "wrong-secret",
        "tampered-body",
        "tampered-timestamp",
        "no-timestamp",
        "no-signature",
        "bad-timestamp",
        "unknown-scheme",
        "truncated",
        "empty",
    ],
)
def test_rejects(secret: str, header: str, body: bytes) -> None:
    assert not verify(secret, header, body, tolerance=300, now=T)


def test_accepts_any_matching_v1_and_spaces() -> None:
    header = f"t={T}, v1={'0' * 64}, v1={V1.upper()}"
    assert verify(SECRET, header, BODY, tolerance=300, now=T)


def test_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(receiver.hmac, "compare_digest", spy)
    assert verify(SECRET, f"t={T},v1={V1}", BODY, tolerance=300, now=T)
    assert calls == [(V1, V1)]


# --- end to end: the simulator delivers to the running receiver -------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "blooio" / "signing-secret"
    path.parent.mkdir()
    return path


@pytest.fixture
def receiver_url(secret_file: Path) -> Iterator[str]:
    env = {**os.environ, "BLOOIO_SIGNING_SECRET_FILE": str(secret_file)}
    env.update(HOST="127.0.0.1", PORT="0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(RECEIVER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "listening on host:port", printed once bound
        assert line.startswith("listening on "), line
        yield f"http://{line.split()[-1]}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_stops_on_sigterm(secret_file: Path) -> None:
    # As PID 1 in a pod, SIGTERM is ignored unless handled: the handler makes it stop at
    # once, exit code 0 (an unhandled SIGTERM would show as -15 here).
    env = {**os.environ, "BLOOIO_SIGNING_SECRET_FILE": str(secret_file)}
    env.update(HOST="127.0.0.1", PORT="0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(RECEIVER)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("listening on ")
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "stopped" in out


def load_simulator() -> Any:
    try:
        from blooio_operator.simulator import Simulator
    except ImportError:  # the package may re-export it later; the class lives here
        from blooio_operator.simulator.server import Simulator
    return Simulator


@pytest.fixture
async def simulator() -> AsyncIterator[Any]:
    sim = load_simulator()(api_keys=[API_KEY])
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def deliver(http: httpx.AsyncClient, sim: Any, webhook_id: str, target: str) -> int:
    resp = await http.post(
        f"{sim.admin_url}/_sim/webhooks/{webhook_id}/deliver",
        json={"event_type": "message.received", "target_url": target},
    )
    resp.raise_for_status()
    delivery = resp.json()["data"]
    assert delivery["error"] is None, delivery["error"]
    status: int = delivery["response_status"]
    return status


async def test_simulator_delivery_verified_and_secret_rotation(
    simulator: Any, receiver_url: str, secret_file: Path
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(
            f"{simulator.url}/webhooks",
            headers=auth,
            json={"url": "https://orders.shop.example.com/blooio", "event_types": ["message.*"]},
        )
        assert created.status_code == 201, created.text
        webhook = created.json()["data"]
        # What the operator does: the one-time secret goes to the mounted file.
        secret_file.write_text(webhook["signing_secret"])

        assert await deliver(http, simulator, webhook["id"], receiver_url) == 204

        # Someone else's secret (or a stale file): refused.
        secret_file.write_text("whsec_not_the_right_one")
        assert await deliver(http, simulator, webhook["id"], receiver_url) == 401

        # Rotation: Blooio signs with the new secret at once; the old file is refused
        # until the new secret lands in it, then accepted without a restart.
        secret_file.write_text(webhook["signing_secret"])
        rotated = await http.post(
            f"{simulator.url}/webhooks/{webhook['id']}/secret/rotate", headers=auth
        )
        assert rotated.status_code == 200, rotated.text
        assert await deliver(http, simulator, webhook["id"], receiver_url) == 401
        secret_file.write_text(rotated.json()["data"]["signing_secret"] + "\n")
        assert await deliver(http, simulator, webhook["id"], receiver_url) == 204

        # No secret mounted at all: 503, so Blooio retries later.
        secret_file.unlink()
        assert await deliver(http, simulator, webhook["id"], receiver_url) == 503
