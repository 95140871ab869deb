"""What must hold after any crash or fault, as checks on what users and Blooio see.

Shared by ``tests/integration/test_resilience.py`` and the chaos runner:

- exactly one webhook at Blooio for a live resource's URL, it is the one in
  ``status.webhookId`` (no duplicates), and it matches the spec;
- the Secret's ``signing-secret`` equals the simulator's *current* secret of that
  webhook (no lost secret);
- after deletion the resource disappears within a deadline (no stuck finalizer) and no
  webhook for its URL is left at Blooio (no orphan).

``fleet_problems`` checks the same for a whole fleet at once (the storm), from one
listing of the resources, their Secrets and Blooio's webhooks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
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


# --- the whole fleet at once (tests/chaos/storm.py) --------------------------------------------

ROTATE_ANNOTATION = "blooio.com/rotate-secret"
Key = tuple[str, str]  # (namespace, name)

FLEET_KINDS = (
    "duplicates",  # a webhook no live resource names, with the url of a live resource
    "orphans",  # a webhook no live resource names (deleted resources, old urls)
    "shared webhooks",  # a webhook named by more than one live resource
    "not deleted",  # a resource deleted by the run still present
    "not ready",  # a live resource not Ready at its generation, or with an intent
    "rotations not done",  # Ready, but status.rotateToken is not the annotation's token
    "spec mismatches",  # Ready, but Blooio's url/eventTypes/channel/status differ
    "lost secrets",  # Ready, but its Secret does not hold the webhook's current secret
)


@dataclass(frozen=True)
class FleetProblem:
    kind: str
    resource: str  # "namespace/name", or the webhook id for webhooks nobody names
    detail: str


def key_of(obj: Mapping[str, Any]) -> Key:
    return (str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"]))


def fleet_problems(
    objects: list[dict[str, Any]],
    secrets: Mapping[Key, Mapping[str, str]],
    webhooks: list[dict[str, Any]],
    deleted: Collection[Key],
) -> list[FleetProblem]:
    """Every invariant over the fleet, judged from outside: no problems means converged.

    ``objects``: the BlooioWebhooks as listed from the Kubernetes API (terminating ones
    too); ``secrets``: decoded Secret data by (namespace, name); ``webhooks``: the
    simulator's admin view (current signing secrets); ``deleted``: what the caller deleted.
    """
    problems: list[FleetProblem] = []
    live = [o for o in objects if key_of(o) not in deleted]
    for obj in objects:
        if key_of(obj) in deleted:
            meta = obj["metadata"]
            problems.append(
                FleetProblem(
                    "not deleted",
                    "/".join(key_of(obj)),
                    f"deletionTimestamp {meta.get('deletionTimestamp')}, "
                    f"finalizers {meta.get('finalizers')}",
                )
            )
    owners: dict[str, list[Key]] = defaultdict(list)
    for obj in live:
        webhook_id = (obj.get("status") or {}).get("webhookId")
        if webhook_id:
            owners[webhook_id].append(key_of(obj))
    spec_urls = {(o.get("spec") or {}).get("url"): key_of(o) for o in live}
    for hook in webhooks:
        named_by = owners.get(hook["id"], [])
        if len(named_by) > 1:
            who = ", ".join("/".join(k) for k in named_by)
            problems.append(FleetProblem("shared webhooks", hook["id"], f"named by {who}"))
        elif not named_by:
            owner = spec_urls.get(hook["url"])
            kind = "duplicates" if owner is not None else "orphans"
            detail = f"url {hook['url']}" + (f" (spec of {'/'.join(owner)})" if owner else "")
            problems.append(FleetProblem(kind, hook["id"], detail))
    by_id = {w["id"]: w for w in webhooks}
    for obj in live:
        problems += _resource_problems(obj, secrets, by_id)
    return problems


def _resource_problems(
    obj: dict[str, Any], secrets: Mapping[Key, Mapping[str, str]], by_id: Mapping[str, Any]
) -> list[FleetProblem]:
    key = key_of(obj)
    name = "/".join(key)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    is_ready = ready is not None and ready["status"] == "True"
    if not is_ready or status.get("observedGeneration") != generation or status.get("pending"):
        what = f"{ready['reason']}: {ready.get('message', '')}" if ready else "no Ready condition"
        detail = (
            f"Ready {ready['status'] if ready else None} ({what}); observedGeneration "
            f"{status.get('observedGeneration')} of {generation}; pending {status.get('pending')}"
        )
        return [FleetProblem("not ready", name, detail[:300])]
    problems: list[FleetProblem] = []
    token = (obj["metadata"].get("annotations") or {}).get(ROTATE_ANNOTATION)
    if token and token != status.get("rotateToken"):
        problems.append(
            FleetProblem("rotations not done", name, f"{token} != {status.get('rotateToken')}")
        )
    webhook_id = str(status.get("webhookId"))
    remote = by_id.get(webhook_id)
    if remote is None:
        return [*problems, FleetProblem("spec mismatches", name, f"{webhook_id} not at Blooio")]
    wrong = []
    if remote["url"] != spec.get("url"):
        wrong.append(f"url {remote['url']} != {spec.get('url')}")
    if set(remote["event_types"]) != set(spec.get("eventTypes") or ["*"]):
        wrong.append(f"eventTypes {remote['event_types']} != {spec.get('eventTypes')}")
    if remote["channel_id"] != spec.get("channelId"):
        wrong.append(f"channel {remote['channel_id']} != {spec.get('channelId')}")
    want_status = "disabled" if spec.get("suspend") else "active"
    if remote["status"] != want_status:
        wrong.append(f"status {remote['status']} != {want_status}")
    if wrong:
        problems.append(FleetProblem("spec mismatches", name, f"{webhook_id}: {'; '.join(wrong)}"))
    data = secrets.get((key[0], secret_name_of(obj)))
    if data is None:
        problems.append(FleetProblem("lost secrets", name, "no Secret"))
    elif data.get("webhook-id") != webhook_id:
        problems.append(
            FleetProblem("lost secrets", name, f"Secret names {data.get('webhook-id')}")
        )
    elif data.get("signing-secret") != remote["signing_secret"]:
        problems.append(FleetProblem("lost secrets", name, "not the current signing secret"))
    return problems
