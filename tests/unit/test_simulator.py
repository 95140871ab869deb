"""The simulator's V4 webhooks API: endpoints, auth, validation, paging, secrets, deliveries.

Everything runs in-process: the simulator on a free port, httpx as the client, and a
small aiohttp receiver for signed deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from blooio_operator.simulator import Simulator, api_key_fingerprint
from blooio_operator.simulator.signing import verify
from blooio_operator.simulator.validation import SUBSCRIPTION_TOKENS

KEY = "bl_live_unit_key_one"
OTHER_KEY = "bl_live_unit_key_two"
FORBIDDEN_KEY = "bl_live_unit_key_forbidden"
URL = "https://hooks.example.com/blooio"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator([KEY, OTHER_KEY], forbidden_keys=[FORBIDDEN_KEY])
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
async def other(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {OTHER_KEY}"}
    async with httpx.AsyncClient(base_url=sim.url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
async def admin(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.admin_url, timeout=10) as client:
        yield client


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 204


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        box.requests.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=box.status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield box
    finally:
        await runner.cleanup()


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/webhooks", json={"url": URL, **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def assert_v4_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    error: dict[str, Any] = body["error"]
    return error


# --- create / get / list / patch / delete / rotate ------------------------------------------


async def test_create_returns_webhook_with_one_time_secret(api: httpx.AsyncClient) -> None:
    before = time.time_ns() // 1_000_000
    response = await api.post("/webhooks", json={"url": URL})
    after = time.time_ns() // 1_000_000

    assert response.status_code == 201
    data = response.json()["data"]
    assert set(response.json()) == {"data"}
    assert re.fullmatch(r"wh_[A-Za-z0-9]+", data["id"])
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", data["signing_secret"])
    assert data["url"] == URL
    assert data["event_types"] == ["*"]  # the documented default
    assert data["status"] == "active"
    assert data["channel_id"] is None
    assert data["channel_type"] is None
    assert before <= data["created_at"] <= after  # epoch milliseconds


async def test_get_and_list_never_return_the_secret(api: httpx.AsyncClient) -> None:
    created = await create(api)
    got = (await api.get(f"/webhooks/{created['id']}")).json()["data"]
    listed = (await api.get("/webhooks")).json()["data"]

    expected = {k: v for k, v in created.items() if k != "signing_secret"}
    assert got == expected
    assert listed == [expected]


async def test_event_types_and_channels_are_stored_as_sent(api: httpx.AsyncClient) -> None:
    tokens = ["message.received", "message.*", "all", "message.received"]
    created = await create(
        api, event_types=tokens, channel_id="ch_e5f6a7b8", channel_type="whatsapp"
    )
    got = (await api.get(f"/webhooks/{created['id']}")).json()["data"]
    assert got["event_types"] == tokens  # not expanded, not de-duplicated
    assert (got["channel_id"], got["channel_type"]) == ("ch_e5f6a7b8", "whatsapp")

    only_id = await create(api, channel_id="ch_a1b2c3d4")
    assert (only_id["channel_id"], only_id["channel_type"]) == ("ch_a1b2c3d4", None)
    only_type = await create(api, channel_type="twilio")
    assert (only_type["channel_id"], only_type["channel_type"]) == (None, "twilio")


@pytest.mark.parametrize("token", sorted(SUBSCRIPTION_TOKENS))
async def test_every_documented_token_is_accepted(api: httpx.AsyncClient, token: str) -> None:
    created = await create(api, event_types=[token])
    assert created["event_types"] == [token]


async def test_null_optional_fields_mean_omitted(api: httpx.AsyncClient) -> None:
    created = await create(api, event_types=None, channel_id=None, channel_type=None)
    assert created["event_types"] == ["*"]
    assert created["channel_id"] is None


async def test_url_of_exactly_2048_characters_is_accepted(api: httpx.AsyncClient) -> None:
    long_url = "https://hooks.example.com/" + "a" * (2048 - len("https://hooks.example.com/"))
    assert len(long_url) == 2048
    assert (await create(api, url=long_url))["url"] == long_url


async def test_patch_updates_only_supplied_fields_and_keeps_the_secret(
    sim: Simulator, api: httpx.AsyncClient
) -> None:
    created = await create(api, event_types=["message.*"])
    response = await api.patch(f"/webhooks/{created['id']}", json={"status": "disabled"})
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "disabled"
    assert response.json()["data"]["event_types"] == ["message.*"]
    assert "signing_secret" not in response.json()["data"]

    response = await api.patch(
        f"/webhooks/{created['id']}",
        json={"url": "https://new.example.com/h", "event_types": ["poll.*"], "status": "active"},
    )
    data = response.json()["data"]
    assert (data["url"], data["event_types"], data["status"]) == (
        "https://new.example.com/h",
        ["poll.*"],
        "active",
    )
    assert data["created_at"] == created["created_at"]
    assert sim.state.webhooks[created["id"]].signing_secret == created["signing_secret"]


async def test_delete_then_404(api: httpx.AsyncClient) -> None:
    created = await create(api)
    response = await api.delete(f"/webhooks/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {"data": {"id": created["id"], "deleted": True}}

    assert_v4_error(await api.get(f"/webhooks/{created['id']}"), 404, "not_found")
    assert_v4_error(await api.delete(f"/webhooks/{created['id']}"), 404, "not_found")
    assert_v4_error(
        await api.patch(f"/webhooks/{created['id']}", json={"status": "disabled"}), 404, "not_found"
    )
    assert_v4_error(await api.post(f"/webhooks/{created['id']}/secret/rotate"), 404, "not_found")
    assert_v4_error(await api.get(f"/webhooks/{created['id']}/deliveries"), 404, "not_found")
    assert (await api.get("/webhooks")).json()["data"] == []


async def test_rotate_replaces_the_secret(sim: Simulator, api: httpx.AsyncClient) -> None:
    created = await create(api)
    response = await api.post(f"/webhooks/{created['id']}/secret/rotate")
    assert response.status_code == 200
    data = response.json()["data"]
    assert set(data) == {"id", "signing_secret"}
    assert data["id"] == created["id"]
    assert re.fullmatch(r"whsec_[0-9a-f]{48}", data["signing_secret"])
    assert data["signing_secret"] != created["signing_secret"]
    assert sim.state.webhooks[created["id"]].signing_secret == data["signing_secret"]


async def test_rotate_invalidates_the_old_secret_for_deliveries(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api)
    rotated = (await api.post(f"/webhooks/{created['id']}/secret/rotate")).json()["data"]

    response = await admin.post(
        f"/_sim/webhooks/{created['id']}/deliver", json={"target_url": receiver.url}
    )
    assert response.status_code == 200, response.text
    (delivered,) = receiver.requests
    header = delivered.headers["X-Blooio-Signature"]
    assert verify(rotated["signing_secret"], header, delivered.body)
    assert not verify(created["signing_secret"], header, delivered.body)


async def test_unknown_webhook_ids_are_404_in_the_v4_envelope(api: httpx.AsyncClient) -> None:
    error = assert_v4_error(await api.get("/webhooks/wh_doesnotexist"), 404, "not_found")
    assert "wh_doesnotexist" in error["message"]


async def test_unknown_route_and_method_use_the_v4_envelope(api: httpx.AsyncClient) -> None:
    assert_v4_error(await api.get("/templates"), 404, "route_not_found")
    assert_v4_error(await api.put("/webhooks"), 405, "method_not_allowed")


# --- auth and organisations -------------------------------------------------------------------

ENDPOINT_CALLS = [
    ("GET", "/webhooks"),
    ("POST", "/webhooks"),
    ("GET", "/webhooks/wh_x"),
    ("PATCH", "/webhooks/wh_x"),
    ("DELETE", "/webhooks/wh_x"),
    ("POST", "/webhooks/wh_x/secret/rotate"),
    ("GET", "/webhooks/wh_x/deliveries"),
    ("GET", "/webhooks/wh_x/logs"),
    ("POST", "/webhooks/wh_x/deliveries/wdel_x/replay"),
    ("POST", "/webhooks/wh_x/logs/wdel_x/replay"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINT_CALLS)
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer bl_live_not_a_key", 401),
        (f"Basic {KEY}", 401),
        ("Bearer", 401),
        (f"Bearer {FORBIDDEN_KEY}", 403),
    ],
)
async def test_every_endpoint_requires_a_valid_key(
    sim: Simulator, method: str, path: str, authorization: str | None, status: int
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        response = await client.request(method, path, headers=headers, json={"url": URL})
    assert response.status_code == status
    body = response.json()
    assert body["error"] == ("Unauthorized" if status == 401 else "Forbidden")
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    assert KEY not in response.text
    assert FORBIDDEN_KEY not in response.text
    assert sim.state.webhooks == {}


async def test_each_key_is_its_own_organisation(
    api: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    mine = await create(api)
    theirs = await create(other)

    assert [w["id"] for w in (await api.get("/webhooks")).json()["data"]] == [mine["id"]]
    assert [w["id"] for w in (await other.get("/webhooks")).json()["data"]] == [theirs["id"]]
    assert_v4_error(await other.get(f"/webhooks/{mine['id']}"), 404, "not_found")
    assert_v4_error(await other.delete(f"/webhooks/{mine['id']}"), 404, "not_found")
    assert_v4_error(
        await other.patch(f"/webhooks/{mine['id']}", json={"status": "disabled"}), 404, "not_found"
    )
    assert_v4_error(await other.post(f"/webhooks/{mine['id']}/secret/rotate"), 404, "not_found")
    assert (await api.get(f"/webhooks/{mine['id']}")).json()["data"]["status"] == "active"


async def test_keys_can_share_an_organisation_and_be_added_or_revoked() -> None:
    sim = Simulator([KEY], organizations={KEY: "org_shop"})
    await sim.start()
    try:
        sim.add_api_key(OTHER_KEY, organization="org_shop")
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
            first = await client.post(
                "/webhooks", json={"url": URL}, headers={"Authorization": f"Bearer {KEY}"}
            )
            listed = await client.get("/webhooks", headers={"Authorization": f"Bearer {OTHER_KEY}"})
            assert [w["id"] for w in listed.json()["data"]] == [first.json()["data"]["id"]]

            assert sim.revoke_api_key(KEY)
            revoked = await client.get("/webhooks", headers={"Authorization": f"Bearer {KEY}"})
            assert revoked.status_code == 401
    finally:
        await sim.stop()


# --- validation: 422 and 400 -----------------------------------------------------------------

INVALID_CREATES: list[tuple[dict[str, Any], str]] = [
    ({}, "url"),
    ({"url": None}, "url"),
    ({"url": 42}, "url"),
    ({"url": ["https://a.example.com"]}, "url"),
    ({"url": ""}, "url"),
    ({"url": "http://hooks.example.com/blooio"}, "url"),
    ({"url": "ftp://hooks.example.com/blooio"}, "url"),
    ({"url": "hooks.example.com/blooio"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "https://"}, "url"),
    ({"url": "https:///path-only"}, "url"),
    ({"url": "https://exa mple.com/"}, "url"),
    ({"url": "https://example.com:99999/"}, "url"),
    ({"url": "https://[::1/"}, "url"),
    ({"url": "https://hooks.example.com/" + "a" * 2023}, "url"),
    ({"url": URL, "event_types": "message.received"}, "event_types"),
    ({"url": URL, "event_types": {"message.received": True}}, "event_types"),
    ({"url": URL, "event_types": [1]}, "event_types"),
    ({"url": URL, "event_types": ["message.received", None]}, "event_types"),
    ({"url": URL, "event_types": []}, "event_types"),
    ({"url": URL, "event_types": ["contact.*"]}, "event_types"),
    ({"url": URL, "event_types": ["message.unknown"]}, "event_types"),
    ({"url": URL, "event_types": ["MESSAGE.RECEIVED"]}, "event_types"),
    ({"url": URL, "event_types": ["poll"]}, "event_types"),
    ({"url": URL, "event_types": ["**"]}, "event_types"),
    ({"url": URL, "channel_type": "amb"}, "channel_type"),
    ({"url": URL, "channel_type": "sms"}, "channel_type"),
    ({"url": URL, "channel_type": 3}, "channel_type"),
    ({"url": URL, "channel_id": "ch_unknown"}, "channel_id"),
    ({"url": URL, "channel_id": 7}, "channel_id"),
    ({"url": URL, "channel_id": "ch_a1b2c3d4", "channel_type": "whatsapp"}, "channel_type"),
]


@pytest.mark.parametrize(("body", "field_name"), INVALID_CREATES)
async def test_invalid_create_is_422(
    sim: Simulator, api: httpx.AsyncClient, body: dict[str, Any], field_name: str
) -> None:
    error = assert_v4_error(await api.post("/webhooks", json=body), 422, "validation_error")
    assert error["details"]["field"] == field_name
    assert sim.state.webhooks == {}


async def test_unknown_event_token_is_named_in_the_error(api: httpx.AsyncClient) -> None:
    response = await api.post("/webhooks", json={"url": URL, "event_types": ["contact.*"]})
    error = assert_v4_error(response, 422, "validation_error")
    assert error["details"]["value"] == "contact.*"
    assert "contact.*" in error["message"]


async def test_https_is_required_with_a_clear_message(api: httpx.AsyncClient) -> None:
    response = await api.post("/webhooks", json={"url": "http://hooks.example.com/"})
    assert assert_v4_error(response, 422, "validation_error")["message"] == "url must use https"


INVALID_PATCHES: list[tuple[dict[str, Any], str]] = [
    ({}, "body"),
    ({"url": None}, "body"),
    ({"url": "http://hooks.example.com/"}, "url"),
    ({"url": 5}, "url"),
    ({"url": "https://hooks.example.com/" + "a" * 2023}, "url"),
    ({"event_types": []}, "event_types"),
    ({"event_types": ["contact.*"]}, "event_types"),
    ({"event_types": "message.*"}, "event_types"),
    ({"status": "paused"}, "status"),
    ({"status": True}, "status"),
    ({"channel_id": "ch_a1b2c3d4"}, "channel_id"),
    ({"channel_type": "blooio"}, "channel_type"),
]


@pytest.mark.parametrize(("body", "field_name"), INVALID_PATCHES)
async def test_invalid_patch_is_422_and_changes_nothing(
    api: httpx.AsyncClient, body: dict[str, Any], field_name: str
) -> None:
    created = await create(api)
    response = await api.patch(f"/webhooks/{created['id']}", json={**body})
    error = assert_v4_error(response, 422, "validation_error")
    assert error["details"]["field"] == field_name
    after = (await api.get(f"/webhooks/{created['id']}")).json()["data"]
    assert after == {k: v for k, v in created.items() if k != "signing_secret"}


async def test_patch_with_one_bad_field_applies_none(api: httpx.AsyncClient) -> None:
    created = await create(api)
    response = await api.patch(
        f"/webhooks/{created['id']}", json={"status": "disabled", "url": "http://x.example/"}
    )
    assert response.status_code == 422
    assert (await api.get(f"/webhooks/{created['id']}")).json()["data"]["status"] == "active"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'["https://hooks.example.com"]', "invalid_body"),
        (b'"https://hooks.example.com"', "invalid_body"),
        (b"null", "invalid_body"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_malformed_body_is_400(
    sim: Simulator, api: httpx.AsyncClient, content: bytes, code: str, method: str
) -> None:
    path = "/webhooks"
    if method == "PATCH":
        path = f"/webhooks/{(await create(api))['id']}"
    response = await api.request(
        method, path, content=content, headers={"Content-Type": "application/json"}
    )
    assert_v4_error(response, 400, code)
    assert len(sim.state.webhooks) == (1 if method == "PATCH" else 0)


# --- pagination -------------------------------------------------------------------------------


async def test_pagination_120_webhooks_limit_50(api: httpx.AsyncClient) -> None:
    created = [(await create(api, url=f"https://h{i}.example.com/"))["id"] for i in range(120)]

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 50}
        if cursor is not None:
            params["cursor"] = cursor
        body = (await api.get("/webhooks", params=params)).json()
        pages.append([w["id"] for w in body["data"]])
        assert body["has_more"] is (body["next_cursor"] is not None)
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break

    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i for page in pages for i in page] == created  # stable insertion order
    assert all("signing_secret" not in w for w in (await api.get("/webhooks")).json()["data"])


async def test_default_limit_is_50_and_200_is_the_maximum(api: httpx.AsyncClient) -> None:
    for i in range(120):
        await create(api, url=f"https://h{i}.example.com/")
    default = (await api.get("/webhooks")).json()
    assert len(default["data"]) == 50
    assert default["has_more"] is True
    everything = (await api.get("/webhooks", params={"limit": 200})).json()
    assert len(everything["data"]) == 120
    assert everything["has_more"] is False
    assert everything["next_cursor"] is None


async def test_exact_last_page_has_no_more(api: httpx.AsyncClient) -> None:
    for i in range(4):
        await create(api, url=f"https://h{i}.example.com/")
    first = (await api.get("/webhooks", params={"limit": 2})).json()
    second = (
        await api.get("/webhooks", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert first["has_more"] is True
    assert len(second["data"]) == 2
    assert second["has_more"] is False
    assert second["next_cursor"] is None


async def test_cursor_is_stable_across_deletes_and_inserts(api: httpx.AsyncClient) -> None:
    ids = [(await create(api, url=f"https://h{i}.example.com/"))["id"] for i in range(6)]
    first = (await api.get("/webhooks", params={"limit": 3})).json()
    assert [w["id"] for w in first["data"]] == ids[:3]

    await api.delete(f"/webhooks/{ids[1]}")  # already seen
    await api.delete(f"/webhooks/{ids[3]}")  # not yet seen
    newest = (await create(api, url="https://late.example.com/"))["id"]

    rest = (await api.get("/webhooks", params={"limit": 50, "cursor": first["next_cursor"]})).json()
    assert [w["id"] for w in rest["data"]] == [ids[4], ids[5], newest]


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", ""])
async def test_out_of_range_limit_is_400(api: httpx.AsyncClient, limit: str) -> None:
    error = assert_v4_error(
        await api.get("/webhooks", params={"limit": limit}), 400, "invalid_parameter"
    )
    assert error["details"]["field"] == "limit"


@pytest.mark.parametrize("cursor", ["garbage", "d2RlbDox", "!!!"])
async def test_foreign_or_garbage_cursor_is_400(api: httpx.AsyncClient, cursor: str) -> None:
    # "d2RlbDox" is a delivery-list cursor: valid elsewhere, not for webhooks.
    assert_v4_error(await api.get("/webhooks", params={"cursor": cursor}), 400, "invalid_cursor")


# --- deliveries, replay, signatures -------------------------------------------------------------


async def deliver(admin: httpx.AsyncClient, webhook_id: str, **body: Any) -> dict[str, Any]:
    response = await admin.post(f"/_sim/webhooks/{webhook_id}/deliver", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_signed_delivery_reaches_a_local_receiver(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api, event_types=["message.*"], channel_type="blooio")
    before = int(time.time())
    result = await deliver(
        admin,
        created["id"],
        event_type="message.delivered",
        data={"message_id": "msg_1", "chat_id": "chat_9"},
        target_url=receiver.url,
    )
    after = int(time.time())

    (request,) = receiver.requests
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Blooio-Event"] == "message.delivered"
    header = request.headers["X-Blooio-Signature"]
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
    assert match is not None
    timestamp = int(match.group(1))
    assert before <= timestamp <= after  # unix seconds, not ms

    # Independent of the simulator's signing module: HMAC-SHA256 over "<t>.<body>".
    expected = hmac.new(
        created["signing_secret"].encode(),
        f"{timestamp}.".encode() + request.body,
        hashlib.sha256,
    ).hexdigest()
    assert match.group(2) == expected
    assert verify(created["signing_secret"], header, request.body)

    event = result["event"]
    assert re.fullmatch(r"evt_[A-Za-z0-9]+", event["id"])
    assert event["type"] == "message.delivered"
    assert event["data"] == {"message_id": "msg_1", "chat_id": "chat_9"}
    assert (event["message_id"], event["chat_id"], event["channel_type"]) == (
        "msg_1",
        "chat_9",
        "blooio",
    )
    assert abs(event["occurred_at"] - timestamp * 1000) < 5000  # epoch ms
    assert request.body == result["data"]["body"].encode()

    delivery = result["data"]
    assert re.fullmatch(r"wdel_[A-Za-z0-9]+", delivery["id"])
    assert (delivery["status"], delivery["response_status"], delivery["attempt_count"]) == (
        "delivered",
        204,
        1,
    )


async def test_the_documented_test_vector_matches_what_receivers_compute(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api)
    await admin.patch(
        f"/_sim/webhooks/{created['id']}", json={"signing_secret": "whsec_test_secret"}
    )
    await deliver(admin, created["id"], target_url=receiver.url, timestamp=1700000000)
    (request,) = receiver.requests
    expected_hex = "f4544645bd4887571db0b498c3ad114c3316b8225d8a3df45664143ca6fd942b"
    vector_body = b'{"id":"evt_123","type":"message.received"}'
    assert verify(
        "whsec_test_secret", f"t=1700000000,v1={expected_hex}", vector_body, tolerance=None
    )
    assert request.headers["X-Blooio-Signature"].startswith("t=1700000000,v1=")
    assert verify(
        "whsec_test_secret", request.headers["X-Blooio-Signature"], request.body, tolerance=None
    )


async def test_failed_and_unreachable_deliveries_are_recorded(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api)
    receiver.status = 500
    failed = (await deliver(admin, created["id"], target_url=receiver.url))["data"]
    assert (failed["status"], failed["response_status"]) == ("failed", 500)

    unreachable = (await deliver(admin, created["id"], target_url="http://127.0.0.1:9/hook"))[
        "data"
    ]
    assert unreachable["status"] == "failed"
    assert unreachable["response_status"] is None
    assert unreachable["error"]


async def test_deliveries_list_and_logs_alias(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api)
    ids = [
        (await deliver(admin, created["id"], target_url=receiver.url))["data"]["id"]
        for _ in range(3)
    ]
    listed = (await api.get(f"/webhooks/{created['id']}/deliveries")).json()
    logs = (await api.get(f"/webhooks/{created['id']}/logs")).json()
    assert listed == logs
    assert [d["id"] for d in listed["data"]] == ids
    assert listed["has_more"] is False
    assert listed["next_cursor"] is None
    first = listed["data"][0]
    assert set(first) == {
        "id",
        "webhook_id",
        "event_id",
        "event_type",
        "status",
        "attempt_count",
        "response_status",
        "last_attempt_at",
        "next_attempt_at",
        "created_at",
    }
    assert first["webhook_id"] == created["id"]

    page = (await api.get(f"/webhooks/{created['id']}/deliveries", params={"limit": 2})).json()
    assert [d["id"] for d in page["data"]] == ids[:2]
    assert page["has_more"] is True
    rest = (
        await api.get(
            f"/webhooks/{created['id']}/logs", params={"limit": 2, "cursor": page["next_cursor"]}
        )
    ).json()
    assert [d["id"] for d in rest["data"]] == ids[2:]


@pytest.mark.parametrize("segment", ["deliveries", "logs"])
async def test_replay_creates_a_new_delivery(
    sim: Simulator,
    api: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    receiver: Receiver,
    segment: str,
) -> None:
    created = await create(api)
    original = (await deliver(admin, created["id"], target_url=receiver.url))["data"]

    response = await api.post(f"/webhooks/{created['id']}/{segment}/{original['id']}/replay")
    assert response.status_code == 201
    replay = response.json()["data"]
    assert set(replay) == {"id", "replay_of", "status"}
    assert re.fullmatch(r"wdel_[A-Za-z0-9]+", replay["id"])
    assert replay["id"] != original["id"]
    assert replay["replay_of"] == original["id"]
    assert replay["status"] == "queued"

    async with asyncio.timeout(10):
        await sim.drain()
    first, second = receiver.requests
    assert second.body == first.body  # the same event, re-sent
    assert second.headers["X-Blooio-Replay"] == "true"
    assert second.headers["X-Original-Event-Id"] == original["event_id"]
    assert verify(created["signing_secret"], second.headers["X-Blooio-Signature"], second.body)

    listed = (await api.get(f"/webhooks/{created['id']}/deliveries")).json()["data"]
    assert [d["id"] for d in listed] == [original["id"], replay["id"]]
    assert listed[1]["event_id"] == original["event_id"]
    assert (listed[1]["status"], listed[1]["response_status"]) == ("delivered", 204)


async def test_replay_errors(
    api: httpx.AsyncClient, other: httpx.AsyncClient, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api)
    second = await create(api, url="https://second.example.com/")
    original = (await deliver(admin, created["id"], target_url=receiver.url))["data"]

    assert_v4_error(
        await api.post(f"/webhooks/{created['id']}/deliveries/wdel_nope/replay"), 404, "not_found"
    )
    # A delivery id only exists under its own webhook and organisation.
    assert_v4_error(
        await api.post(f"/webhooks/{second['id']}/deliveries/{original['id']}/replay"),
        404,
        "not_found",
    )
    assert_v4_error(
        await other.post(f"/webhooks/{created['id']}/deliveries/{original['id']}/replay"),
        404,
        "not_found",
    )
    await api.patch(f"/webhooks/{created['id']}", json={"status": "disabled"})
    assert_v4_error(
        await api.post(f"/webhooks/{created['id']}/deliveries/{original['id']}/replay"),
        400,
        "webhook_disabled",
    )


async def test_deliver_honours_subscription_and_status_unless_forced(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api, event_types=["poll.*", "status"])
    path = f"/_sim/webhooks/{created['id']}/deliver"

    refused = await admin.post(
        path, json={"event_type": "typing.started", "target_url": receiver.url}
    )
    assert_v4_error(refused, 409, "not_subscribed")
    ok = await admin.post(path, json={"event_type": "poll.voted", "target_url": receiver.url})
    assert ok.status_code == 200
    legacy = await admin.post(path, json={"event_type": "message.read", "target_url": receiver.url})
    assert legacy.status_code == 200
    forced = await admin.post(
        path, json={"event_type": "typing.started", "target_url": receiver.url, "force": True}
    )
    assert forced.status_code == 200

    await api.patch(f"/webhooks/{created['id']}", json={"status": "disabled"})
    disabled = await admin.post(path, json={"event_type": "poll.voted", "target_url": receiver.url})
    assert_v4_error(disabled, 409, "webhook_disabled")
    assert len(receiver.requests) == 3

    bad = await admin.post(path, json={"event_type": "message.*", "force": True})
    assert_v4_error(bad, 422, "validation_error")
    assert_v4_error(await admin.post("/_sim/webhooks/wh_nope/deliver", json={}), 404, "not_found")


async def test_in_process_deliver(
    sim: Simulator, api: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await create(api)
    delivery = await sim.deliver(
        created["id"], "message.received", {"a": 1}, target_url=receiver.url
    )
    assert delivery.response_status == 204
    assert verify(
        created["signing_secret"],
        receiver.requests[0].headers["X-Blooio-Signature"],
        receiver.requests[0].body,
    )


async def test_state_is_inspectable_in_process(sim: Simulator, api: httpx.AsyncClient) -> None:
    created = await create(api)
    record = sim.state.webhooks[created["id"]]
    assert record.signing_secret == created["signing_secret"]
    assert record.api_key_id == api_key_fingerprint(KEY)
    assert list(sim.state.for_org(record.org)) == [created["id"]]


async def test_seeded_simulators_generate_the_same_ids() -> None:
    ids = []
    for _ in range(2):
        sim = Simulator([KEY], seed=7)
        await sim.start()
        try:
            async with httpx.AsyncClient(
                base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}
            ) as client:
                body = (await client.post("/webhooks", json={"url": URL})).json()["data"]
                ids.append((body["id"], body["signing_secret"]))
        finally:
            await sim.stop()
    assert ids[0] == ids[1]


async def test_app_works_with_aiohttp_test_server() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    sim = Simulator([KEY])
    async with TestClient(TestServer(sim.app)) as client:
        response = await client.post(
            "/v4/webhooks", json={"url": URL}, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert response.status == 201
        assert len(sim.state.webhooks) == 1
