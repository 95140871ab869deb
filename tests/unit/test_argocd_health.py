"""The shipped Argo CD health check, run by a real Lua interpreter.

Argo CD evaluates health scripts with gopher-lua (Lua 5.1 semantics), with the
resource as the global `obj` and only the safe standard libraries; the same is done
here with lupa's Lua 5.1 build (plus a modern Lua to catch version-specific code).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LUA_FILE = ROOT / "deploy" / "argocd" / "blooiowebhook-health.lua"
CM_PATCH = ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml"
HEALTH_KEY = "resource.customizations.health.blooio.com_BlooioWebhook"


def lua_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"lupa.{name}")
    except ImportError:  # pragma: no cover - every lupa wheel ships these builds
        pytest.fail(f"lupa.{name} is not available")


@pytest.fixture(params=["lua51", "lua54"])
def health(request: pytest.FixtureRequest) -> Any:
    """health(obj) -> {"status": ..., "message": ...} as Argo CD would compute it."""
    lupa = lua_module(request.param)
    script = LUA_FILE.read_text()

    def run(obj: dict[str, Any]) -> dict[str, Any]:
        lua = lupa.LuaRuntime(unpack_returned_tuples=True)
        g = lua.globals()
        # Argo CD's sandbox has no io/os/package/debug; the script must not need them.
        for lib in ("io", "os", "package", "debug", "require", "dofile", "loadfile"):
            g[lib] = None
        g.obj = lua.table_from(obj, recursive=True)
        hs = lua.execute(script)
        return {"status": hs["status"], "message": hs["message"]}

    return run


def resource(
    *,
    generation: int = 2,
    status: dict[str, Any] | None = None,
    suspend: bool = False,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"name": "orders", "namespace": "shop", "generation": generation},
        "spec": {"url": "https://orders.shop.example.com/blooio", "suspend": suspend},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(ctype: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 2,
    }


def status(*conditions: dict[str, Any], observed: int = 2) -> dict[str, Any]:
    return {
        "observedGeneration": observed,
        "webhookId": "wh_123",
        "remoteStatus": "active",
        "secretName": "orders-blooio-webhook",
        "conditions": list(conditions),
    }


READY = cond("Ready", "True", "Synced", "Webhook wh_123 is active")
NOT_READY = cond("Ready", "False", "Creating", "Creating the webhook at Blooio")
RECONCILING = cond("Reconciling", "True", "RateLimited", "Blooio answered 429; retrying in 8s")
STALLED = cond("Stalled", "True", "ValidationFailed", "Blooio rejected the spec: bad event type")


def test_no_status_is_progressing(health: Any) -> None:
    assert health(resource())["status"] == "Progressing"


def test_the_crds_default_status_is_progressing(health: Any) -> None:
    # What the API server shows before the operator's first write (the CRD's default).
    hs = health(resource(status={"observedGeneration": 0}))
    assert hs["status"] == "Progressing"
    assert "blooio-operator" in hs["message"]


def test_status_without_observed_generation_is_progressing(health: Any) -> None:
    s = status(READY)
    del s["observedGeneration"]
    assert health(resource(status=s))["status"] == "Progressing"


def test_stale_generation_is_progressing_even_if_ready(health: Any) -> None:
    hs = health(resource(generation=3, status=status(READY, observed=2)))
    assert hs["status"] == "Progressing"
    assert "latest spec" in hs["message"]


def test_stale_generation_is_progressing_even_if_stalled(health: Any) -> None:
    """A new spec may fix what stalled the old one: wait for the operator."""
    hs = health(resource(generation=3, status=status(STALLED, NOT_READY, observed=2)))
    assert hs["status"] == "Progressing"


def test_stalled_is_degraded_with_the_message(health: Any) -> None:
    hs = health(resource(status=status(NOT_READY, STALLED)))
    assert hs == {"status": "Degraded", "message": STALLED["message"]}


def test_stalled_without_message_names_the_reason(health: Any) -> None:
    hs = health(resource(status=status(cond("Stalled", "True", "CredentialsMissing"))))
    assert hs["status"] == "Degraded"
    assert "CredentialsMissing" in hs["message"]


def test_stalled_wins_over_ready(health: Any) -> None:
    assert health(resource(status=status(READY, STALLED)))["status"] == "Degraded"


def test_ready_is_healthy(health: Any) -> None:
    hs = health(resource(status=status(READY, cond("Reconciling", "False", "Synced"))))
    assert hs == {"status": "Healthy", "message": READY["message"]}


def test_ready_and_suspended_is_suspended(health: Any) -> None:
    s = status(READY)
    s["remoteStatus"] = "disabled"
    hs = health(resource(status=s, suspend=True))
    assert hs["status"] == "Suspended"
    assert "suspend" in hs["message"]


def test_suspend_requested_but_not_ready_is_progressing(health: Any) -> None:
    hs = health(resource(status=status(NOT_READY, RECONCILING), suspend=True))
    assert hs["status"] == "Progressing"


def test_reconciling_is_progressing_with_its_message(health: Any) -> None:
    hs = health(resource(status=status(NOT_READY, RECONCILING)))
    assert hs == {"status": "Progressing", "message": RECONCILING["message"]}


def test_ready_false_without_reconciling_is_progressing(health: Any) -> None:
    hs = health(resource(status=status(NOT_READY)))
    assert hs == {"status": "Progressing", "message": NOT_READY["message"]}


def test_ready_unknown_is_progressing(health: Any) -> None:
    hs = health(resource(status=status(cond("Ready", "Unknown", "Reconciling"))))
    assert hs["status"] == "Progressing"


def test_status_without_conditions_is_progressing(health: Any) -> None:
    assert health(resource(status={"observedGeneration": 2}))["status"] == "Progressing"


def test_stalled_false_is_not_degraded(health: Any) -> None:
    s = status(READY, cond("Stalled", "False", "Synced"))
    assert health(resource(status=s))["status"] == "Healthy"


def test_cm_patch_inlines_the_same_script() -> None:
    (cm,) = [d for d in yaml.safe_load_all(CM_PATCH.read_text()) if d]
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][HEALTH_KEY] == LUA_FILE.read_text()
