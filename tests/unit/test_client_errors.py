"""The client's error tree: status -> class, both V4 error shapes, Retry-After parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blooio_operator.blooio import (
    ApiConnectionError,
    ApiStatusError,
    ApiTimeout,
    BadRequest,
    BlooioClient,
    BlooioError,
    Conflict,
    CreateOutcomeUnknown,
    Forbidden,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    ValidationFailed,
    error_from_response,
    parse_retry_after,
)

API_KEY = "bl_live_errors_key_never_leak_0001"
BASE_URL = "https://api.blooio.test/v4"


def v4_error(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def response(status: int, **kwargs: Any) -> httpx.Response:
    request = httpx.Request("GET", BASE_URL + "/webhooks/wh_1")
    return httpx.Response(status, request=request, **kwargs)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[httpx.Response], BlooioClient]]:
    """A client (no retries) whose every request gets the given canned response."""
    https: list[httpx.AsyncClient] = []

    def make(canned: httpx.Response) -> BlooioClient:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                canned.status_code, headers=canned.headers, content=canned.content
            )

        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        https.append(http)
        return BlooioClient(
            http, SecretStr(API_KEY), base_url=BASE_URL, retry=RetryPolicy(max_retries=0)
        )

    yield make
    for http in https:
        await http.aclose()


def test_the_tree_is_as_contracted() -> None:
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, ValidationFailed):
        assert issubclass(cls, ApiStatusError)
    assert issubclass(RateLimited, ApiStatusError)
    assert issubclass(ServerError, ApiStatusError)
    assert issubclass(UnexpectedResponse, ServerError)
    assert issubclass(ApiStatusError, BlooioError)
    assert issubclass(ApiTimeout, ApiConnectionError)
    assert issubclass(ApiConnectionError, BlooioError)
    assert issubclass(CreateOutcomeUnknown, BlooioError)
    assert not issubclass(CreateOutcomeUnknown, ApiConnectionError)


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "message"),
    [
        (400, v4_error("bad_request", "Malformed JSON"), BadRequest, "bad_request", None),
        (
            401,
            {"error": "Unauthorized", "message": "Invalid API key", "status": 401},
            Unauthorized,
            "Unauthorized",
            "Invalid API key",
        ),
        (
            403,
            {"error": "Forbidden", "message": "Plan does not allow", "status": 403},
            Forbidden,
            "Forbidden",
            "Plan does not allow",
        ),
        (404, v4_error("not_found", "Webhook not found"), NotFound, "not_found", None),
        (409, v4_error("conflict", "Webhook limit reached"), Conflict, "conflict", None),
        (
            422,
            v4_error("validation_error", "url must use https", field="url"),
            ValidationFailed,
            "validation_error",
            "url must use https",
        ),
        (429, v4_error("rate_limited", "Slow down"), RateLimited, "rate_limited", None),
        (500, v4_error("internal_error", "Boom"), ServerError, "internal_error", None),
        (503, v4_error("unavailable", "Try later"), ServerError, "unavailable", None),
    ],
)
async def test_each_status_maps_to_its_class(
    client_for: Callable[[httpx.Response], BlooioClient],
    status: int,
    body: dict[str, Any],
    cls: type[ApiStatusError],
    code: str,
    message: str | None,
) -> None:
    client = client_for(response(status, json=body))
    with pytest.raises(cls) as info:
        await client.get_webhook("wh_1")
    error = info.value
    assert type(error) is cls
    assert error.status == status
    assert error.code == code
    expected = message or body["error"]["message"]
    assert error.message == expected
    text = str(error)
    for part in ("GET", "/webhooks/wh_1", str(status), code, expected):
        assert part in text
    assert API_KEY not in text
    assert API_KEY not in repr(error)


async def test_validation_details_are_kept(
    client_for: Callable[[httpx.Response], BlooioClient],
) -> None:
    client = client_for(response(422, json=v4_error("validation_error", "bad url", field="url")))
    with pytest.raises(ValidationFailed) as info:
        await client.get_webhook("wh_1")
    assert info.value.details == {"field": "url"}


def test_flat_shape_with_explicit_code() -> None:
    error = error_from_response(
        response(401, json={"error": "Unauthorized", "message": "Revoked", "code": "key_revoked"}),
        method="GET",
        path="/webhooks",
    )
    assert isinstance(error, Unauthorized)
    assert (error.code, error.message) == ("key_revoked", "Revoked")


@pytest.mark.parametrize(
    ("kwargs", "expect_in_message"),
    [
        ({"content": b"<html><body>502 Bad Gateway</body></html>"}, "502 Bad Gateway"),
        ({"content": b""}, "Bad Gateway"),
        ({"json": ["not", "an", "object"]}, "not"),
        ({"json": {"error": {"code": 7, "message": None}}}, "Bad Gateway"),
        ({"content": b"\xff\xfe\x00garbage"}, "garbage"),
    ],
)
def test_unparseable_bodies_still_make_an_error(
    kwargs: dict[str, Any], expect_in_message: str
) -> None:
    error = error_from_response(response(502, **kwargs), method="GET", path="/webhooks")
    assert isinstance(error, ServerError)
    assert error.status == 502
    assert error.code is None
    assert expect_in_message in error.message
    assert "\n" not in str(error)


def test_long_and_multiline_messages_are_bounded() -> None:
    error = error_from_response(
        response(500, content=("line\n" * 500).encode()), method="GET", path="/webhooks"
    )
    assert len(error.message) <= 400
    assert "\n" not in error.message


def test_server_text_echoing_the_key_is_scrubbed() -> None:
    error = error_from_response(
        response(400, json=v4_error(f"code_{API_KEY}", f"bad header Bearer {API_KEY}")),
        method="GET",
        path="/webhooks",
        redact=[API_KEY],
    )
    assert API_KEY not in str(error)
    assert API_KEY not in repr(error)
    assert "[REDACTED]" in error.message


@pytest.mark.parametrize(("status", "cls"), [(418, ApiStatusError), (501, ServerError)])
def test_other_statuses(status: int, cls: type[ApiStatusError]) -> None:
    error = error_from_response(response(status, json={}), method="GET", path="/x")
    assert type(error) is cls
    assert error.status == status


def test_subclasses_know_their_status() -> None:
    assert NotFound(code="not_found", message="gone").status == 404
    assert ValidationFailed(message="bad").status == 422
    assert RateLimited(retry_after=3.0).retry_after == 3.0
    assert ApiStatusError(418, "teapot", "short and stout").status == 418
    assert str(NotFound(code="not_found", message="gone")) == "HTTP 404 not_found: gone"


def test_retry_after_is_read_from_the_response() -> None:
    error = error_from_response(
        response(429, json=v4_error("rate_limited", "slow"), headers={"Retry-After": "7"}),
        method="GET",
        path="/webhooks",
    )
    assert isinstance(error, RateLimited)
    assert error.retry_after == 7.0
    assert "retry after 7s" in str(error)


# -- Retry-After -------------------------------------------------------------------------

NOW = datetime(2026, 7, 25, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Sat, 25 Jul 2026 12:00:45 GMT", 45.0),
        (format_datetime(NOW - timedelta(minutes=5), usegmt=True), 0.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        ("nan", None),
        ("inf", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected
