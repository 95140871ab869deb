"""`BlooioClient`: every V4 webhooks endpoint for one API key, with retries.

The client wraps an injected `httpx.AsyncClient` (usually shared through `ClientPool`);
it never creates or closes one. It owns which calls are retried, turning responses into
models or errors, and the per-request log line and metrics hook.

Retry rules (delays come from `retry.backoff_delay`; at most `RetryPolicy.max_retries`
retries; a `Retry-After` longer than `RetryPolicy.cap` is not waited out here but raised
with `retry_after` set, for the reconcile layer to reschedule):

- GET, PATCH and DELETE are retried on 408, 429, 5xx except 501 (the "defined
  but not implemented" status, which will not change), timeouts and connection errors.
  PATCH sets fields, so repeating it is harmless. A DELETE whose first attempt committed
  but whose answer was lost comes back as `NotFound` on the retry; callers already treat
  a 404 on delete as "gone".
- Rotate is not idempotent (each call mints a new secret) and is retried only when
  Blooio cannot have acted (a 429, or nothing sent): an attempt still held on Blooio's
  side could commit after a retry and make the returned secret stale, for good. A lost
  answer surfaces as `ApiTimeout`/`ApiConnectionError` (a 5xx as `ServerError`); the
  reconcile layer records a rotation intent first and rotates again only once the
  earlier attempt can no longer commit (`reconcile.secrets.fresh_secret`).
- Create (`POST /webhooks`) has no idempotency key in V4, so a repeat could create a
  duplicate subscription. It is retried only when Blooio cannot have acted: a 429, or a
  failure before any byte was sent (`ConnectError`, `ConnectTimeout`, `PoolTimeout`),
  which after the last retry surfaces as `ApiConnectionError`/`ApiTimeout`. A timeout or
  connection loss after sending (read/write timeout, `RemoteProtocolError`, `ReadError`,
  `WriteError`...) raises `CreateOutcomeUnknown` at once, and so does a 2xx whose body
  cannot be read (the webhook exists, the secret is lost). A 5xx raises `ServerError`
  without retrying: a 500 or a gateway's 502/504 may come after the commit, so the
  reconcile layer must treat `ServerError` from create like `CreateOutcomeUnknown` and
  list before creating again. Cancellation (`asyncio.CancelledError`) is never converted.
- Replay queues a new delivery; it follows the create rules, except that a failure after
  sending raises `ApiTimeout`/`ApiConnectionError` (a duplicate replay is only a
  duplicate delivery, which receivers must tolerate anyway).

Fencing: with leader election, every request (reads too) is checked against the
leadership term (`fence`) right before it is sent, after any wait for the key's
limiter; past the term it raises `TermOver` and nothing leaves the process.

Secrets: the API key only goes into the `Authorization` header of each request; the
debug log line holds method, path, status, duration and the key's fingerprint; errors
are built by `errors.error_from_response`, which scrubs the key from server text.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from blooio_operator import fence as fencing

from .errors import (
    ApiConnectionError,
    ApiTimeout,
    BlooioError,
    CreateOutcomeUnknown,
    UnexpectedResponse,
    clean_text,
    error_from_response,
)
from .limiter import KeyLimiter
from .models import (
    CreateWebhookRequest,
    DataEnvelope,
    Page,
    ReplayResult,
    RotatedSecret,
    UpdateWebhookRequest,
    Webhook,
    WebhookDelivery,
    WebhookWithSecret,
)
from .retry import DEFAULT_RETRY, RetryPolicy, backoff_delay

__all__ = ["PAGE_LIMIT", "USER_AGENT", "BlooioClient", "OnResponse", "key_fingerprint"]

logger = logging.getLogger("blooio_operator.blooio")

OnResponse = Callable[[str, str, float], None]
"""Metrics hook: (endpoint template, HTTP status or "timeout"/"connection_error", seconds)."""

PAGE_LIMIT = 200
USER_AGENT = "blooio-operator"
# A guard against a server that never stops paging (200 x 1000 = 200k items).
_MAX_PAGES = 1000

_M = TypeVar("_M", bound=BaseModel)


class _Safety(enum.Enum):
    """What a repeat of the request could do on Blooio's side."""

    IDEMPOTENT = "idempotent"  # repeating is harmless: retry any transient failure
    CREATE = "create"  # may duplicate; a lost answer becomes CreateOutcomeUnknown
    UNSAFE = "unsafe"  # may duplicate; a lost answer surfaces as is


