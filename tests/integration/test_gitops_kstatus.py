"""Flux compatibility: the REAL kstatus library classifies live BlooioWebhooks correctly.

Flux's kustomize-controller (``wait: true`` / ``healthChecks``) judges custom resources
with ``sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute``. ``tests/kstatus`` is a tiny Go
program around exactly that function; it is built once per source hash into the cache
directory (like the control plane), and every object below is read from the API server
and piped to it as JSON, so what is tested is what Flux would see:

* ``Ready=True`` at the current generation -> Current;
* ``Reconciling=True`` (Blooio failing transiently) -> InProgress, never Failed;
* ``status.observedGeneration`` behind ``metadata.generation`` (spec edited while the
  operator is down) -> InProgress;
* ``Stalled=True`` (Blooio answered 422) -> Failed, and Current again once fixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from blooio_operator.devenv.controlplane import cache_dir
from blooio_operator.models.conditions import mark_ready, mark_reconciling, mark_stalled
from blooio_operator.models.resource import Condition
from tests.helpers import wait_for
from tests.integration.conftest import OperatorFactory, Simulator
from tests.integration.webhooks import Webhooks

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KSTATUS_SRC = ROOT / "tests" / "kstatus"
_SOURCES = ("go.mod", "go.sum", "main.go")
URL = "https://orders.shop.example.com/blooio"
NOW = "2026-01-01T00:00:00Z"


def kstatus_source_hash(src: Path = KSTATUS_SRC) -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode())
        digest.update((src / name).read_bytes())
    return digest.hexdigest()[:16]


def ensure_kstatus_binary(src: Path = KSTATUS_SRC) -> Path:
    """Build tests/kstatus into the cache (only if missing), like ``ensure_binary``."""
    env = os.environ.get("BLOOIO_KSTATUS_BIN")
    if env:
        return Path(env)
    target = cache_dir() / "kstatus" / kstatus_source_hash(src) / "kstatus"
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go 1.26+ is required to build tests/kstatus (go not on PATH)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    env_vars = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    cmd = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "."]
    out = subprocess.run(
        cmd, cwd=src, env=env_vars, capture_output=True, text=True, check=False, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"go build of tests/kstatus failed:\n{out.stderr[-4000:]}")
    tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def kstatus_bin() -> Path:
    try:
        return ensure_kstatus_binary()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"kstatus checker unavailable: {exc}")


def kstatus(binary: Path, obj: dict[str, Any]) -> dict[str, str]:
    """``status.Compute(obj)`` of the real kstatus library: ``{"status", "message"}``."""
    out = subprocess.run(
        [str(binary)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, f"kstatus failed: {out.stderr}"
    result: dict[str, str] = json.loads(out.stdout)
    return result


@pytest.fixture
def hooks(kube_api: k8s.ApiClient, namespace: str) -> Webhooks:
    return Webhooks(kube_api, namespace)


class Checker:
    """Reads a live BlooioWebhook and classifies it with kstatus."""

    def __init__(self, binary: Path, hooks: Webhooks) -> None:
        self.binary = binary
        self.hooks = hooks

    def __call__(self, name: str) -> dict[str, str]:
        obj = self.hooks.get(name)
        assert obj is not None, f"{name} does not exist"
        return kstatus(self.binary, obj)

    def wait(self, name: str, expected: str, timeout: float = 60) -> dict[str, str]:
        def probe() -> dict[str, str] | None:
            res = self(name)
            return res if res["status"] == expected else None

        return wait_for(probe, timeout=timeout, interval=0.3, message=f"kstatus {name}={expected}")


@pytest.fixture
def check(kstatus_bin: Path, hooks: Webhooks) -> Checker:
    return Checker(kstatus_bin, hooks)


# --- the checker itself, on objects built with the operator's own condition helpers ----


def _obj(conditions: list[Condition], *, generation: int = 1, observed: int | None = 1):
    status: dict[str, Any] = {"conditions": [c.dump() for c in conditions]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"name": "x", "namespace": "default", "generation": generation},
        "spec": {"url": URL},
        "status": status,
    }


def test_kstatus_rules_on_the_operators_condition_helpers(kstatus_bin: Path) -> None:
    ready = mark_ready([], "Synced", "Webhook wh_1 is active.", generation=1, now=NOW)
    reconciling = mark_reconciling(ready, "RemoteError", "Blooio 503.", generation=1, now=NOW)
    stalled = mark_stalled(ready, "ValidationFailed", "Blooio said 422.", generation=1, now=NOW)

    assert kstatus(kstatus_bin, _obj(ready))["status"] == "Current"
    res = kstatus(kstatus_bin, _obj(reconciling))
    assert res == {"status": "InProgress", "message": "Blooio 503."}
    res = kstatus(kstatus_bin, _obj(stalled))
    assert res == {"status": "Failed", "message": "Blooio said 422."}
    lagging = kstatus(kstatus_bin, _obj(ready, generation=2, observed=1))
    assert lagging["status"] == "InProgress"
    assert "generation" in lagging["message"].lower()
    # kstatus's gap: an object with no status at all has no signals and counts as
    # Current. The CRD's status default (observedGeneration 0) closes it for live
    # objects: see test_in_progress_before_the_operator_has_seen_it.
    fresh = _obj([], observed=None)
    del fresh["status"]
    assert kstatus(kstatus_bin, fresh)["status"] == "Current"


# --- live objects, operator and simulator running ------------------------------------


def test_in_progress_before_the_operator_has_seen_it(
    hooks: Webhooks, check: Checker, start_operator: OperatorFactory
) -> None:
    # Applied while no operator runs (not installed yet, down, crash-looping): Flux must
    # keep waiting, not report it healthy.
    hooks.create("orders", {"url": URL})
    obj = hooks.get("orders") or {}
    assert obj["status"] == {"observedGeneration": 0}, obj.get("status")
    res = check("orders")
    assert res["status"] == "InProgress", res
    assert "generation" in res["message"].lower(), res

    start_operator()
    hooks.wait_ready("orders", timeout=60)
    check.wait("orders", "Current")
    assert (hooks.get("orders") or {})["status"]["observedGeneration"] == 1


def test_current_when_ready(
    hooks: Webhooks, check: Checker, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})
    hooks.wait_ready("orders")
    res = check("orders")
    assert res["status"] == "Current", res


def test_in_progress_while_reconciling_then_current(
    hooks: Webhooks, check: Checker, simulator: Simulator, start_operator: OperatorFactory
) -> None:
    # Blooio fails every create with 503 until the fault is cleared.
    simulator.admin.add_fault("error", status=503, endpoints=["POST /webhooks"])
    start_operator()
    hooks.create("orders", {"url": URL})
    hooks.wait_condition("orders", "Reconciling", "True", timeout=60)
    wait_for(lambda: simulator.count("POST /webhooks") >= 2, timeout=60, message="retries")
    # Sampled across retries: a transient error is InProgress, never Failed.
    for _ in range(5):
        res = check("orders")
        assert res["status"] == "InProgress", res
        assert res["message"], res
    simulator.admin.clear_faults()
    hooks.wait_ready("orders", timeout=60)
    assert check("orders")["status"] == "Current"


def test_in_progress_while_observed_generation_lags(
    hooks: Webhooks, check: Checker, start_operator: OperatorFactory
) -> None:
    op = start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.received"]})
    hooks.wait_ready("orders")
    assert check("orders")["status"] == "Current"

    op.stop()
    hooks.patch("orders", {"spec": {"eventTypes": ["message.received", "poll.*"]}})
    obj = hooks.get("orders") or {}
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["observedGeneration"] == 1
    ready = hooks.condition("orders", "Ready")
    assert ready is not None
    assert ready["status"] == "True"  # stale, and kstatus must not trust it
    res = check("orders")
    assert res["status"] == "InProgress", res
    assert "generation" in res["message"].lower(), res

    op.start()
    hooks.wait_ready("orders", timeout=60)
    res = check.wait("orders", "Current")
    assert (hooks.get("orders") or {})["status"]["observedGeneration"] == 2


def test_failed_when_stalled_then_current_when_fixed(
    hooks: Webhooks, check: Checker, start_operator: OperatorFactory
) -> None:
    start_operator()
    hooks.create("orders", {"url": URL, "eventTypes": ["message.bogus"]})
    cond = hooks.wait_condition("orders", "Stalled", "True", reason="ValidationFailed")
    res = check("orders")
    assert res["status"] == "Failed", res
    assert res["message"] == cond["message"]

    hooks.patch("orders", {"spec": {"eventTypes": ["message.received"]}})
    hooks.wait_ready("orders", timeout=60)
    assert check.wait("orders", "Current")["status"] == "Current"
