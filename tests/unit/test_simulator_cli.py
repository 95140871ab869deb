"""The simulator as its own process: options, ready file, SIGTERM, and quiet logs."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from blooio_operator.simulator.cli import add_arguments

KEY = "bl_live_cli_key_do_not_log"

Spawn = Callable[..., "subprocess.Popen[str]"]


def wait_for_file(
    path: Path, proc: subprocess.Popen[str], timeout: float = 20
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, object] = json.loads(path.read_text())
            return data
        if proc.poll() is not None:
            raise AssertionError(f"simulator exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("ready file never appeared")


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "blooio_operator.simulator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_runs_writes_ready_file_and_stops_on_sigterm(spawn: Spawn, tmp_path: Path) -> None:
    ready = tmp_path / "state" / "sim.json"
    proc = spawn(
        "--port",
        "0",
        "--api-key",
        KEY,
        "--ready-file",
        str(ready),
        "--latency-ms",
        "1",
        "--channel",
        "ch_x=twilio",
    )
    info = wait_for_file(ready, proc)
    assert set(info) == {"url", "admin", "pid"}
    assert info["pid"] == proc.pid
    assert str(info["url"]).endswith("/v4")
    assert str(info["url"]).startswith(str(info["admin"]))

    headers = {"Authorization": f"Bearer {KEY}"}
    created = httpx.post(
        f"{info['url']}/webhooks",
        json={"url": "https://h.example.com/", "channel_id": "ch_x", "channel_type": "twilio"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["data"]["signing_secret"]
    default_channel = httpx.post(
        f"{info['url']}/webhooks",
        json={"url": "https://h.example.com/", "channel_id": "ch_a1b2c3d4"},
        headers=headers,
    )
    assert default_channel.status_code == 422  # --channel replaces the defaults
    assert (
        httpx.get(f"{info['admin']}/_sim/webhooks").json()["data"][0]["id"]
        == (created.json()["data"]["id"])
    )

    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert not ready.exists()
    assert "listening on" in stderr
    assert KEY not in stderr
    assert secret not in stderr


def test_api_key_from_environment(spawn: Spawn, tmp_path: Path) -> None:
    ready = tmp_path / "sim.json"
    proc = spawn("--ready-file", str(ready), env={"BLOOIO_API_KEY": KEY})
    info = wait_for_file(ready, proc)
    response = httpx.get(f"{info['url']}/webhooks", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert KEY not in stderr


def test_refuses_to_start_without_a_key(spawn: Spawn) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLOOIO_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "blooio_operator.simulator", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "API key" in proc.stderr


def test_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--api-key", "a", "--api-key", "b", "--channel", "ch_1=rcs_business", "--seed", "3"]
    )
    assert args.api_keys == ["a", "b"]
    assert args.channels == [("ch_1", "rcs_business")]
    assert (args.host, args.port, args.seed, args.latency_ms) == ("127.0.0.1", 0, 3, 0.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--channel", "ch_1=amb"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--channel", "nonsense"])
