"""`blooio-operator dev` from a clean state dir: everything starts and the example is Ready."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_dev_brings_up_the_example_ready(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "blooio_operator",
            "dev",
            "--state-dir",
            str(state),
            "--exit-when-ready",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "orders" in out.stdout
    env = (state / "env").read_text()
    for var in ("KUBECONFIG", "BLOOIO_API_URL", "BLOOIO_API_KEY"):
        assert f"export {var}=" in env
    kubeconfig = state / "kubeconfig"
    assert kubeconfig.is_file()
    # The processes are gone once dev exits: the API server no longer answers.
    probe = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "ns", "--request-timeout=3s"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0
