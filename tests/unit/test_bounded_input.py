"""Tenant input the operator records or keeps is bounded (issue 19, item 3)."""

from __future__ import annotations

import yaml

from blooio_operator.reconcile import lifecycle
from blooio_operator.reconcile.secrets import MAX_TOKEN_LENGTH, annotation_token
from tests.unit.fakes import World
from tests.unit.test_manifests import ROOT

CRD = ROOT / "deploy" / "crds" / "blooio.com_blooiowebhooks.yaml"


async def test_a_long_rotate_token_rotates_once_and_is_recorded_as_its_digest() -> None:
    world = World()
    await world.ready()
    token = "t" * 300_000
    world.set_annotation("blooio.com/rotate-secret", token)
    await world.reconcile()
    assert world.blooio.count("rotate_secret") == 1
    recorded = world.status()["rotateToken"]
    assert recorded == annotation_token(token)
    assert recorded.startswith("sha256:")
    assert len(recorded) <= MAX_TOKEN_LENGTH
    assert lifecycle.is_settled(world.ctx())  # the same token: nothing more to do
    world.reset_counters()
    await world.reconcile()
    assert world.blooio.count("rotate_secret") == 0


def test_short_tokens_are_recorded_as_they_are() -> None:
    assert annotation_token("2026-01-01") == "2026-01-01"


def test_every_free_form_value_of_the_crd_is_bounded() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    unbounded: list[str] = []

    def walk(node: dict, path: str) -> None:  # type: ignore[type-arg]
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(path)
        if kind == "array":
            if "maxItems" not in node:
                unbounded.append(path)
            walk(node["items"], path + "[]")
        if kind == "object":
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                if "maxProperties" not in node:
                    unbounded.append(path)
                walk(extra, path + ".*")
            for key, child in (node.get("properties") or {}).items():
                walk(child, f"{path}.{key}")

    walk(schema["properties"]["spec"], "spec")
    walk(schema["properties"]["status"], "status")
    assert unbounded == []
    # The operator writes rotate tokens as annotation_token() does: it must fit.
    status = schema["properties"]["status"]["properties"]
    assert status["rotateToken"]["maxLength"] >= len("sha256:") + 64
    assert status["rotateToken"]["maxLength"] >= MAX_TOKEN_LENGTH
