"""The simulator's ``/_sim`` admin API and the sync ``SimulatorAdmin`` client.

``SimulatorAdmin`` is synchronous, so against the in-process simulator its calls run in a
worker thread (``asyncio.to_thread``) to keep the event loop serving.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from blooio_operator.simulator import Simulator, SimulatorAdmin, api_key_fingerprint
from blooio_operator.simulator.admin import SimulatorAdminError, admin_root

KEY = "bl_live_admin_key_one"
OTHER_KEY = "bl_live_admin_key_two"
URL = "https://hooks.example.com/blooio"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator([KEY, OTHER_KEY])
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=sim.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
async def admin(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.admin_url, timeout=10) as client:
        yield client


async def create(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/webhooks", json={"url": URL, **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_admin_webhooks_show_secret_and_key_fingerprint_never_the_key(
    sim: Simulator, api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    mine = await create(api)
    async with httpx.AsyncClient(
        base_url=sim.url, headers={"Authorization": f"Bearer {OTHER_KEY}"}
    ) as other:
        theirs = await create(other)
    rotated = (await api.post(f"/webhooks/{mine['id']}/secret/rotate")).json()["data"]

    response = await admin.get("/_sim/webhooks")
    listed = response.json()["data"]
    assert [w["id"] for w in listed] == [mine["id"], theirs["id"]]
    assert listed[0]["signing_secret"] == rotated["signing_secret"]  # the current one
    assert listed[0]["api_key_id"] == api_key_fingerprint(KEY)
    assert listed[1]["api_key_id"] == api_key_fingerprint(OTHER_KEY)
    assert listed[0]["api_key_id"] != listed[1]["api_key_id"]
    assert KEY not in response.text
    assert OTHER_KEY not in response.text

    single = (await admin.get(f"/_sim/webhooks/{mine['id']}")).json()["data"]
    assert single == listed[0]


async def test_behind_the_back_patch_and_delete_are_not_api_calls(
    sim: Simulator, api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    created = await create(api)
    await admin.post("/_sim/calls/reset")

    patched = await admin.patch(
        f"/_sim/webhooks/{created['id']}",
        json={
            "url": "https://drifted.example.com/",
            "status": "disabled",
            "event_types": ["poll.*"],
        },
    )
    assert patched.status_code == 200
    assert sim.calls.to_dict() == {"calls": [], "counts": {}}

    seen = (await api.get(f"/webhooks/{created['id']}")).json()["data"]
    assert (seen["url"], seen["status"], seen["event_types"]) == (
        "https://drifted.example.com/",
        "disabled",
        ["poll.*"],
    )

    assert (await admin.delete(f"/_sim/webhooks/{created['id']}")).status_code == 200
    assert (await api.get(f"/webhooks/{created['id']}")).status_code == 404
    assert (await admin.delete(f"/_sim/webhooks/{created['id']}")).status_code == 404
    assert sim.calls.counts == {"GET /webhooks/{id}": 2}


@pytest.mark.parametrize(
    "body",
    [{"id": "wh_other"}, {"status": "paused"}, {"event_types": "poll.*"}, {"signing_secret": ""}],
)
async def test_behind_the_back_patch_rejects_bad_changes(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    created = await create(api)
    response = await admin.patch(f"/_sim/webhooks/{created['id']}", json=body)
    assert response.status_code == 400


async def test_calls_log_and_counts(
    sim: Simulator, api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    created = await create(api)
    await api.get("/webhooks", params={"limit": 5})
    await api.patch(f"/webhooks/{created['id']}", json={"status": "disabled"})
    await api.get(f"/webhooks/{created['id']}/logs")
    await api.post(f"/webhooks/{created['id']}/secret/rotate")
    await api.delete(f"/webhooks/{created['id']}")
    async with httpx.AsyncClient(base_url=sim.url) as anonymous:
        await anonymous.get("/webhooks")
    await admin.get("/_sim/webhooks")  # admin calls are not logged

    body = (await admin.get("/_sim/calls")).json()
    calls = body["calls"]
    assert [(c["method"], c["endpoint"], c["status"]) for c in calls] == [
        ("POST", "POST /webhooks", 201),
        ("GET", "GET /webhooks", 200),
        ("PATCH", "PATCH /webhooks/{id}", 200),
        ("GET", "GET /webhooks/{id}/deliveries", 200),
        ("POST", "POST /webhooks/{id}/secret/rotate", 200),
        ("DELETE", "DELETE /webhooks/{id}", 200),
        ("GET", "GET /webhooks", 401),
    ]
    assert calls[1]["path"] == "/v4/webhooks"
    assert calls[1]["query"] == "limit=5"
    assert calls[3]["path"] == f"/v4/webhooks/{created['id']}/logs"
    assert calls[0]["api_key_id"] == api_key_fingerprint(KEY)
    assert calls[-1]["api_key_id"] is None
    assert all(isinstance(c["ts"], float) for c in calls)
    assert calls == sorted(calls, key=lambda c: c["ts"])
    assert body["counts"] == {
        "POST /webhooks": 1,
        "GET /webhooks": 2,
        "PATCH /webhooks/{id}": 1,
        "GET /webhooks/{id}/deliveries": 1,
        "POST /webhooks/{id}/secret/rotate": 1,
        "DELETE /webhooks/{id}": 1,
    }
    assert KEY not in json.dumps(body)

    await admin.post("/_sim/calls/reset")
    assert (await admin.get("/_sim/calls")).json() == {"calls": [], "counts": {}}
    assert len(sim.state.webhooks) == 0


async def test_reset_forgets_state_calls_and_faults(
    sim: Simulator, api: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await create(api)
    sim.faults.error(500, endpoint="GET /webhooks")
    assert (await admin.post("/_sim/reset")).status_code == 200
    assert sim.state.webhooks == {}
    assert sim.faults.rules == []
    response = await api.get("/webhooks")
    assert response.status_code == 200
    assert response.json()["data"] == []
    assert sim.calls.counts == {"GET /webhooks": 1}


async def test_keys_can_be_added_and_revoked_over_http(
    sim: Simulator, admin: httpx.AsyncClient
) -> None:
    new_key = "bl_live_added_later"
    added = await admin.post("/_sim/keys", json={"api_key": new_key})
    assert added.json()["api_key_id"] == api_key_fingerprint(new_key)
    assert new_key not in added.text
    async with httpx.AsyncClient(
        base_url=sim.url, headers={"Authorization": f"Bearer {new_key}"}
    ) as client:
        assert (await client.get("/webhooks")).status_code == 200
        await admin.post("/_sim/keys", json={"api_key": new_key, "forbidden": True})
        assert (await client.get("/webhooks")).status_code == 403
        revoked = await admin.post("/_sim/keys/revoke", json={"api_key": new_key})
        assert revoked.json() == {"revoked": True}
        assert (await client.get("/webhooks")).status_code == 401


async def test_admin_unknown_routes_and_bad_bodies(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/_sim/nothing")).status_code == 404
    assert (await admin.put("/_sim/faults", content=b"{")).status_code == 400
    assert (await admin.post("/_sim/keys", json={"api_key": ""})).status_code == 400
    assert (await admin.get("/_sim/health")).json()["ok"] is True


# --- SimulatorAdmin -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/v4", "/v4/"])
def test_admin_root_accepts_root_or_api_url(suffix: str) -> None:
    assert admin_root(f"http://127.0.0.1:8080{suffix}") == "http://127.0.0.1:8080"


async def test_simulator_admin_client_end_to_end(sim: Simulator, api: httpx.AsyncClient) -> None:
    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    for base in (sim.admin_url, sim.url):
        with SimulatorAdmin(base) as admin:
            assert (await call(admin.health))["ok"] is True
            await call(admin.reset)
            created = await create(api)

            (listed,) = await call(admin.webhooks)
            assert listed["signing_secret"] == created["signing_secret"]
            assert (await call(admin.webhook, created["id"]))["id"] == created["id"]
            assert await call(admin.webhook, "wh_missing") is None
            assert await call(admin.counts) == {"POST /webhooks": 1}
            assert [c["endpoint"] for c in await call(admin.calls)] == ["POST /webhooks"]

            changed = await call(admin.mutate, created["id"], status="disabled")
            assert changed["status"] == "disabled"
            assert (await api.get(f"/webhooks/{created['id']}")).json()["data"]["status"] == (
                "disabled"
            )
            await call(admin.mutate, created["id"], status="active")

            await call(admin.set_faults, rules=[{"kind": "error", "status": 503, "count": 1}])
            assert (await call(admin.faults))["rules"][0]["status"] == 503
            assert (await api.get("/webhooks")).status_code == 503
            await call(admin.add_fault, "rate_limit", count=1, retry_after=4)
            limited = await api.get("/webhooks")
            assert (limited.status_code, limited.headers["Retry-After"]) == (429, "4")
            await call(admin.set_faults, latency_ms=5)
            assert (await call(admin.faults))["latency_ms"] == 5
            await call(admin.clear_faults)
            assert (await call(admin.faults))["rules"] == []

            result = await call(
                admin.deliver, created["id"], target_url="http://127.0.0.1:9/unreachable"
            )
            assert result["data"]["status"] == "failed"
            assert result["event"]["type"] == "message.received"
            assert len(await call(admin.deliveries, created["id"])) == 1

            key_id = await call(admin.add_api_key, "bl_live_from_admin")
            assert key_id == api_key_fingerprint("bl_live_from_admin")
            assert await call(admin.revoke_api_key, "bl_live_from_admin") is True

            await call(admin.reset_calls)
            assert await call(admin.calls) == []
            await call(admin.remove, created["id"])
            assert await call(admin.webhooks) == []
            with pytest.raises(SimulatorAdminError) as raised:
                await call(admin.remove, created["id"])
            assert raised.value.status == 404
