"""Every simulator response in the scenarios below, checked against the provider's OpenAPI.

A recording httpx client captures each response the simulator sends; each is validated
strictly (declared properties present, nothing undeclared) against the schema the
OpenAPI file declares for its status. Undeclared error statuses (400 on list, 403, 405,
429, 5xx) are checked against the generic ``Error`` / ``AuthError`` envelopes. The test
also proves every declared (operation, status) pair was exercised, and that the
simulator accepts every request body the schema accepts.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from blooio_operator.simulator import Simulator
from blooio_operator.simulator.openapi import (
    OpenApiViolation,
    load_openapi,
    resolve_path_template,
    validate_request,
    validate_response,
)

KEY = "bl_live_conformance"
FORBIDDEN = "bl_live_conformance_forbidden"
URL = "https://hooks.example.com/blooio"
SPEC_PATH = Path(__file__).parents[2].parent / "shared/reference/blooio-v4-webhooks.openapi.json"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    path = Path(os.environ.get("BLOOIO_OPENAPI_FILE") or SPEC_PATH)
    if not path.is_file():
        pytest.skip(f"provider OpenAPI file not found at {path} (set BLOOIO_OPENAPI_FILE)")
    loaded = load_openapi(path)
    assert loaded is not None
    return loaded


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    body: Any


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator([KEY], forbidden_keys=[FORBIDDEN], seed=3)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def receiver_url() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


async def run_scenarios(sim: Simulator, receiver_url: str) -> list[Recorded]:
    recorded: list[Recorded] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        body = response.json() if response.content else None
        recorded.append(
            Recorded(response.request.method, response.url.path, response.status_code, body)
        )

    hooks = {"response": [record]}
    auth = {"Authorization": f"Bearer {KEY}"}
    async with (
        httpx.AsyncClient(base_url=sim.url, headers=auth, event_hooks=hooks, timeout=10) as api,
        httpx.AsyncClient(base_url=sim.url, event_hooks=hooks, timeout=10) as anon,
        httpx.AsyncClient(base_url=sim.admin_url, timeout=10) as admin,
    ):
        # Happy paths.
        created = [
            (await api.post("/webhooks", json={"url": f"https://h{i}.example.com/"})).json()["data"]
            for i in range(60)
        ]
        await api.post(
            "/webhooks",
            json={
                "url": URL,
                "event_types": ["message.*", "all"],
                "channel_id": "ch_a1b2c3d4",
                "channel_type": "blooio",
            },
        )
        first = (await api.get("/webhooks")).json()
        await api.get("/webhooks", params={"limit": 200, "cursor": first["next_cursor"]})
        wid = created[0]["id"]
        await api.get(f"/webhooks/{wid}")
        await api.patch(f"/webhooks/{wid}", json={"event_types": ["poll.*"], "status": "active"})
        await api.post(f"/webhooks/{wid}/secret/rotate")
        delivery = (
            await admin.post(
                f"/_sim/webhooks/{wid}/deliver",
                json={"event_type": "poll.voted", "target_url": receiver_url},
            )
        ).json()["data"]
        await admin.post(
            f"/_sim/webhooks/{wid}/deliver",
            json={"event_type": "poll.created", "target_url": "http://127.0.0.1:9/"},
        )
        await api.get(f"/webhooks/{wid}/deliveries")
        await api.get(f"/webhooks/{wid}/logs", params={"limit": 1})
        await api.post(f"/webhooks/{wid}/deliveries/{delivery['id']}/replay")
        await api.post(f"/webhooks/{wid}/logs/{delivery['id']}/replay")
        await sim.drain()
        await api.get(f"/webhooks/{wid}/deliveries")
        await api.delete(f"/webhooks/{created[1]['id']}")

        # Every declared error.
        missing = "wh_missing"
        for method, path in [
            ("GET", "/webhooks"),
            ("POST", "/webhooks"),
            ("GET", f"/webhooks/{wid}"),
            ("PATCH", f"/webhooks/{wid}"),
            ("DELETE", f"/webhooks/{wid}"),
            ("POST", f"/webhooks/{wid}/secret/rotate"),
            ("GET", f"/webhooks/{wid}/deliveries"),
            ("POST", f"/webhooks/{wid}/deliveries/{delivery['id']}/replay"),
        ]:
            await anon.request(method, path)
            await anon.request(method, path, headers={"Authorization": "Bearer nope"})
            await anon.request(method, path, headers={"Authorization": f"Bearer {FORBIDDEN}"})
        await api.get(f"/webhooks/{missing}")
        await api.patch(f"/webhooks/{missing}", json={"status": "disabled"})
        await api.delete(f"/webhooks/{missing}")
        await api.post(f"/webhooks/{missing}/secret/rotate")
        await api.get(f"/webhooks/{missing}/deliveries")
        await api.post(f"/webhooks/{missing}/deliveries/wdel_x/replay")
        await api.post(f"/webhooks/{wid}/deliveries/wdel_missing/replay")
        await api.post("/webhooks", content=b"{oops", headers={"Content-Type": "application/json"})
        await api.post("/webhooks", json={"url": "http://insecure.example.com/"})
        await api.post("/webhooks", json={"url": URL, "event_types": ["contact.*"]})
        await api.patch(f"/webhooks/{wid}", json={"status": "paused"})
        await api.patch(f"/webhooks/{wid}", content=b"[]")
        await api.get("/webhooks", params={"limit": 0})
        await api.get(f"/webhooks/{wid}/deliveries", params={"cursor": "bogus"})
        await api.put("/webhooks")
        await api.patch(f"/webhooks/{wid}", json={"status": "disabled"})
        await api.post(f"/webhooks/{wid}/deliveries/{delivery['id']}/replay")  # 400

        # Fault responses.
        sim.faults.error(503, count=1)
        await api.get("/webhooks")
        sim.faults.rate_limit(count=1, retry_after=1)
        await api.post("/webhooks", json={"url": URL})
    return recorded


async def test_every_response_matches_the_openapi_file(
    spec: dict[str, Any], sim: Simulator, receiver_url: str
) -> None:
    recorded = await run_scenarios(sim, receiver_url)
    assert len(recorded) > 100

    failures: list[str] = []
    for item in recorded:
        # A 405 has no operation of its own: check it as an undeclared error of GET.
        method = "GET" if item.status == 405 else item.method
        try:
            validate_response(spec, method, item.path, item.status, item.body, strict=True)
        except OpenApiViolation as exc:
            failures.append(f"{item.method} {item.path}: {exc}")
    assert not failures, "\n".join(failures)

    # Every status the document declares for every operation was produced at least once.
    produced = {
        (r.method.lower(), resolve_path_template(spec, r.path), str(r.status))
        for r in recorded
        if r.status != 405
    }
    declared = {
        (method, path, status)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        for status in operation.get("responses", {})
    }
    assert declared - produced == set()


async def test_strict_validation_would_catch_a_leaked_secret(spec: dict[str, Any]) -> None:
    webhook = {
        "id": "wh_1",
        "url": URL,
        "event_types": ["*"],
        "status": "active",
        "channel_id": None,
        "channel_type": None,
        "created_at": 1,
    }
    validate_response(spec, "GET", "/webhooks/wh_1", 200, {"data": webhook}, strict=True)
    with pytest.raises(OpenApiViolation, match="signing_secret"):
        validate_response(
            spec,
            "GET",
            "/webhooks/wh_1",
            200,
            {"data": {**webhook, "signing_secret": "whsec_x"}},
            strict=True,
        )


SCHEMA_VALID_CREATES: list[dict[str, Any]] = [
    {"url": URL},
    {"url": URL, "event_types": ["*"]},
    {"url": URL, "event_types": ["message", "status", "all", "safety.*", "typing.stopped"]},
    {"url": URL, "channel_type": "rcs_business"},
    {"url": URL, "channel_id": "ch_e5f6a7b8", "channel_type": "whatsapp"},
    {"url": URL, "extra_field_is_allowed_by_the_schema": True},
]


@pytest.mark.parametrize("body", SCHEMA_VALID_CREATES)
async def test_simulator_accepts_what_the_schema_accepts(
    spec: dict[str, Any], sim: Simulator, body: dict[str, Any]
) -> None:
    validate_request(spec, "POST", "/webhooks", body)
    async with httpx.AsyncClient(
        base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}
    ) as api:
        response = await api.post("/webhooks", json=body)
    assert response.status_code == 201, response.text


SCHEMA_INVALID_CREATES: list[dict[str, Any]] = [
    {},
    {"url": 1},
    {"url": URL, "event_types": "message.*"},
    {"url": URL, "event_types": [1]},
    {"url": URL, "channel_type": "amb"},
    {"url": URL, "channel_id": 5},
]


@pytest.mark.parametrize("body", SCHEMA_INVALID_CREATES)
async def test_simulator_rejects_what_the_schema_rejects(
    spec: dict[str, Any], sim: Simulator, body: dict[str, Any]
) -> None:
    with pytest.raises(OpenApiViolation):
        validate_request(spec, "POST", "/webhooks", body)
    async with httpx.AsyncClient(
        base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}
    ) as api:
        response = await api.post("/webhooks", json=body)
    assert response.status_code == 422, response.text
