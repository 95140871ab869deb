"""The Blooio simulator's HTTP server: the V4 webhooks API and the ``/_sim`` admin API.

Owns :class:`Simulator` (construction, start/stop, in-process helpers), the aiohttp
handlers of every ``/v4`` webhooks endpoint (auth, validation, pagination, rotate,
deliveries, replay), the middleware that records calls and applies faults, outbound
signed deliveries, and the unauthenticated admin endpoints under ``/_sim/``.
State lives in :mod:`.state`, validation rules in :mod:`.validation`, faults in
:mod:`.faults`, signing in :mod:`.signing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from .faults import FaultConfigError, FaultRule, Faults
from .signing import SIGNATURE_HEADER, sign
from .state import (
    DeliveryRecord,
    InvalidCursor,
    SimulatorState,
    WebhookRecord,
    api_key_fingerprint,
    decode_cursor,
    encode_cursor,
    now_ms,
)
from .validation import (
    CHANNEL_TYPES,
    DEFAULT_CHANNELS,
    EVENT_TYPES,
    FieldError,
    subscription_matches,
    validate_channel,
    validate_event_types,
    validate_status,
    validate_url,
)

log = logging.getLogger("blooio_operator.simulator")

API_PREFIX: Final = "/v4"
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
USER_AGENT: Final = "Blooio-Simulator/1.0"
_LIMIT_RE: Final = re.compile(r"[0-9]{1,6}")
_ERROR_CODES: Final[Mapping[int, str]] = {
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

_API_KEY_ID: Final = web.RequestKey("api_key_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error response of the V4 API (or the admin API); raised by handlers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "error": {"code": code, "message": message, "details": dict(details or {})}
        }
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


class AuthFailure(ApiError):
    """401/403 from the auth layer, in the flat ``AuthError`` shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, "", message)
        error = "Unauthorized" if status == 401 else "Forbidden"
        self.body = {
            "error": error,
            "message": message,
            "status": status,
            "code": error.lower(),
        }


@dataclass(frozen=True)
class Principal:
    """The organisation and key fingerprint a request authenticated as."""

    org: str
    api_key_id: str


class _Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


_T = TypeVar("_T", bound=_Sequenced)


def paginate(items: Iterable[_T], after: int, limit: int) -> tuple[list[_T], bool]:
    """Items with ``seq > after`` (in order), at most ``limit``, and whether more follow."""
    page: list[_T] = []
    for item in items:
        if item.seq <= after:
            continue
        if len(page) == limit:
            return page, True
        page.append(item)
    return page, False


class CallLog:
    """Every ``/v4`` request the simulator received (bounded) and per-endpoint counts."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self.counts: Counter[str] = Counter()

    def start(self, request: web.Request, endpoint: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "endpoint": endpoint,
            "status": None,
            "ts": time.time(),
            "duration_ms": None,
            "fault": None,
            "api_key_id": None,
        }
        self.entries.append(entry)
        if endpoint is not None:
            self.counts[endpoint] += 1
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.counts.clear()

    def to_dict(self) -> dict[str, Any]:
        return {"calls": list(self.entries), "counts": dict(self.counts)}


def _bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _abort_connection(request: web.Request) -> None:
    """Close the client connection with a TCP RST and without a response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _format_retry_after(seconds: float) -> str:
    # HTTP delta-seconds is an integer; fractional values (non-standard) are kept
    # only when a test asks for them, to keep backoff tests fast.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


async def _read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    return body


def _page_params(request: web.Request, kind: str) -> tuple[int, int]:
    """``(limit, after_seq)`` from the query; 400 for out-of-range limits or bad cursors."""
    raw_limit = request.query.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not _LIMIT_RE.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ApiError(
                400,
                "invalid_parameter",
                f"limit must be an integer between 1 and {MAX_LIMIT}",
                {"field": "limit"},
            )
        limit = int(raw_limit)
    cursor = request.query.get("cursor")
    after = 0
    if cursor:
        try:
            after = decode_cursor(kind, cursor)
        except InvalidCursor:
            raise ApiError(
                400, "invalid_cursor", "cursor is not valid", {"field": "cursor"}
            ) from None
    return limit, after


def _list_body(items: list[dict[str, Any]], has_more: bool, cursor: str | None) -> dict[str, Any]:
    return {"data": items, "has_more": has_more, "next_cursor": cursor if has_more else None}


