"""The storm's judge (tests/chaos/invariants.fleet_problems) counts what it should, and
nothing else: a converged fleet is all zero, each kind of defect is counted once."""

from __future__ import annotations

import copy
from typing import Any

from tests.chaos.invariants import FleetProblem, fleet_problems


def resource(name: str, webhook_id: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "generation": 2, "annotations": {}},
        "spec": {"url": f"https://x.example.com/{name}", **spec},
        "status": {
            "observedGeneration": 2,
            "webhookId": webhook_id,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}],
        },
    }


def webhook(webhook_id: str, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": webhook_id,
        "url": f"https://x.example.com/{name}",
        "event_types": ["*"],
        "channel_id": None,
        "status": "active",
        "signing_secret": f"whsec_{webhook_id}",
        **fields,
    }


def secret(webhook_id: str) -> dict[str, str]:
    return {"signing-secret": f"whsec_{webhook_id}", "webhook-id": webhook_id}


def world() -> tuple[list[dict[str, Any]], dict[Any, Any], list[dict[str, Any]]]:
    objects = [resource("a", "wh_a"), resource("b", "wh_b", suspend=True, eventTypes=["poll.*"])]
    hooks = [webhook("wh_a", "a"), webhook("wh_b", "b", status="disabled", event_types=["poll.*"])]
    secrets = {
        ("ns", "a-blooio-webhook"): secret("wh_a"),
        ("ns", "b-blooio-webhook"): secret("wh_b"),
    }
    return objects, secrets, hooks


def kinds(problems: list[FleetProblem]) -> list[str]:
    return sorted(p.kind for p in problems)


def test_a_converged_fleet_counts_nothing() -> None:
    objects, secrets, hooks = world()
    assert fleet_problems(objects, secrets, hooks, deleted=set()) == []


def test_each_defect_is_counted_once() -> None:
    objects, secrets, hooks = world()
    hooks.append(webhook("wh_a2", "a"))  # second webhook with a's url
    hooks.append(webhook("wh_gone", "gone"))  # nobody's url
    assert kinds(fleet_problems(objects, secrets, hooks, set())) == ["duplicates", "orphans"]

    objects, secrets, hooks = world()
    objects[1]["status"]["observedGeneration"] = 1
    assert kinds(fleet_problems(objects, secrets, hooks, set())) == ["not ready"]

    objects, secrets, hooks = world()
    objects[0]["status"]["pending"] = {"operation": "create"}
    assert kinds(fleet_problems(objects, secrets, hooks, set())) == ["not ready"]

    objects, secrets, hooks = world()
    hooks[1]["status"] = "active"  # suspended in the spec
    assert kinds(fleet_problems(objects, secrets, hooks, set())) == ["spec mismatches"]

    objects, secrets, hooks = world()
    hooks[0]["signing_secret"] = "whsec_rotated"
    assert kinds(fleet_problems(objects, secrets, hooks, set())) == ["lost secrets"]

    objects, secrets, hooks = world()
    objects[0]["metadata"]["annotations"]["blooio.com/rotate-secret"] = "t1"
    assert kinds(fleet_problems(objects, secrets, hooks, set())) == ["rotations not done"]
    objects[0]["status"]["rotateToken"] = "t1"
    assert fleet_problems(objects, secrets, hooks, set()) == []

    objects, secrets, hooks = world()
    objects.append(copy.deepcopy(objects[0]))
    objects[2]["metadata"]["name"] = "c"  # same spec as a, names a's webhook too
    secrets[("ns", "c-blooio-webhook")] = secret("wh_a")
    assert kinds(fleet_problems(objects, secrets, hooks, set())) == ["shared webhooks"]


def test_deleted_resources_must_be_gone_with_their_webhooks() -> None:
    objects, secrets, hooks = world()
    problems = fleet_problems(objects, secrets, hooks, deleted={("ns", "b")})
    # b is still listed (stuck finalizer) and its webhook is now nobody's.
    assert kinds(problems) == ["not deleted", "orphans"]
    gone = fleet_problems(objects[:1], secrets, hooks[:1], deleted={("ns", "b")})
    assert gone == []
