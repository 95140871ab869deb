"""What must hold after any crash or fault, as checks on what users and Blooio see.

Shared by ``tests/integration/test_resilience.py`` and the chaos runner:

- exactly one webhook at Blooio for a live resource's URL, it is the one in
  ``status.webhookId`` (no duplicates), and it matches the spec;
- the Secret's ``signing-secret`` equals the simulator's *current* secret of that
  webhook (no lost secret);
- after deletion the resource disappears within a deadline (no stuck finalizer) and no
  webhook for its URL is left at Blooio (no orphan).
"""

from __future__ import annotations

from typing import Any, Protocol

from tests.helpers import wait_for
from tests.integration.webhooks import Webhooks


class SimulatorView(Protocol):
    def webhooks(self) -> list[dict[str, Any]]: ...


def remote_for(sim: SimulatorView, url: str) -> list[dict[str, Any]]:
    """The simulator's webhooks (admin view, with the current secret) for ``url``."""
    return [w for w in sim.webhooks() if w["url"] == url]


def secret_name_of(obj: dict[str, Any]) -> str:
    spec = obj.get("spec") or {}
    return str(
        (spec.get("secret") or {}).get("name") or f"{obj['metadata']['name']}-blooio-webhook"
    )


def converged_state(hooks: Webhooks, sim: SimulatorView, name: str, url: str) -> dict[str, Any]:
    """Check every invariant once; return the status, or raise AssertionError saying why."""
    obj = hooks.get(name)
    assert obj is not None, f"{name} does not exist"
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    assert ready is not None, f"{name} has no Ready condition"
    assert ready["status"] == "True", f"{name} not Ready: {ready}"
    assert status.get("observedGeneration") == generation, (
        f"{name} observedGeneration {status.get('observedGeneration')} != {generation}"
    )
    assert not status.get("pending"), f"{name} still has an intent: {status.get('pending')}"
    webhook_id = status.get("webhookId")
    remote = remote_for(sim, url)
    ids = sorted(w["id"] for w in remote)
    assert len(remote) == 1, f"{len(remote)} webhooks at Blooio for {url}: {ids}"
    assert remote[0]["id"] == webhook_id, f"status.webhookId {webhook_id} but Blooio has {ids}"
    spec = obj.get("spec") or {}
    assert set(remote[0]["event_types"]) == set(spec.get("eventTypes") or ["*"]), (
        f"Blooio has eventTypes {remote[0]['event_types']}, spec {spec.get('eventTypes')}"
    )
    assert remote[0]["channel_id"] == spec.get("channelId"), (
        f"Blooio has channel {remote[0]['channel_id']}, spec {spec.get('channelId')}"
    )
    want_status = "disabled" if spec.get("suspend") else "active"
    assert remote[0]["status"] == want_status, f"Blooio status {remote[0]['status']}"
    data = hooks.secret_data(secret_name_of(obj))
    assert data.get("webhook-id") == webhook_id, (
        f"Secret names webhook {data.get('webhook-id')!r}, status {webhook_id!r}"
    )
    assert data.get("signing-secret") == remote[0]["signing_secret"], (
        "Secret's signing-secret is not the current signing secret at Blooio"
    )
    return dict(status)


def wait_converged(
    hooks: Webhooks, sim: SimulatorView, name: str, url: str, *, timeout: float = 30
) -> dict[str, Any]:
    """Wait until every invariant holds for ``name`` (the last failure is reported)."""
    return wait_for(
        lambda: converged_state(hooks, sim, name, url),
        timeout=timeout,
        interval=0.2,
        message=f"{name} converged (Ready, one webhook, current secret)",
    )


def wait_deleted(
    hooks: Webhooks, sim: SimulatorView, name: str, url: str, *, timeout: float = 30
) -> None:
    """After a delete: the resource is gone (finalizer released) and Blooio has no webhook."""
    wait_for(lambda: hooks.get(name) is None, timeout=timeout, message=f"{name} deleted")
    left = [w["id"] for w in remote_for(sim, url)]
    assert not left, f"orphaned webhooks at Blooio for {url} after deleting {name}: {left}"


def delete_and_verify(
    hooks: Webhooks, sim: SimulatorView, name: str, url: str, *, timeout: float = 30
) -> None:
    hooks.delete(name)
    wait_deleted(hooks, sim, name, url, timeout=timeout)