class Simulator:
    """A stateful, fault-injectable simulator of the Blooio V4 webhooks API.

    Each API key is its own organisation unless ``organizations`` maps keys to shared
    organisation names. ``forbidden_keys`` authenticate but get 403 on every call.
    Use in-process (``await sim.start()`` or ``aiohttp.test_utils.TestServer(sim.app)``)
    or as its own process (``blooio-operator simulate``).
    """

    def __init__(
        self,
        api_keys: Iterable[str],
        channels: Mapping[str, str] | None = None,
        *,
        forbidden_keys: Iterable[str] = (),
        organizations: Mapping[str, str] | None = None,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        seed: int | None = None,
        delivery_timeout: float = 10.0,
        verify_tls: bool = True,
        max_calls_logged: int = 100_000,
        replay_delay: float = 0.0,
    ) -> None:
        self._keys: dict[str, Principal] = {}
        self._forbidden: set[str] = set()
        organizations = dict(organizations or {})
        for key in api_keys:
            self.add_api_key(key, organization=organizations.get(key))
        for key in forbidden_keys:
            self.add_api_key(key, organization=organizations.get(key), forbidden=True)
        self.channels: dict[str, str] = dict(DEFAULT_CHANNELS if channels is None else channels)
        for channel_id, channel_type in self.channels.items():
            if channel_type not in CHANNEL_TYPES:
                raise ValueError(f"channel {channel_id!r} has unknown type {channel_type!r}")
        id_rng = None
        if seed is not None:
            id_rng = random.Random(seed + 1)  # noqa: S311 - reproducible ids, not crypto
        self.state = SimulatorState(id_rng)
        self.faults = Faults(latency_ms=latency_ms, jitter_ms=jitter_ms, seed=seed)
        self.calls = CallLog(max_calls_logged)
        self.delivery_timeout = delivery_timeout
        # A queued replay waits this long (status "queued") before it is sent: V4 replay
        # is asynchronous, and its outcome arrives later.
        self.replay_delay = replay_delay
        self.verify_tls = verify_tls
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base: str | None = None
        self._templates: dict[tuple[str, str], str] = {}
        self.app = self._build_app()

    # --- keys ----------------------------------------------------------------------------

    def add_api_key(
        self, api_key: str, *, organization: str | None = None, forbidden: bool = False
    ) -> str:
        """Accept ``api_key`` from now on; returns its fingerprint (``api_key_id``)."""
        if not api_key:
            raise ValueError("API keys must be non-empty")
        key_id = api_key_fingerprint(api_key)
        self._keys[api_key] = Principal(organization or "org_" + key_id[4:], key_id)
        if forbidden:
            self._forbidden.add(api_key)
        else:
            self._forbidden.discard(api_key)
        return key_id

    def revoke_api_key(self, api_key: str) -> bool:
        """Stop accepting ``api_key`` (its webhooks stay); returns whether it was known."""
        self._forbidden.discard(api_key)
        return self._keys.pop(api_key, None) is not None

    @property
    def api_key_ids(self) -> list[str]:
        return [p.api_key_id for p in self._keys.values()]

    def _authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not header.strip():
            raise AuthFailure(401, "Missing API key: send Authorization: Bearer <key>")
        if scheme.lower() != "bearer" or not token:
            raise AuthFailure(401, "Malformed Authorization header; expected Bearer <key>")
        principal = self._keys.get(token)
        if principal is None:
            raise AuthFailure(401, "Invalid API key")
        request[_API_KEY_ID] = principal.api_key_id
        if token in self._forbidden:
            raise AuthFailure(403, "This API key is not allowed to manage webhooks")
        return principal

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port); returns the base URL ending in ``/v4``."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._closing.clear()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        self._runner = runner
        bound_port = int(runner.addresses[0][1])
        url_host = f"[{host}]" if ":" in host else host
        self._base = f"http://{url_host}:{bound_port}"
        log.info("Blooio simulator listening on %s%s", self._base, API_PREFIX)
        return self.url

    async def stop(self) -> None:
        """Abort hanging requests, cancel queued deliveries, close the listener."""
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        else:
            await self._shutdown_background()

    async def __aenter__(self) -> Simulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def admin_url(self) -> str:
        """Server root (``http://host:port``), where ``/_sim/`` lives."""
        if self._base is None:
            raise RuntimeError("simulator not started")
        return self._base

    @property
    def url(self) -> str:
        """Base URL of the V4 API (``http://host:port/v4``)."""
        return self.admin_url + API_PREFIX

    def reset(self) -> None:
        """Forget webhooks, deliveries and calls; clear faults; cancel queued replays."""
        for task in list(self._tasks):
            task.cancel()
        self.state.clear()
        self.calls.clear()
        self.faults.clear()

    async def drain(self) -> None:
        """Wait until queued replays have been attempted (bound it with asyncio.timeout)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def _shutdown_background(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # --- app wiring -----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])

        async def on_shutdown(_: web.Application) -> None:
            self._closing.set()

        async def on_cleanup(_: web.Application) -> None:
            await self._shutdown_background()

        app.on_shutdown.append(on_shutdown)
        app.on_cleanup.append(on_cleanup)

        api: list[tuple[str, str, str, Handler]] = [
            ("GET", "/webhooks", "GET /webhooks", self._list_webhooks),
            ("POST", "/webhooks", "POST /webhooks", self._create_webhook),
            ("GET", "/webhooks/{id}", "GET /webhooks/{id}", self._get_webhook),
            ("PATCH", "/webhooks/{id}", "PATCH /webhooks/{id}", self._update_webhook),
            ("DELETE", "/webhooks/{id}", "DELETE /webhooks/{id}", self._delete_webhook),
            (
                "POST",
                "/webhooks/{id}/secret/rotate",
                "POST /webhooks/{id}/secret/rotate",
                self._rotate_secret,
            ),
            (
                "GET",
                "/webhooks/{id}/deliveries",
                "GET /webhooks/{id}/deliveries",
                self._list_deliveries,
            ),
            ("GET", "/webhooks/{id}/logs", "GET /webhooks/{id}/deliveries", self._list_deliveries),
            (
                "POST",
                "/webhooks/{id}/deliveries/{delivery_id}/replay",
                "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
                self._replay_delivery,
            ),
            (
                "POST",
                "/webhooks/{id}/logs/{delivery_id}/replay",
                "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
                self._replay_delivery,
            ),
        ]
        for method, path, template, handler in api:
            full = API_PREFIX + path
            app.router.add_route(method, full, handler)
            self._templates[(method, full)] = template

        admin: list[tuple[str, str, Handler]] = [
            ("GET", "/_sim/health", self._admin_health),
            ("GET", "/_sim/webhooks", self._admin_list_webhooks),
            ("GET", "/_sim/webhooks/{id}", self._admin_get_webhook),
            ("PATCH", "/_sim/webhooks/{id}", self._admin_patch_webhook),
            ("DELETE", "/_sim/webhooks/{id}", self._admin_delete_webhook),
            ("GET", "/_sim/webhooks/{id}/deliveries", self._admin_list_deliveries),
            ("POST", "/_sim/webhooks/{id}/deliver", self._admin_deliver),
            ("GET", "/_sim/calls", self._admin_calls),
            ("POST", "/_sim/calls/reset", self._admin_reset_calls),
            ("POST", "/_sim/reset", self._admin_reset),
            ("GET", "/_sim/faults", self._admin_get_faults),
            ("PUT", "/_sim/faults", self._admin_put_faults),
            ("POST", "/_sim/faults", self._admin_add_faults),
            ("DELETE", "/_sim/faults", self._admin_clear_faults),
            ("POST", "/_sim/keys", self._admin_add_key),
            ("POST", "/_sim/keys/revoke", self._admin_revoke_key),
        ]
        for method, path, handler in admin:
            app.router.add_route(method, path, handler)
        return app

    def _endpoint_of(self, request: web.Request) -> str | None:
        route = request.match_info.route
        resource = route.resource
        if resource is None:
            return None
        return self._templates.get((route.method, resource.canonical))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        is_api = request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")
        if not is_api:
            return await self._run_handler(request, handler)
        endpoint = self._endpoint_of(request)
        entry = self.calls.start(request, endpoint)
        known = self._keys.get(_bearer_token(request))
        if known is not None:
            request[_API_KEY_ID] = known.api_key_id
        started = time.monotonic()
        try:
            response, fault, answered = await self._handle_api(request, handler, endpoint)
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            entry["api_key_id"] = request.get(_API_KEY_ID)
        entry["fault"] = fault
        # The status the handler produced, even when commit_then_drop kept it from the
        # client; None when nothing was processed (reset, or a hang the client gave up on).
        entry["status"] = response.status if answered else None
        return response

    async def _handle_api(
        self, request: web.Request, handler: Handler, endpoint: str | None
    ) -> tuple[web.StreamResponse, str | None, bool]:
        """Apply latency and faults around the handler: (response, fault kind, processed)."""
        # Faults are keyed per API key for token buckets; use a fingerprint, never the key.
        bucket_key = api_key_fingerprint(request.headers.get("Authorization", ""))
        # Receive the whole body first, as a real server does before processing: a
        # request held by a fault must still be processable after the client left.
        with contextlib.suppress(ConnectionError, aiohttp.ClientPayloadError):
            await request.read()
        delay = self.faults.delay_seconds(endpoint, bucket_key)
        if delay > 0:
            await asyncio.sleep(delay)
        picked = self.faults.pick(endpoint, bucket_key, after_commit=False)
        if picked is not None:
            rule, retry_after = picked
            early = await self._apply_pre_fault(request, rule, retry_after)
            if early is not None:
                processed = rule.kind in ("error", "rate_limit")
                return early, rule.kind, processed
        response = await self._run_handler(request, handler)
        if 200 <= response.status < 300:
            dropped = self.faults.pick(endpoint, bucket_key, after_commit=True)
            if dropped is not None:
                _abort_connection(request)
                return response, dropped[0].kind, True
        return response, None if picked is None else picked[0].kind, True

    async def _apply_pre_fault(
        self, request: web.Request, rule: FaultRule, retry_after: float
    ) -> web.StreamResponse | None:
        """Answer (or not) according to ``rule``; ``None`` means "handle normally"."""
        if rule.kind == "error":
            headers = {"Retry-After": _format_retry_after(retry_after)} if retry_after else {}
            if rule.body is not None:
                return web.Response(
                    status=rule.status, text=rule.body, content_type="text/plain", headers=headers
                )
            code = _ERROR_CODES.get(
                rule.status, "internal_error" if rule.status >= 500 else "error"
            )
            return ApiError(
                rule.status, code, f"simulated error (HTTP {rule.status})", headers=headers
            ).response()
        if rule.kind == "rate_limit":
            header = _format_retry_after(retry_after)
            return ApiError(
                429,
                "rate_limited",
                "Too many requests; retry later",
                {"retry_after": retry_after},
                headers={"Retry-After": header},
            ).response()
        if rule.kind == "connection_reset":
            _abort_connection(request)
            return web.Response(status=499)
        if rule.kind == "hang":
            finished = await self._hang(request, rule.seconds)
            if not finished:
                return web.Response(status=499)
        return None

    async def _hang(self, request: web.Request, seconds: float | None) -> bool:
        """Hold the request: for ``seconds`` (then True, even if the client left), or
        until the client goes away (False)."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            transport = request.transport
            if deadline is None and (transport is None or transport.is_closing()):
                return False
            if self._closing.is_set():
                _abort_connection(request)
                return False
            step = 0.05
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return True
                step = min(step, remaining)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=step)

    async def _run_handler(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        is_api = request.path.startswith(API_PREFIX)
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except web.HTTPNotFound:
            where = "API" if is_api else "admin API"
            return ApiError(
                404, "route_not_found", f"no {where} route {request.method} {request.path}"
            ).response()
        except web.HTTPMethodNotAllowed as exc:
            return ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.path}",
                {"allowed": sorted(exc.allowed_methods)},
            ).response()
        except web.HTTPException as exc:
            return ApiError(exc.status, "http_error", exc.reason).response()
        except Exception:
            log.exception("simulator handler failed for %s %s", request.method, request.path)
            return ApiError(500, "internal_error", "simulator internal error").response()

    # --- V4 webhooks API ------------------------------------------------------------------

    def _find(self, request: web.Request, principal: Principal) -> WebhookRecord:
        webhook_id = request.match_info["id"]
        record = self.state.get(webhook_id, principal.org)
        if record is None:
            raise ApiError(404, "not_found", f"No webhook with id {webhook_id}", {"id": webhook_id})
        return record

    async def _list_webhooks(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        limit, after = _page_params(request, "wh")
        page, has_more = paginate(self.state.for_org(principal.org).values(), after, limit)
        cursor = encode_cursor("wh", page[-1].seq) if page else None
        return _json_response(_list_body([r.to_wire() for r in page], has_more, cursor))

    async def _create_webhook(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        body = await _read_json_object(request)
        try:
            if body.get("url") is None:
                raise FieldError("url", "url is required")
            url = validate_url(body["url"])
            raw_types = body.get("event_types")
            event_types = ["*"] if raw_types is None else validate_event_types(raw_types)
            channel_id, channel_type = validate_channel(
                body.get("channel_id"), body.get("channel_type"), self.channels
            )
        except FieldError as exc:
            raise ApiError(422, "validation_error", exc.message, exc.details) from None
        record = WebhookRecord(
            id=self.state.new_webhook_id(),
            org=principal.org,
            api_key_id=principal.api_key_id,
            url=url,
            event_types=event_types,
            status="active",
            channel_id=channel_id,
            channel_type=channel_type,
            created_at=now_ms(),
            signing_secret=self.state.new_secret(),
            seq=self.state.next_seq(),
        )
        self.state.add(record)
        return _json_response({"data": record.to_wire_with_secret()}, status=201)

    async def _get_webhook(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        return _json_response({"data": self._find(request, principal).to_wire()})

    async def _update_webhook(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        record = self._find(request, principal)
        body = await _read_json_object(request)
        changes: dict[str, Any] = {}
        try:
            for immutable in ("channel_id", "channel_type"):
                if immutable in body:
                    raise FieldError(
                        immutable, f"{immutable} cannot be changed; delete and recreate"
                    )
            if body.get("url") is not None:
                changes["url"] = validate_url(body["url"])
            if body.get("event_types") is not None:
                changes["event_types"] = validate_event_types(body["event_types"])
            if body.get("status") is not None:
                changes["status"] = validate_status(body["status"])
            if not changes:
                raise FieldError(
                    "body", "supply at least one of url, event_types, status to update"
                )
        except FieldError as exc:
            raise ApiError(422, "validation_error", exc.message, exc.details) from None
        for name, value in changes.items():
            setattr(record, name, value)
        return _json_response({"data": record.to_wire()})

    async def _delete_webhook(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        record = self._find(request, principal)
        self.state.remove(record.id)
        return _json_response({"data": {"id": record.id, "deleted": True}})

    async def _rotate_secret(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        record = self._find(request, principal)
        secret = self.state.rotate(record)
        return _json_response({"data": {"id": record.id, "signing_secret": secret}})

    async def _list_deliveries(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        record = self._find(request, principal)
        limit, after = _page_params(request, "wdel")
        page, has_more = paginate(record.deliveries.values(), after, limit)
        cursor = encode_cursor("wdel", page[-1].seq) if page else None
        return _json_response(_list_body([d.to_wire() for d in page], has_more, cursor))

    async def _replay_delivery(self, request: web.Request) -> web.Response:
        principal = self._authenticate(request)
        record = self._find(request, principal)
        delivery_id = request.match_info["delivery_id"]
        original = record.deliveries.get(delivery_id)
        if original is None:
            raise ApiError(
                404,
                "not_found",
                f"No delivery with id {delivery_id} for webhook {record.id}",
                {"id": delivery_id},
            )
        if record.status != "active":
            raise ApiError(
                400,
                "webhook_disabled",
                "cannot replay deliveries of a disabled webhook",
                {"webhook_id": record.id},
            )
        replay = DeliveryRecord(
            id=self.state.new_delivery_id(),
            webhook_id=record.id,
            event_id=original.event_id,
            event_type=original.event_type,
            body=original.body,
            target_url=original.target_url if original.target_overridden else record.url,
            target_overridden=original.target_overridden,
            replay_of=original.id,
            seq=self.state.next_seq(),
        )
        record.deliveries[replay.id] = replay
        task = asyncio.get_running_loop().create_task(
            self._attempt_later(
                record,
                replay,
                self.replay_delay,
                extra_headers={"X-Blooio-Replay": "true", "X-Original-Event-Id": replay.event_id},
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return _json_response(
            {"data": {"id": replay.id, "replay_of": original.id, "status": replay.status}},
            status=201,
        )

    # --- deliveries -------------------------------------------------------------------------

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.verify_tls)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def _attempt_later(
        self,
        record: WebhookRecord,
        delivery: DeliveryRecord,
        delay: float,
        *,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await self._attempt(record, delivery, timestamp=None, extra_headers=extra_headers)

    async def _attempt(
        self,
        record: WebhookRecord,
        delivery: DeliveryRecord,
        *,
        timestamp: int | None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """POST the delivery's body, signed with the webhook's current secret."""
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(record.signing_secret, ts, delivery.body),
            "X-Blooio-Event": delivery.event_type,
            **(extra_headers or {}),
        }
        delivery.status = "sending"
        try:
            async with self._client_session().post(
                delivery.target_url,
                data=delivery.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.delivery_timeout),
            ) as response:
                await response.read()
                delivery.response_status = response.status
                delivery.status = "delivered" if 200 <= response.status < 300 else "failed"
                delivery.error = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            delivery.status = "failed"
            delivery.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            delivery.attempt_count += 1
            delivery.last_attempt_at = now_ms()

    async def deliver(
        self,
        webhook_id: str,
        event_type: str = "message.received",
        data: Mapping[str, Any] | None = None,
        *,
        target_url: str | None = None,
        timestamp: int | None = None,
        force: bool = False,
    ) -> DeliveryRecord:
        """Send one signed event to the webhook (or ``target_url``) and record it.

        Raises :class:`ApiError` (404 unknown webhook, 422 bad input, 409 when the webhook
        is disabled or not subscribed to ``event_type`` and ``force`` is false).
        """
        record = self.state.get(webhook_id)
        if record is None:
            raise ApiError(404, "not_found", f"No webhook with id {webhook_id}")
        if event_type not in EVENT_TYPES:
            raise ApiError(
                422,
                "validation_error",
                f"event_type must be a concrete event type, got {event_type!r}",
                {"field": "event_type"},
            )
        if target_url is not None:
            parts = urlsplit(target_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ApiError(
                    422,
                    "validation_error",
                    "target_url must be an absolute http(s) URL",
                    {"field": "target_url"},
                )
        if not force:
            if record.status != "active":
                raise ApiError(409, "webhook_disabled", "the webhook is disabled")
            if not subscription_matches(record.event_types, event_type):
                raise ApiError(
                    409,
                    "not_subscribed",
                    f"the webhook is not subscribed to {event_type}",
                    {"event_types": record.event_types},
                )
        payload = dict(data or {})
        occurred_at = now_ms()
        event_id = self.state.new_event_id()
        event = {
            "id": event_id,
            "type": event_type,
            "occurred_at": occurred_at,
            "created_at": occurred_at,
            "organization_id": record.org,
            "message_id": payload.get("message_id"),
            "chat_id": payload.get("chat_id"),
            "channel_type": record.channel_type,
            "data": payload,
        }
        delivery = DeliveryRecord(
            id=self.state.new_delivery_id(),
            webhook_id=record.id,
            event_id=event_id,
            event_type=event_type,
            body=json.dumps(event, separators=(",", ":")).encode(),
            target_url=target_url or record.url,
            target_overridden=target_url is not None,
            seq=self.state.next_seq(),
        )
        record.deliveries[delivery.id] = delivery
        await self._attempt(record, delivery, timestamp=timestamp)
        return delivery

    # --- admin API ---------------------------------------------------------------------------

    def _admin_find(self, request: web.Request) -> WebhookRecord:
        webhook_id = request.match_info["id"]
        record = self.state.get(webhook_id)
        if record is None:
            raise ApiError(404, "not_found", f"No webhook with id {webhook_id}")
        return record

    async def _admin_health(self, request: web.Request) -> web.Response:
        return _json_response({"ok": True, "webhooks": len(self.state.webhooks)})

    async def _admin_list_webhooks(self, request: web.Request) -> web.Response:
        return _json_response({"data": [r.to_admin() for r in self.state.webhooks.values()]})

    async def _admin_get_webhook(self, request: web.Request) -> web.Response:
        return _json_response({"data": self._admin_find(request).to_admin()})

    async def _admin_patch_webhook(self, request: web.Request) -> web.Response:
        record = self._admin_find(request)
        body = await _read_json_object(request)
        allowed = {"url", "event_types", "status", "channel_id", "channel_type", "signing_secret"}
        unknown = set(body) - allowed
        if unknown:
            raise ApiError(400, "invalid_body", f"cannot change: {', '.join(sorted(unknown))}")
        checks: dict[str, Callable[[Any], bool]] = {
            "url": lambda v: isinstance(v, str),
            "event_types": lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
            "status": lambda v: v in ("active", "disabled"),
            "channel_id": lambda v: v is None or isinstance(v, str),
            "channel_type": lambda v: v is None or isinstance(v, str),
            "signing_secret": lambda v: isinstance(v, str) and bool(v),
        }
        for name, value in body.items():
            if not checks[name](value):
                raise ApiError(400, "invalid_body", f"bad value for {name}", {"field": name})
        for name, value in body.items():
            if name == "signing_secret" and value != record.signing_secret:
                record.previous_secrets.append(record.signing_secret)
            setattr(record, name, list(value) if name == "event_types" else value)
        return _json_response({"data": record.to_admin()})

    async def _admin_delete_webhook(self, request: web.Request) -> web.Response:
        record = self._admin_find(request)
        self.state.remove(record.id)
        return _json_response({"data": {"id": record.id, "deleted": True}})

    async def _admin_list_deliveries(self, request: web.Request) -> web.Response:
        record = self._admin_find(request)
        return _json_response({"data": [d.to_admin() for d in record.deliveries.values()]})

    async def _admin_deliver(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request) if await request.read() else {}
        event_type = body.get("event_type", "message.received")
        data = body.get("data") or {}
        target_url = body.get("target_url")
        timestamp = body.get("timestamp")
        force = body.get("force", False)
        if not isinstance(event_type, str):
            raise ApiError(400, "invalid_body", "event_type must be a string")
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_body", "data must be a JSON object")
        if target_url is not None and not isinstance(target_url, str):
            raise ApiError(400, "invalid_body", "target_url must be a string")
        if timestamp is not None and (
            isinstance(timestamp, bool) or not isinstance(timestamp, int)
        ):
            raise ApiError(400, "invalid_body", "timestamp must be an integer (unix seconds)")
        if not isinstance(force, bool):
            raise ApiError(400, "invalid_body", "force must be a boolean")
        delivery = await self.deliver(
            request.match_info["id"],
            event_type,
            data,
            target_url=target_url,
            timestamp=timestamp,
            force=force,
        )
        return _json_response({"data": delivery.to_admin(), "event": json.loads(delivery.body)})

    async def _admin_calls(self, request: web.Request) -> web.Response:
        return _json_response(self.calls.to_dict())

    async def _admin_reset_calls(self, request: web.Request) -> web.Response:
        self.calls.clear()
        return _json_response({"ok": True})

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json_response({"ok": True})

    async def _admin_get_faults(self, request: web.Request) -> web.Response:
        return _json_response(self.faults.to_dict())

    async def _admin_put_faults(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request)
        try:
            self.faults.load(body)
        except FaultConfigError as exc:
            raise ApiError(400, "invalid_faults", str(exc)) from None
        return _json_response(self.faults.to_dict())

    async def _admin_add_faults(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
        rules = body.get("rules", [body]) if isinstance(body, dict) else body
        if not isinstance(rules, list):
            raise ApiError(400, "invalid_faults", "expected a rule, a list, or {rules: [...]}")
        try:
            built = [FaultRule.from_dict(rule) for rule in rules]
        except FaultConfigError as exc:
            raise ApiError(400, "invalid_faults", str(exc)) from None
        for rule in built:
            self.faults.add(rule)
        return _json_response(self.faults.to_dict())

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return _json_response(self.faults.to_dict())

    async def _admin_add_key(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request)
        key = body.get("api_key")
        organization = body.get("organization")
        forbidden = body.get("forbidden", False)
        if not isinstance(key, str) or not key:
            raise ApiError(400, "invalid_body", "api_key must be a non-empty string")
        if organization is not None and not isinstance(organization, str):
            raise ApiError(400, "invalid_body", "organization must be a string")
        if not isinstance(forbidden, bool):
            raise ApiError(400, "invalid_body", "forbidden must be a boolean")
        key_id = self.add_api_key(key, organization=organization, forbidden=forbidden)
        return _json_response({"api_key_id": key_id, "organization_id": self._keys[key].org})

    async def _admin_revoke_key(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request)
        key = body.get("api_key")
        if not isinstance(key, str):
            raise ApiError(400, "invalid_body", "api_key must be a string")
        return _json_response({"revoked": self.revoke_api_key(key)})