# Failures that happen before the request left: retrying them cannot duplicate anything.
# Transport errors whose text comes from the network side (socket errors, timeouts, a
# peer closing): worth showing. Any other one (LocalProtocolError "Illegal header value
# b'Bearer ...'", InvalidURL, ...) may quote what we were about to send, headers
# included, so only its type name is kept.
_TELLING: tuple[type[httpx.RequestError], ...] = (
    httpx.TimeoutException,
    httpx.ConnectError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.CloseError,
    httpx.RemoteProtocolError,
)
_MAX_DETAIL = 160


def _transport_detail(exc: httpx.RequestError, redact: tuple[str, ...]) -> str:
    name = type(exc).__name__
    if not isinstance(exc, _TELLING):
        return name
    text = clean_text(str(exc), redact)
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{name}: {text}" if text else name


_NOT_SENT: tuple[type[httpx.RequestError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


def key_fingerprint(api_key: SecretStr) -> str:
    """A stable, non-reversible identifier of an API key (sha256 hex), for maps and logs."""
    return hashlib.sha256(api_key.get_secret_value().encode()).hexdigest()


def _segment(value: str) -> str:
    if not value:
        raise ValueError("an id must not be empty")
    return quote(value, safe="")


def _status_retryable(status: int, safety: _Safety) -> bool:
    if status == 429:
        return True
    if safety is not _Safety.IDEMPOTENT:
        return False
    return status == 408 or (status >= 500 and status != 501)


def _describe_validation(exc: ValidationError) -> str:
    # Locations and error types only: the input values could include a signing secret.
    problems = [
        f"{'.'.join(str(part) for part in err['loc']) or '<body>'} ({err['type']})"
        for err in exc.errors(include_url=False, include_input=False)[:5]
    ]
    return "; ".join(problems)


class BlooioClient:
    """The Blooio V4 webhooks API for one API key.

    `http` is shared and owned by the caller (see `ClientPool`). `timeout`, when given,
    is passed on every request; otherwise the `http` client's own timeout applies.
    `limiter` bounds concurrency and rate for this key; `on_response` is called once per
    HTTP attempt for metrics and must not raise (errors in it are logged and ignored).
    `fence` is the leadership term every request is checked against (default: the running
    operator's, `fence.current()`; None without leader election).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: SecretStr,
        *,
        base_url: str,
        retry: RetryPolicy = DEFAULT_RETRY,
        limiter: KeyLimiter | None = None,
        timeout: httpx.Timeout | None = None,
        on_response: OnResponse | None = None,
        fence: fencing.Fence | None = None,
    ):
        self._http = http
        self._fence = fence if fence is not None else fencing.current()
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._retry = retry
        self._limiter = limiter
        self._timeout = timeout
        self._on_response = on_response
        self._fingerprint = key_fingerprint(api_key)

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def key_fingerprint(self) -> str:
        """Short fingerprint of the API key, safe to log."""
        return self._fingerprint[:12]

    @property
    def limiter(self) -> KeyLimiter | None:
        return self._limiter

    def __repr__(self) -> str:
        return f"BlooioClient(base_url={self._base_url!r}, key=sha256:{self.key_fingerprint})"

    # -- webhooks -------------------------------------------------------------------

    async def list_webhooks(self) -> list[Webhook]:
        """Every webhook visible to the key, following all pages (limit=200)."""
        return await self._list_all("/webhooks", "GET /webhooks", Page[Webhook])

    async def create_webhook(self, request: CreateWebhookRequest) -> WebhookWithSecret:
        """Create a webhook; the result carries the signing secret (returned only now).

        Raises `CreateOutcomeUnknown` when the request may have been committed but no
        usable answer arrived; a `ServerError` here means the same (see module docs).
        """
        method, path = "POST", "/webhooks"
        response = await self._request(
            method, path, endpoint="POST /webhooks", safety=_Safety.CREATE, body=request.to_wire()
        )
        try:
            envelope = self._parse(response, DataEnvelope[WebhookWithSecret], method, path)
        except UnexpectedResponse as exc:
            raise CreateOutcomeUnknown(
                f"Blooio answered HTTP {exc.status} but the body is unusable ({exc.message});"
                " the webhook probably exists and its secret is lost",
                method=method,
                path=path,
            ) from exc
        return envelope.data

    async def get_webhook(self, webhook_id: str) -> Webhook:
        path = f"/webhooks/{_segment(webhook_id)}"
        response = await self._request(
            "GET", path, endpoint="GET /webhooks/{id}", safety=_Safety.IDEMPOTENT
        )
        return self._parse(response, DataEnvelope[Webhook], "GET", path).data

    async def update_webhook(self, webhook_id: str, request: UpdateWebhookRequest) -> Webhook:
        """PATCH the fields set in `request`; unset fields stay as they are."""
        path = f"/webhooks/{_segment(webhook_id)}"
        response = await self._request(
            "PATCH",
            path,
            endpoint="PATCH /webhooks/{id}",
            safety=_Safety.IDEMPOTENT,
            body=request.to_wire(),
        )
        return self._parse(response, DataEnvelope[Webhook], "PATCH", path).data

    async def delete_webhook(self, webhook_id: str) -> None:
        """Delete a webhook. Raises `NotFound` if it is already gone."""
        path = f"/webhooks/{_segment(webhook_id)}"
        await self._request(
            "DELETE", path, endpoint="DELETE /webhooks/{id}", safety=_Safety.IDEMPOTENT
        )

    async def rotate_secret(self, webhook_id: str) -> RotatedSecret:
        """Mint a new signing secret; the old one stops working (see module docs)."""
        path = f"/webhooks/{_segment(webhook_id)}/secret/rotate"
        response = await self._request(
            "POST",
            path,
            endpoint="POST /webhooks/{id}/secret/rotate",
            safety=_Safety.UNSAFE,
        )
        return self._parse(response, DataEnvelope[RotatedSecret], "POST", path).data

    # -- deliveries -----------------------------------------------------------------

    async def list_deliveries(self, webhook_id: str) -> list[WebhookDelivery]:
        """Every recent delivery attempt of a webhook, following all pages."""
        return await self._list_all(
            f"/webhooks/{_segment(webhook_id)}/deliveries",
            "GET /webhooks/{id}/deliveries",
            Page[WebhookDelivery],
        )

    async def list_deliveries_bounded(
        self, webhook_id: str, *, max_pages: int
    ) -> tuple[list[WebhookDelivery], bool]:
        """At most ``max_pages`` pages (limit=200) of a webhook's deliveries, in the order
        Blooio sends them (undocumented: sort them yourself), and whether that was all.
        """
        path = f"/webhooks/{_segment(webhook_id)}/deliveries"
        items: list[WebhookDelivery] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(max(1, max_pages)):
            params: dict[str, str | int] = {"limit": PAGE_LIMIT}
            if cursor is not None:
                params["cursor"] = cursor
            response = await self._request(
                "GET",
                path,
                endpoint="GET /webhooks/{id}/deliveries",
                safety=_Safety.IDEMPOTENT,
                params=params,
            )
            page = self._parse(response, Page[WebhookDelivery], "GET", path)
            items.extend(page.data)
            if not page.has_more and page.next_cursor is None:
                return items, True
            if page.next_cursor is None or page.next_cursor in seen:
                raise UnexpectedResponse(
                    response.status_code,
                    "invalid_pagination",
                    "has_more is true but next_cursor is null or repeats",
                    method="GET",
                    path=path,
                )
            cursor = page.next_cursor
            seen.add(cursor)
        return items, False

    async def replay_delivery(self, webhook_id: str, delivery_id: str) -> ReplayResult:
        """Queue a replay of a past delivery (asynchronous on Blooio's side)."""
        path = f"/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/replay"
        response = await self._request(
            "POST",
            path,
            endpoint="POST /webhooks/{id}/deliveries/{delivery_id}/replay",
            safety=_Safety.UNSAFE,
        )
        return self._parse(response, DataEnvelope[ReplayResult], "POST", path).data

    # -- plumbing -------------------------------------------------------------------

    async def _list_all(self, path: str, endpoint: str, page_model: type[Page[_M]]) -> list[_M]:
        items: list[_M] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            params: dict[str, str | int] = {"limit": PAGE_LIMIT}
            if cursor is not None:
                params["cursor"] = cursor
            response = await self._request(
                "GET", path, endpoint=endpoint, safety=_Safety.IDEMPOTENT, params=params
            )
            page = self._parse(response, page_model, "GET", path)
            items.extend(page.data)
            if not page.has_more and page.next_cursor is None:
                return items
            # A partial list would look like missing webhooks and trigger duplicate
            # creates, so an inconsistent page is an error, not an early end.
            if page.next_cursor is None:
                problem = "has_more is true but next_cursor is null"
            elif page.next_cursor in seen:
                problem = "next_cursor repeats an earlier cursor"
            else:
                cursor = page.next_cursor
                seen.add(cursor)
                continue
            raise UnexpectedResponse(
                response.status_code, "invalid_pagination", problem, method="GET", path=path
            )
        raise UnexpectedResponse(
            200, "invalid_pagination", f"more than {_MAX_PAGES} pages", method="GET", path=path
        )

    @staticmethod
    def _parse(response: httpx.Response, model: type[_M], method: str, path: str) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            problem = _describe_validation(exc)
        # Raised outside the except block so the ValidationError (whose text includes
        # the input, possibly a signing secret) is not even kept as __context__.
        raise UnexpectedResponse(
            response.status_code,
            "invalid_response",
            f"response body does not match the V4 schema: {problem}",
            method=method,
            path=path,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        safety: _Safety,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response or raise a `BlooioError`."""
        policy = self._retry
        attempt = 0
        while True:
            retry_after: float | None = None
            failure: BlooioError
            try:
                response = await self._send_once(method, path, endpoint, attempt, params, body)
            except httpx.RequestError as exc:
                failure = self._transport_failure(exc, method, path, safety)
                retryable = safety is _Safety.IDEMPOTENT or isinstance(exc, _NOT_SENT)
                if not retryable or attempt >= policy.max_retries:
                    # A cause that may quote our headers stays out of any traceback.
                    raise failure from (exc if isinstance(exc, _TELLING) else None)
            else:
                if response.is_success:
                    return response
                status_error = error_from_response(
                    response, method=method, path=path, redact=self._redact()
                )
                retry_after = status_error.retry_after
                if (
                    not _status_retryable(response.status_code, safety)
                    or attempt >= policy.max_retries
                    or (retry_after is not None and retry_after > policy.cap)
                ):
                    raise status_error
                failure = status_error
            delay = backoff_delay(
                attempt, base=policy.base, cap=policy.cap, retry_after=retry_after
            )
            attempt += 1
            # DEBUG: under a lasting outage this would be lines per resource per try; the
            # outcome is logged once per episode (reconcile.episodes) and once per key
            # per failed list (reconcile.snapshots).
            logger.debug(
                "blooio %s %s failed (%s); retry %d of %d in %.2fs",
                method,
                path,
                failure.message,
                attempt,
                policy.max_retries,
                delay,
            )
            await policy.sleep(delay)

    async def _send_once(
        self,
        method: str,
        path: str,
        endpoint: str,
        attempt: int,
        params: Mapping[str, str | int] | None,
        body: Mapping[str, Any] | None,
    ) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        slot: AbstractAsyncContextManager[None] = (
            self._limiter.slot() if self._limiter is not None else nullcontext()
        )
        async with slot:
            if self._fence is not None:
                # Last thing before the request leaves: after the limiter's wait, which
                # can outlast a term.
                self._fence.check(f"{method} {path}")
            started = time.perf_counter()
            try:
                response = await self._http.request(
                    method,
                    self._base_url + path,
                    params=params,
                    json=body,
                    headers=headers,
                    timeout=self._timeout
                    if self._timeout is not None
                    else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.RequestError as exc:
                outcome = (
                    "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_error"
                )
                self._observe(method, path, endpoint, attempt, outcome, started, type(exc).__name__)
                raise
        self._observe(method, path, endpoint, attempt, str(response.status_code), started, None)
        return response

    def _observe(
        self,
        method: str,
        path: str,
        endpoint: str,
        attempt: int,
        status: str,
        started: float,
        exc_name: str | None,
    ) -> None:
        seconds = time.perf_counter() - started
        logger.debug(
            "blooio %s %s -> %s in %.3fs (attempt %d, key sha256:%s)",
            method,
            path,
            f"{status} ({exc_name})" if exc_name else status,
            seconds,
            attempt + 1,
            self.key_fingerprint,
        )
        if self._on_response is None:
            return
        try:
            self._on_response(endpoint, status, seconds)
        except Exception:
            logger.warning("on_response hook failed for %s", endpoint, exc_info=True)

    def _transport_failure(
        self, exc: httpx.RequestError, method: str, path: str, safety: _Safety
    ) -> BlooioError:
        detail = _transport_detail(exc, self._redact())
        if safety is _Safety.CREATE and not isinstance(exc, _NOT_SENT):
            return CreateOutcomeUnknown(
                f"no answer after the request was sent ({detail});"
                " the webhook may or may not exist",
                method=method,
                path=path,
            )
        if isinstance(exc, httpx.TimeoutException):
            return ApiTimeout(f"timed out ({detail})", method=method, path=path)
        return ApiConnectionError(f"connection failed ({detail})", method=method, path=path)

    def _redact(self) -> tuple[str]:
        return (self._api_key.get_secret_value(),)
