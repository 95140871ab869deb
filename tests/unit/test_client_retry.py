"""Which calls the client retries, how long it waits, and create's outcome-unknown rule."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from blooio_operator.blooio import (
    ApiConnectionError,
    ApiStatusError,
    ApiTimeout,
    BlooioClient,
    BlooioError,
    CreateOutcomeUnknown,
    CreateWebhookRequest,
    RateLimited,
    RetryPolicy,
    ServerError,
    UpdateWebhookRequest,
    backoff_delay,
)

API_KEY = "bl_live_retry_key_never_leak_0001"
BASE_URL = "https://api.blooio.test/v4"

WEBHOOK = {
    "id": "wh_1",
    "url": "https://receiver.test/hook",
    "event_types": ["*"],
    "status": "active",
}
CREATED = {"data": {**WEBHOOK, "signing_secret": "whsec_x"}}
REQUEST = CreateWebhookRequest(url="https://receiver.test/hook")

# A scripted answer: a response, or an httpx exception class to raise.
Step = httpx.Response | type[httpx.RequestError]


class Script:
    """A MockTransport handler that plays the given steps, repeating the last one."""

    def __init__(self, steps: Sequence[Step]):
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, httpx.Response):
            return step
        raise step("scripted failure", request=request)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def error(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": f"e{status}", "message": "nope"}}, headers=headers
    )


def ok(body: dict[str, Any] | None = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {"data": WEBHOOK})


MakeClient = Callable[..., tuple[BlooioClient, Script, Sleeps]]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    https: list[httpx.AsyncClient] = []

    def make(
        steps: Sequence[Step], *, max_retries: int = 2, base: float = 0.5, cap: float = 20.0
    ) -> tuple[BlooioClient, Script, Sleeps]:
        script, sleeps = Script(steps), Sleeps()
        http = httpx.AsyncClient(transport=httpx.MockTransport(script))
        https.append(http)
        policy = RetryPolicy(max_retries=max_retries, base=base, cap=cap, sleep=sleeps)
        client = BlooioClient(http, SecretStr(API_KEY), base_url=BASE_URL, retry=policy)
        return client, script, sleeps

    yield make
    for http in https:
        await http.aclose()


# -- backoff_delay -----------------------------------------------------------------------


def test_default_policy() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.base, policy.cap) == (2, 0.5, 20.0)


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 100, 10_000])
def test_backoff_is_full_jitter_and_capped(attempt: int) -> None:
    ceiling = min(20.0, 0.5 * 2**attempt) if attempt < 64 else 20.0
    delays = [backoff_delay(attempt, base=0.5, cap=20.0, retry_after=None) for _ in range(300)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter spreads over the whole range rather than clustering at the top.
    assert min(delays) < ceiling / 2 < max(delays)


def test_backoff_never_below_retry_after_even_beyond_cap() -> None:
    for attempt in range(5):
        assert backoff_delay(attempt, base=0.5, cap=20.0, retry_after=4.0) >= 4.0
    assert backoff_delay(0, base=0.5, cap=1.0, retry_after=30.0) == 30.0


def test_backoff_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1, base=0.5, cap=20.0, retry_after=None)


# -- idempotent calls ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 408])
async def test_get_is_retried_on_transient_statuses(make_client: MakeClient, status: int) -> None:
    client, script, sleeps = make_client([error(status), error(status), ok()])
    assert (await client.get_webhook("wh_1")).id == "wh_1"
    assert len(script.requests) == 3
    assert len(sleeps.delays) == 2
    for attempt, delay in enumerate(sleeps.delays):
        assert 0 <= delay <= min(20.0, 0.5 * 2**attempt)


async def test_retries_are_bounded_then_the_error_is_raised(make_client: MakeClient) -> None:
    client, script, sleeps = make_client([error(503)])
    with pytest.raises(ServerError) as info:
        await client.get_webhook("wh_1")
    assert info.value.status == 503
    assert len(script.requests) == 3  # 1 + max_retries
    assert len(sleeps.delays) == 2


async def test_no_retries_when_disabled(make_client: MakeClient) -> None:
    client, script, sleeps = make_client([error(503)], max_retries=0)
    with pytest.raises(ServerError):
        await client.get_webhook("wh_1")
    assert len(script.requests) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
async def test_permanent_errors_are_not_retried(make_client: MakeClient, status: int) -> None:
    client, script, sleeps = make_client([error(status), ok()])
    with pytest.raises(ApiStatusError) as info:
        await client.update_webhook("wh_1", UpdateWebhookRequest(url="http://bad"))
    assert info.value.status == status
    assert len(script.requests) == 1
    assert sleeps.delays == []


async def test_backoff_delays_never_exceed_the_cap(make_client: MakeClient) -> None:
    client, script, sleeps = make_client([error(500)], max_retries=6, base=10.0, cap=1.0)
    with pytest.raises(ServerError):
        await client.get_webhook("wh_1")
    assert len(script.requests) == 7
    assert len(sleeps.delays) == 6
    assert all(0 <= d <= 1.0 for d in sleeps.delays)


@pytest.mark.parametrize("retry_after", ["3", "Wed, 21 Oct 2099 07:28:00 GMT"])
async def test_retry_after_is_honoured(make_client: MakeClient, retry_after: str) -> None:
    # The HTTP-date lies far in the future, so it only fits under a very large cap.
    client, script, sleeps = make_client(
        [error(429, {"Retry-After": retry_after}), ok()], cap=10.0**10
    )
    await client.get_webhook("wh_1")
    assert len(script.requests) == 2
    assert sleeps.delays[0] >= 3.0


async def test_retry_after_on_503_is_honoured(make_client: MakeClient) -> None:
    client, _, sleeps = make_client([error(503, {"Retry-After": "5"}), ok()])
    await client.delete_webhook("wh_1")
    assert len(sleeps.delays) == 1
    assert sleeps.delays[0] >= 5.0


async def test_retry_after_beyond_cap_is_handed_up(make_client: MakeClient) -> None:
    client, script, sleeps = make_client([error(429, {"Retry-After": "120"}), ok()], cap=20.0)
    with pytest.raises(RateLimited) as info:
        await client.get_webhook("wh_1")
    assert info.value.retry_after == 120.0
    assert len(script.requests) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize(
    ("exc", "raised"),
    [
        (httpx.ReadTimeout, ApiTimeout),
        (httpx.ConnectTimeout, ApiTimeout),
        (httpx.PoolTimeout, ApiTimeout),
        (httpx.ConnectError, ApiConnectionError),
        (httpx.RemoteProtocolError, ApiConnectionError),
        (httpx.ReadError, ApiConnectionError),
    ],
)
async def test_transport_failures_are_retried_for_idempotent_calls(
    make_client: MakeClient, exc: type[httpx.RequestError], raised: type[BlooioError]
) -> None:
    client, script, _ = make_client([exc, ok()])
    assert (await client.get_webhook("wh_1")).id == "wh_1"
    assert len(script.requests) == 2

    client, script, _ = make_client([exc])
    with pytest.raises(raised) as info:
        await client.get_webhook("wh_1")
    assert type(info.value) is raised
    assert len(script.requests) == 3
    assert info.value.method == "GET"
    assert info.value.path == "/webhooks/wh_1"


@pytest.mark.parametrize("step", [error(503), httpx.ReadTimeout])
async def test_rotate_is_not_retried_when_blooio_may_have_acted(
    make_client: MakeClient, step: Step
) -> None:
    # Each rotate mints a secret: an attempt Blooio holds could commit after a retry and
    # leave the returned secret stale for good (storm finding F2). The reconcile layer
    # rotates again only once the first can no longer commit (secrets.fresh_secret).
    rotated = ok({"data": {"id": "wh_1", "signing_secret": "whsec_new"}})
    client, script, _ = make_client([step, rotated])
    with pytest.raises(BlooioError):
        await client.rotate_secret("wh_1")
    assert len(script.requests) == 1


async def test_rotate_is_retried_after_a_429(make_client: MakeClient) -> None:
    rotated = ok({"data": {"id": "wh_1", "signing_secret": "whsec_new"}})
    client, script, _ = make_client([error(429), rotated])
    await client.rotate_secret("wh_1")
    assert len(script.requests) == 2


@pytest.mark.parametrize("step", [error(503), httpx.ReadTimeout])
async def test_patch_and_delete_are_retried(make_client: MakeClient, step: Step) -> None:
    client, script, _ = make_client([step, ok()])
    await client.update_webhook("wh_1", UpdateWebhookRequest(status="disabled"))
    assert len(script.requests) == 2

    client, script, _ = make_client([step, ok({"data": {"id": "wh_1", "deleted": True}})])
    await client.delete_webhook("wh_1")
    assert len(script.requests) == 2


async def test_list_retries_a_failed_page_only(make_client: MakeClient) -> None:
    first = ok({"data": [WEBHOOK], "has_more": True, "next_cursor": "c2"})
    second = ok({"data": [{**WEBHOOK, "id": "wh_2"}], "has_more": False, "next_cursor": None})
    client, script, _ = make_client([first, error(502), second])
    assert [w.id for w in await client.list_webhooks()] == ["wh_1", "wh_2"]
    assert [r.url.params.get("cursor") for r in script.requests] == [None, "c2", "c2"]


# -- create: not idempotent --------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout,
        httpx.WriteTimeout,
        httpx.RemoteProtocolError,
        httpx.ReadError,
        httpx.WriteError,
    ],
)
async def test_create_after_sending_is_outcome_unknown_and_sent_once(
    make_client: MakeClient, exc: type[httpx.RequestError]
) -> None:
    client, script, sleeps = make_client([exc, ok(CREATED, 201)])
    with pytest.raises(CreateOutcomeUnknown) as info:
        await client.create_webhook(REQUEST)
    assert len(script.requests) == 1
    assert [r.method for r in script.requests] == ["POST"]
    assert sleeps.delays == []
    assert (info.value.method, info.value.path) == ("POST", "/webhooks")
    assert exc.__name__ in str(info.value)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_create_is_retried_when_nothing_was_sent(
    make_client: MakeClient, exc: type[httpx.RequestError]
) -> None:
    client, script, sleeps = make_client([exc, ok(CREATED, 201)])
    created = await client.create_webhook(REQUEST)
    assert created.id == "wh_1"
    assert len(script.requests) == 2
    assert len(sleeps.delays) == 1


@pytest.mark.parametrize(
    ("exc", "raised"),
    [
        (httpx.ConnectError, ApiConnectionError),
        (httpx.ConnectTimeout, ApiTimeout),
        (httpx.PoolTimeout, ApiTimeout),
    ],
)
async def test_create_never_connected_raises_connection_error(
    make_client: MakeClient, exc: type[httpx.RequestError], raised: type[BlooioError]
) -> None:
    client, script, _ = make_client([exc])
    with pytest.raises(raised) as info:
        await client.create_webhook(REQUEST)
    assert type(info.value) is raised
    assert len(script.requests) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_create_is_not_retried_on_5xx(make_client: MakeClient, status: int) -> None:
    client, script, sleeps = make_client([error(status), ok(CREATED, 201)])
    with pytest.raises(ServerError):
        await client.create_webhook(REQUEST)
    assert len(script.requests) == 1
    assert sleeps.delays == []


async def test_create_is_retried_on_429_honouring_retry_after(make_client: MakeClient) -> None:
    client, script, sleeps = make_client([error(429, {"Retry-After": "2"}), ok(CREATED, 201)])
    created = await client.create_webhook(REQUEST)
    assert created.signing_secret.get_secret_value() == "whsec_x"
    assert len(script.requests) == 2
    assert sleeps.delays[0] >= 2.0


async def test_create_with_unreadable_success_body_is_outcome_unknown(
    make_client: MakeClient,
) -> None:
    client, script, _ = make_client([httpx.Response(201, content=b"<html>ok</html>")])
    with pytest.raises(CreateOutcomeUnknown, match="201"):
        await client.create_webhook(REQUEST)
    assert len(script.requests) == 1


# -- replay: not idempotent either -------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "raised"),
    [
        (httpx.ReadTimeout, ApiTimeout),
        (httpx.ReadError, ApiConnectionError),
        (error(503), ServerError),
    ],
)
async def test_replay_is_not_retried_after_sending(
    make_client: MakeClient, step: Step, raised: type[BlooioError]
) -> None:
    client, script, _ = make_client([step, ok({"data": {"id": "wdel_2"}}, 201)])
    with pytest.raises(raised):
        await client.replay_delivery("wh_1", "wdel_1")
    assert len(script.requests) == 1


async def test_replay_is_retried_when_nothing_was_sent(make_client: MakeClient) -> None:
    client, script, _ = make_client([httpx.ConnectError, ok({"data": {"id": "wdel_2"}}, 201)])
    assert (await client.replay_delivery("wh_1", "wdel_1")).id == "wdel_2"
    assert len(script.requests) == 2
