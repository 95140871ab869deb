"""The registry that replaced kopf's indexes: slim bodies for the sweep, and claims."""

from __future__ import annotations

from typing import Any

from blooio_operator.handlers.registry import Registry


def body(uid: str, webhook_id: str | None = None) -> dict[str, Any]:
    status = {"webhookId": webhook_id} if webhook_id else {}
    return {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"namespace": "shop", "name": uid, "uid": uid, "managedFields": [{}]},
        "spec": {"url": "https://a.example.com/h"},
        "status": {**status, "kopf": {"x": 1}},
    }


def test_claims_are_other_resources_ids_only() -> None:
    reg = Registry()
    reg.observe(body("a", "wh_1"))
    reg.observe(body("b", "wh_2"))
    assert "wh_2" in reg.claimed_by_others("a")
    assert "wh_1" not in reg.claimed_by_others("a")  # its own
    assert "wh_9" not in reg.claimed_by_others("a")


def test_seeded_claims_hold_until_events_say_otherwise() -> None:
    reg = Registry()
    reg.seed_claims({"a": "wh_1", "b": "wh_2"})
    assert "wh_1" in reg.claimed_by_others("c")
    assert reg.uids() == []  # seeding gives claims, not bodies for the sweep
    reg.observe(body("a", "wh_3"))  # a moved to another webhook
    assert "wh_1" not in reg.claimed_by_others("c")
    assert "wh_3" in reg.claimed_by_others("c")
    reg.seed_claims({"a": "wh_1"})  # a late seed never overrides an event
    assert "wh_1" not in reg.claimed_by_others("c")


def test_forget_releases_body_and_claim() -> None:
    reg = Registry()
    reg.observe(body("a", "wh_1"))
    reg.observe(body("b", "wh_1"))  # two holders (e.g. a contested adoption)
    reg.forget("a")
    assert reg.body("a") is None
    assert reg.holders("wh_1") == frozenset({"b"})
    reg.forget("b")
    assert reg.holders("wh_1") == frozenset()
    assert len(reg) == 0


def test_bodies_are_slim_copies() -> None:
    reg = Registry()
    raw = body("a", "wh_1")
    reg.observe(raw)
    slim = reg.body("a")
    assert slim is not None
    assert "managedFields" not in slim["metadata"]
    assert "kopf" not in slim["status"]
    raw["spec"]["url"] = "https://changed"
    assert slim["spec"]["url"] == "https://a.example.com/h"


def test_the_registry_keeps_a_bounded_body_whatever_tenants_write() -> None:
    """Issue 19: the registry kept every annotation (kubectl's last-applied-configuration
    included), the whole spec and any foreign status field: 520 resources with 500 KiB of
    annotations each reached the Deployment's memory limit."""
    import json

    from blooio_operator.handlers.registry import Registry, slim_body

    big = "x" * 500_000
    body = {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {
            "namespace": "shop",
            "name": "orders",
            "uid": "u1",
            "generation": 1,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": big,
                "blooio.com/rotate-secret": big,
                "blooio.com/adopt-webhook-id": "wh_1",
            },
            "managedFields": [{"big": big}],
        },
        "spec": {
            "url": "https://a.example.com/x",
            "secret": {"name": "s", "annotations": {"a": big}, "labels": {"b": "c"}},
        },
        "status": {"webhookId": "wh_1", "rotateToken": big, "junk": big, "kopf": {"x": big}},
    }
    slim = slim_body(body)
    assert len(json.dumps(slim)) < 2_000
    assert slim["metadata"]["annotations"]["blooio.com/adopt-webhook-id"] == "wh_1"
    # A long rotate token and the status that acted on it still compare equal.
    assert (
        slim["metadata"]["annotations"]["blooio.com/rotate-secret"] == slim["status"]["rotateToken"]
    )
    assert slim["spec"]["secret"] == {"name": "s"}
    assert "junk" not in slim["status"]
    registry = Registry()
    registry.observe(body)
    assert registry.holders("wh_1") == frozenset({"u1"})
