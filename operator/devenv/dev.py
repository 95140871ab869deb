"""``blooio-operator dev``: the whole local world in one command.

Starts the control plane (state in ``--state-dir``), the Blooio simulator as its own
process, applies the CRD and the examples, writes ``kubeconfig`` and a shell-sourceable
``env`` file, then runs the operator in this process until Ctrl-C. Everything started is
stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from blooio_operator.devenv.controlplane import (
    ControlPlane,
    ControlPlaneError,
    ensure_binary,
    find_source_dir,
)


class SimulatorProcess:
    """The simulator as a child process; ``url`` ends in ``/v4``."""

    def __init__(self, state_dir: Path, api_keys: list[str], extra: list[str] | None = None):
        self.state_dir = state_dir
        self.api_keys = api_keys
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.admin = ""

    def start(self, timeout: float = 30.0) -> SimulatorProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ready = self.state_dir / "simulator.json"
        ready.unlink(missing_ok=True)
        args = [sys.executable, "-m", "blooio_operator.simulator", "--port", "0"]
        for key in self.api_keys:
            args += ["--api-key", key]
        args += ["--ready-file", str(ready), *self.extra]
        log = (self.state_dir / "simulator.log").open("ab")
        env = {k: v for k, v in os.environ.items() if k != "BLOOIO_API_KEY"}
        try:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not ready.is_file():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "simulator exited early:\n"
                    + (self.state_dir / "simulator.log").read_text()[-3000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError("simulator did not start in time")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.url, self.admin = info["url"], info["admin"]
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kubectl(kubeconfig: Path, *args: str) -> None:
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], check=True)


def project_root() -> Path:
    return find_source_dir().parents[1]


def sigterm_is_ctrl_c() -> None:
    """Make SIGTERM (``timeout``, supervisors, IDE stop buttons) unwind like Ctrl-C.

    Python's default SIGTERM action ends the process at once, skipping every ``finally``,
    so the children started here (simulator, apiserver + etcd, controller-manager,
    operator) would be left running.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _wait_for_stop() -> None:
    """Block until SIGINT or SIGTERM (both arrive as KeyboardInterrupt)."""
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return


def run_controlplane(args: argparse.Namespace) -> int:
    sigterm_is_ctrl_c()
    binary = ensure_binary()
    if args.build_only:
        print(binary)
        return 0
    cp = ControlPlane(Path(args.state_dir).resolve(), binary=binary)
    try:
        cp.start()
        print(f"control plane ready: KUBECONFIG={cp.kubeconfig}", flush=True)
        _wait_for_stop()
    except KeyboardInterrupt:
        pass
    finally:
        cp.stop()
    return 0


def run_dev(args: argparse.Namespace) -> int:
    sigterm_is_ctrl_c()
    try:
        return _run_dev(args)
    except KeyboardInterrupt:
        return 0
    except (ControlPlaneError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"blooio-operator dev: {exc}", file=sys.stderr)
        return 1


def _run_dev(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    root = project_root()
    print("building/locating the control plane binary (first time: several minutes)...")
    binary = ensure_binary()
    cp = ControlPlane(state / "controlplane", binary=binary)
    sim = SimulatorProcess(state / "simulator", [args.api_key])
    try:
        cp.start()
        sim.start()
        kubeconfig = state / "kubeconfig"
        kubeconfig.write_text(cp.kubeconfig.read_text())
        env_file = state / "env"
        env_file.write_text(
            f"export KUBECONFIG={shlex.quote(str(kubeconfig))}\n"
            f"export BLOOIO_API_URL={shlex.quote(sim.url)}\n"
            f"export BLOOIO_API_KEY={shlex.quote(args.api_key)}\n"
            f"export BLOOIO_SIMULATOR_ADMIN={shlex.quote(sim.admin)}\n"
        )
        _kubectl(kubeconfig, "apply", "-k", str(root / "deploy" / "crds"))
        _kubectl(
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd/blooiowebhooks.blooio.com",
            "--timeout=60s",
        )
        examples = Path(args.examples)
        if not examples.is_absolute():
            examples = root / examples
        for name in ("namespace.yaml", "blooiowebhook.yaml"):
            if (examples / name).is_file():
                _kubectl(kubeconfig, "apply", "-f", str(examples / name))
        print(
            f"\nlocal world ready:\n  source {env_file}\n  kubectl get bwh -A\n"
            f"  simulator: {sim.url} (admin {sim.admin})\n",
            flush=True,
        )
        if args.no_operator:
            _wait_for_stop()
            return 0
        return _run_operator(kubeconfig, sim.url, args)
    finally:
        sim.stop()
        cp.stop()


def _run_operator(kubeconfig: Path, api_url: str, args: argparse.Namespace) -> int:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "BLOOIO_API_URL": api_url,
        "BLOOIO_API_KEY": args.api_key,
        "BLOOIO_DRIFT_INTERVAL_SECONDS": os.environ.get("BLOOIO_DRIFT_INTERVAL_SECONDS", "60"),
        "BLOOIO_SECRET_CHECK_INTERVAL_SECONDS": os.environ.get(
            "BLOOIO_SECRET_CHECK_INTERVAL_SECONDS", "10"
        ),
    }
    cmd = [sys.executable, "-m", "blooio_operator", "run", "--all-namespaces"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        if args.exit_when_ready:
            _kubectl(
                kubeconfig,
                "wait",
                "--for=condition=Ready",
                "bwh",
                "--all",
                "-A",
                "--timeout=120s",
            )
            _kubectl(kubeconfig, "get", "bwh", "-A")
            return 0
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
