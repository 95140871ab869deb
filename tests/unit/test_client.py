"""BlooioClient endpoints, pagination, models, metrics hook and secret redaction."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blooio_operator.blooio import (
    BlooioClient,
    CreateOutcomeUnknown,
    CreateWebhookRequest,
    NotFound,
    ReplayResult,
    RetryPolicy,
    RotatedSecret,
    Unauthorized,
    UnexpectedResponse,
    UpdateWebhookRequest,
    ValidationFailed,
    Webhook,
    WebhookDelivery,
    WebhookWithSecret,
)

API_KEY = "bl_live_k3y_that_must_never_leak_0001"
SECRET = "whsec_s3cret_that_must_never_leak_0002"
ROTATED = "whsec_r0tated_secret_never_leak_0003"
BASE_URL = "https://api.blooio.test/v4"

Handler = Callable[[httpx.Request], httpx.Response]


async def _no_sleep(seconds: float) -> None:
    return None


def webhook(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"wh_{n}",
        "url": f"https://receiver.test/hook/{n}",
        "event_types": ["message.*"],
        "status": "active",
        "channel_id": None,
        "channel_type": None,
        "created_at": 1718000000000 + n,
        **extra,
    }


def delivery(n: int) -> dict[str, Any]:
    return {
        "id": f"wdel_{n}",
        "webhook_id": "wh_1",
        "event_id": f"evt_{n}",
        "event_type": "message.received",
        "status": "delivered",
        "attempt_count": 1,
        "response_status": 200,
        "last_attempt_at": 1718000000000,
        "next_attempt_at": None,
        "created_at": 1718000000000,
    }


class Recorder:
    """A MockTransport handler that records requests and answers from a routing function."""

    def __init__(self, route: Handler):
        self.route = route
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.route(request)


@pytest.fixture
async def http_factory() -> AsyncIterator[Callable[[Handler], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(handler: Handler) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=5.0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def make_client(
    http_factory: Callable[[Handler], httpx.AsyncClient],
) -> Callable[..., tuple[BlooioClient, Recorder]]:
    def make(route: Handler, **kwargs: Any) -> tuple[BlooioClient, Recorder]:
        recorder = Recorder(route)
        kwargs.setdefault("retry", RetryPolicy(sleep=_no_sleep))
        client = BlooioClient(
            http_factory(recorder), SecretStr(API_KEY), base_url=BASE_URL, **kwargs
        )
        return client, recorder

    return make


MakeClient = Callable[..., tuple[BlooioClient, Recorder]]


# -- pagination ------------------------------------------------------------------------


async def test_list_webhooks_follows_every_page(make_client: MakeClient) -> None:
    pages = {
        None: {"data": [webhook(1), webhook(2)], "has_more": True, "next_cursor": "c2"},
        "c2": {"data": [webhook(3)], "has_more": True, "next_cursor": "c3"},
        "c3": {"data": [webhook(4), webhook(5)], "has_more": False, "next_cursor": None},
    }

    def route(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET"
        assert request.url.path == "/v4/webhooks"
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    client, recorder = make_client(route)
    webhooks = await client.list_webhooks()

    assert [w.id for w in webhooks] == ["wh_1", "wh_2", "wh_3", "wh_4", "wh_5"]
    assert [r.url.params.get("cursor") for r in recorder.requests] == [None, "c2", "c3"]
    assert all(r.url.params["limit"] == "200" for r in recorder.requests)
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in recorder.requests)


async def test_list_webhooks_single_empty_page(make_client: MakeClient) -> None:
    client, recorder = make_client(
        lambda _: httpx.Response(200, json={"data": [], "has_more": False, "next_cursor": None})
    )
    assert await client.list_webhooks() == []
    assert len(recorder.requests) == 1


async def test_list_rejects_has_more_without_cursor(make_client: MakeClient) -> None:
    client, _ = make_client(
        lambda _: httpx.Response(
            200, json={"data": [webhook(1)], "has_more": True, "next_cursor": None}
        )
    )
    with pytest.raises(UnexpectedResponse, match="next_cursor is null"):
        await client.list_webhooks()


async def test_list_rejects_cursor_loop(make_client: MakeClient) -> None:
    client, recorder = make_client(
        lambda _: httpx.Response(
            200, json={"data": [webhook(1)], "has_more": True, "next_cursor": "same"}
        )
    )
    with pytest.raises(UnexpectedResponse, match="repeats"):
        await client.list_webhooks()
    assert len(recorder.requests) == 2


async def test_list_deliveries_follows_every_page(make_client: MakeClient) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v4/webhooks/wh_1/deliveries"
        if request.url.params.get("cursor") is None:
            return httpx.Response(
                200, json={"data": [delivery(1)], "has_more": True, "next_cursor": "d2"}
            )
        return httpx.Response(
            200, json={"data": [delivery(2)], "has_more": False, "next_cursor": None}
        )

    client, recorder = make_client(route)
    deliveries = await client.list_deliveries("wh_1")
    assert [d.id for d in deliveries] == ["wdel_1", "wdel_2"]
    assert all(isinstance(d, WebhookDelivery) for d in deliveries)
    assert len(recorder.requests) == 2
    assert all(r.url.params["limit"] == "200" for r in recorder.requests)


# -- single-object endpoints -----------------------------------------------------------


async def test_create_webhook_sends_body_without_nones(make_client: MakeClient) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v4/webhooks")
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {
            "url": "https://receiver.test/hook/1",
            "event_types": ["message.*"],
        }
        return httpx.Response(201, json={"data": webhook(1, signing_secret=SECRET)})

    client, recorder = make_client(route)
    created = await client.create_webhook(
        CreateWebhookRequest(url="https://receiver.test/hook/1", event_types=["message.*"])
    )
    assert isinstance(created, WebhookWithSecret)
    assert created.id == "wh_1"
    assert created.signing_secret.get_secret_value() == SECRET
    assert len(recorder.requests) == 1


async def test_get_webhook_tolerates_unknown_fields(make_client: MakeClient) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v4/webhooks/wh_7")
        return httpx.Response(200, json={"data": webhook(7, brand_new_field={"x": 1})})

    client, _ = make_client(route)
    got = await client.get_webhook("wh_7")
    assert got == Webhook(**webhook(7))


async def test_update_webhook_patches_only_set_fields(make_client: MakeClient) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("PATCH", "/v4/webhooks/wh_1")
        assert json.loads(request.content) == {"status": "disabled"}
        return httpx.Response(200, json={"data": webhook(1, status="disabled")})

    client, _ = make_client(route)
    updated = await client.update_webhook("wh_1", UpdateWebhookRequest(status="disabled"))
    assert updated.status == "disabled"


async def test_delete_webhook(make_client: MakeClient) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("DELETE", "/v4/webhooks/wh_1")
        return httpx.Response(200, json={"data": {"id": "wh_1", "deleted": True}})

    client, recorder = make_client(route)
    assert await client.delete_webhook("wh_1") is None
    assert len(recorder.requests) == 1


async def test_delete_missing_webhook_raises_not_found(make_client: MakeClient) -> None:
    client, _ = make_client(
        lambda _: httpx.Response(
            404, json={"error": {"code": "not_found", "message": "Webhook not found"}}
        )
    )
    with pytest.raises(NotFound) as info:
        await client.delete_webhook("wh_gone")
    assert info.value.status == 404
    assert info.value.path == "/webhooks/wh_gone"


async def test_rotate_secret(make_client: MakeClient) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v4/webhooks/wh_1/secret/rotate")
        return httpx.Response(200, json={"data": {"id": "wh_1", "signing_secret": ROTATED}})

    client, _ = make_client(route)
    rotated = await client.rotate_secret("wh_1")
    assert isinstance(rotated, RotatedSecret)
    assert rotated.id == "wh_1"
    assert rotated.signing_secret.get_secret_value() == ROTATED


async def test_replay_delivery(make_client: MakeClient) -> None:
    def route(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == (
            "POST",
            "/v4/webhooks/wh_1/deliveries/wdel_9/replay",
        )
        return httpx.Response(
            201, json={"data": {"id": "wdel_10", "replay_of": "wdel_9", "status": "queued"}}
        )

    client, _ = make_client(route)
    result = await client.replay_delivery("wh_1", "wdel_9")
    assert result == ReplayResult(id="wdel_10", replay_of="wdel_9", status="queued")


async def test_ids_are_escaped_into_one_path_segment(make_client: MakeClient) -> None:
    client, recorder = make_client(lambda _: httpx.Response(200, json={"data": webhook(1)}))
    await client.get_webhook("../secret/rotate")
    assert recorder.requests[0].url.raw_path == b"/v4/webhooks/..%2Fsecret%2Frotate"
    with pytest.raises(ValueError, match="empty"):
        await client.get_webhook("")


async def test_base_url_trailing_slash_is_ignored(
    http_factory: Callable[[Handler], httpx.AsyncClient],
) -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json={"data": webhook(1)}))
    client = BlooioClient(http_factory(recorder), SecretStr(API_KEY), base_url=BASE_URL + "/")
    await client.get_webhook("wh_1")
    assert str(recorder.requests[0].url) == "https://api.blooio.test/v4/webhooks/wh_1"


async def test_malformed_success_body_is_unexpected_response(make_client: MakeClient) -> None:
    client, _ = make_client(lambda _: httpx.Response(200, json={"data": {"id": "wh_1"}}))
    with pytest.raises(UnexpectedResponse) as info:
        await client.get_webhook("wh_1")
    assert info.value.status == 200
    assert "data.url" in info.value.message


async def test_explicit_timeout_is_sent_per_request(
    http_factory: Callable[[Handler], httpx.AsyncClient],
) -> None:
    recorder = Recorder(lambda _: httpx.Response(200, json={"data": webhook(1)}))
    timeout = httpx.Timeout(1.5, connect=0.5)
    client = BlooioClient(
        http_factory(recorder), SecretStr(API_KEY), base_url=BASE_URL, timeout=timeout
    )
    await client.get_webhook("wh_1")
    assert recorder.requests[0].extensions["timeout"] == timeout.as_dict()


# -- models ----------------------------------------------------------------------------


def test_request_models_forbid_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        CreateWebhookRequest(url="https://x.test", evnt_types=["*"])  # type: ignore[call-arg]
    assert UpdateWebhookRequest().to_wire() == {}
    assert CreateWebhookRequest(
        url="https://x.test", channel_id="ch_1", channel_type="blooio"
    ).to_wire() == {"url": "https://x.test", "channel_id": "ch_1", "channel_type": "blooio"}


def test_webhook_status_is_validated() -> None:
    with pytest.raises(ValidationError):
        Webhook.model_validate(webhook(1, status="paused"))


# -- metrics hook ----------------------------------------------------------------------


async def test_on_response_reports_endpoint_templates_and_status(make_client: MakeClient) -> None:
    seen: list[tuple[str, str, float]] = []
    calls = {"n": 0}

    def route(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if request.method == "PATCH" and calls["n"] == 2:
            raise httpx.ReadTimeout("timed out", request=request)
        if request.method == "PATCH" and calls["n"] == 3:
            raise httpx.ConnectError("refused", request=request)
        if request.method == "PATCH":
            return httpx.Response(200, json={"data": webhook(1)})
        return httpx.Response(200, json={"data": {"id": "wh_1", "signing_secret": ROTATED}})

    client, _ = make_client(route, on_response=lambda *args: seen.append(args))
    await client.rotate_secret("wh_1")
    await client.update_webhook("wh_1", UpdateWebhookRequest(url="https://x.test"))

    assert [(endpoint, status) for endpoint, status, _ in seen] == [
        ("POST /webhooks/{id}/secret/rotate", "200"),
        ("PATCH /webhooks/{id}", "timeout"),
        ("PATCH /webhooks/{id}", "connection_error"),
        ("PATCH /webhooks/{id}", "200"),
    ]
    assert all(seconds >= 0 for _, _, seconds in seen)


async def test_failing_on_response_hook_does_not_break_calls(make_client: MakeClient) -> None:
    def broken_hook(endpoint: str, status: str, seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    client, _ = make_client(
        lambda _: httpx.Response(200, json={"data": webhook(1)}), on_response=broken_hook
    )
    assert (await client.get_webhook("wh_1")).id == "wh_1"


# -- redaction -------------------------------------------------------------------------


def _assert_clean(text: str) -> None:
    assert API_KEY not in text
    assert SECRET not in text
    assert ROTATED not in text


async def test_secrets_never_reach_reprs_errors_or_logs(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def route(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v4/webhooks":
            return httpx.Response(201, json={"data": webhook(1, signing_secret=SECRET)})
        if path.endswith("/rotate"):
            return httpx.Response(200, json={"data": {"id": "wh_1", "signing_secret": ROTATED}})
        if path == "/v4/webhooks/wh_401":
            # A server that echoes the key back must not make us repeat it.
            return httpx.Response(
                401,
                json={"error": "Unauthorized", "message": f"bad key {API_KEY}", "status": 401},
            )
        if path == "/v4/webhooks/wh_422":
            return httpx.Response(
                422, json={"error": {"code": "validation_error", "message": "url must use https"}}
            )
        return httpx.Response(200, json={"data": webhook(2)})

    client, _ = make_client(route)
    created = await client.create_webhook(CreateWebhookRequest(url="https://receiver.test/h"))
    rotated = await client.rotate_secret("wh_1")
    errors: list[BaseException] = []
    for call in (
        client.get_webhook("wh_401"),
        client.update_webhook("wh_422", UpdateWebhookRequest(url="http://x.test")),
    ):
        try:
            await call
        except (Unauthorized, ValidationFailed) as exc:
            errors.append(exc)

    assert len(errors) == 2
    assert "[REDACTED]" in str(errors[0])
    texts = [
        str(client),
        repr(client),
        str(created),
        repr(created),
        created.model_dump_json(),
        repr(rotated),
        str(rotated),
        caplog.text,
    ]
    for err in errors:
        texts += [str(err), repr(err), "".join(traceback.format_exception(err))]
    for text in texts:
        _assert_clean(text)
    # The debug log has the request lines (method, path, status), without headers.
    assert "POST /webhooks -> 201" in caplog.text
    assert "GET /webhooks/wh_401 -> 401" in caplog.text


async def test_malformed_create_response_hides_the_secret(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The secret is there but the webhook status is not valid: the validation error
    # (which quotes its input) must not travel with our exception.
    client, recorder = make_client(
        lambda _: httpx.Response(
            201, json={"data": webhook(1, status="weird", signing_secret=SECRET)}
        )
    )
    with pytest.raises(CreateOutcomeUnknown) as info:
        await client.create_webhook(CreateWebhookRequest(url="https://receiver.test/h"))
    assert len(recorder.requests) == 1
    rendered = "".join(traceback.format_exception(info.value))
    chain: list[BaseException] = []
    link: BaseException | None = info.value
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    assert not any(isinstance(e, ValidationError) for e in chain)
    for text in (str(info.value), repr(info.value), rendered, caplog.text):
        _assert_clean(text)
    assert "data.status" in str(info.value)
