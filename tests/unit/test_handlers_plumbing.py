"""The kopf glue that is not a handler: the periodic sweep, the slim bodies it works
from, and where kopf keeps its last-handled configuration."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kopf
import pytest

from blooio_operator.handlers.diffbase import StatusDiffBase
from blooio_operator.handlers.registry import slim_body
from blooio_operator.handlers.sweep import periodic_sweep


def _body(name: str, *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": "shop",
        "name": name,
        "uid": f"uid-{name}",
        "generation": 2,
        "annotations": {"blooio.com/rotate-secret": "t1"},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        "resourceVersion": "7",
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": meta,
        "spec": {"url": "https://a.example.com/h"},
        "status": {"webhookId": "wh_1", "kopf": {"last-handled-configuration": "{}"}},
    }


def test_slim_body_keeps_what_a_check_needs_and_drops_the_rest() -> None:
    raw = _body("a")
    slim = slim_body(kopf.Body(raw))  # type: ignore[arg-type]
    assert slim == {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {
            "namespace": "shop",
            "name": "a",
            "uid": "uid-a",
            "generation": 2,
            "annotations": {"blooio.com/rotate-secret": "t1"},
        },
        "spec": {"url": "https://a.example.com/h"},
        "status": {"webhookId": "wh_1"},
    }
    raw["spec"]["url"] = "https://changed"
    assert slim["spec"]["url"] == "https://a.example.com/h"  # a copy, not a view


async def test_sweep_checks_every_resource_once_per_interval_spread_across_it() -> None:
    uids = ["a", "b", "c"]  # the sweep takes uids; each check looks its body up itself
    seen: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def check(uid: str) -> None:
        seen.append((uid, loop.time() - t0))

    task = asyncio.create_task(periodic_sweep(lambda: uids, check, interval=0.3))
    try:
        async with asyncio.timeout(5):
            while len(seen) < 6:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    names = [n for n, _ in seen]
    assert names[:6] == ["a", "b", "c", "a", "b", "c"]
    first_pass = [t for _, t in seen[:3]]
    assert first_pass[0] >= 0.3  # nothing before the first interval (as kopf's initial delay)
    assert first_pass[2] - first_pass[0] >= 0.15  # spread: 0.1 s apart, not all at once
    assert seen[3][1] - seen[0][1] >= 0.29  # the next pass one interval later


async def test_sweep_outlives_a_slow_check_and_cancels_cleanly() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def check(uid: str) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(periodic_sweep(lambda: ["a"], check, interval=0.05))
    async with asyncio.timeout(5):
        await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cancelled.is_set()  # in-flight checks do not outlive the sweep


def _essence(body: dict[str, Any]) -> str:
    return json.dumps({"spec": body["spec"]}, separators=(",", ":"))


def test_diffbase_is_written_to_the_status_only() -> None:
    storage = StatusDiffBase()
    body = kopf.Body(_body("a"))  # type: ignore[arg-type]
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence(spec={"url": "u"}))  # type: ignore[typeddict-unknown-key]
    assert dict(patch) == {
        "status": {"kopf": {"last-handled-configuration": '{"spec":{"url":"u"}}'}}
    }


@pytest.mark.parametrize("where", ["status", "annotation"])
def test_diffbase_is_read_from_the_status_or_an_earlier_versions_annotation(
    where: str,
) -> None:
    raw = _body("a")
    raw["status"] = {}
    raw["metadata"]["annotations"] = {"blooio.com/rotate-secret": "t1"}
    if where == "status":
        raw["status"]["kopf"] = {"last-handled-configuration": _essence(raw)}
    else:
        raw["metadata"]["annotations"]["operator.blooio.com/last-handled-configuration"] = (
            _essence(raw) + "\n"
        )
    storage = StatusDiffBase()
    body = kopf.Body(raw)  # type: ignore[arg-type]
    # Stored by an earlier version, without the generation: read as handled at this one.
    assert storage.fetch(body=body) == {"spec": raw["spec"], "metadata": {"generation": 2}}
    essence = storage.build(body=body)
    # Neither storage's own fields count as a change; user annotations do.
    assert essence.get("metadata", {}).get("annotations") == {"blooio.com/rotate-secret": "t1"}
    assert essence.get("metadata", {}).get("generation") == 2
    assert "status" not in essence


def test_a_spec_changed_and_changed_back_is_still_a_change() -> None:
    # Storm finding F4: gen 1 handled, gen 2 failed (a retry pending), gen 3 restores
    # gen 1's spec. Without the generation in the essence kopf saw no diff and dropped it.
    storage = StatusDiffBase()
    raw = _body("a")
    raw["metadata"]["annotations"] = {}
    raw["metadata"]["generation"] = 1
    handled = storage.build(body=kopf.Body(raw))  # type: ignore[arg-type]
    raw["status"] = {"kopf": {"last-handled-configuration": json.dumps(handled)}}
    raw["metadata"]["generation"] = 3
    body = kopf.Body(raw)  # type: ignore[arg-type]
    assert storage.fetch(body=body) != storage.build(body=body)
