"""The Blooio client's error tree and the one function that builds errors from responses.

Tree (as in docs/CONTRACTS.md)::

    BlooioError
    ├── ApiStatusError(status, code, message, retry_after)   any other non-2xx
    │   ├── BadRequest (400)   Unauthorized (401)   Forbidden (403)   NotFound (404)
    │   ├── Conflict (409)     ValidationFailed (422)   RateLimited (429)
    │   └── ServerError (5xx)
    │       └── UnexpectedResponse   a 2xx whose body does not match the V4 schema
    ├── ApiConnectionError   the request failed below HTTP (refused, reset, DNS...)
    │   └── ApiTimeout
    └── CreateOutcomeUnknown  a create may or may not have been committed

`UnexpectedResponse` is an addition to the contract: a malformed success body is the
server's fault and should be retried later, so it is a `ServerError` (callers catching
`ServerError` or `ApiStatusError` handle it without knowing it exists).

`error_from_response` understands both V4 bodies: the route-handler envelope
`{"error": {"code", "message", "details"}}` and the auth middleware's flat
`{"error": str, "message": str, "status": int, "code"?: str}` (401/403). Anything else
(HTML from a proxy, empty bodies) keeps a short, single-line excerpt.

Secrets: messages are built from method, path, status and Blooio's code and message only;
request headers and request bodies never reach an error. Values passed as `redact`
(the API key) are scrubbed from whatever the server sent back, in case it echoes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import httpx

from .retry import parse_retry_after

__all__ = [
    "ApiConnectionError",
    "ApiStatusError",
    "ApiTimeout",
    "BadRequest",
    "BlooioError",
    "Conflict",
    "CreateOutcomeUnknown",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "UnexpectedResponse",
    "ValidationFailed",
    "error_from_response",
]

_MAX_MESSAGE = 300
_REDACTED = "[REDACTED]"


class BlooioError(Exception):
    """Base of every error the Blooio client raises."""

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = path

    def _where(self) -> str:
        if self.method and self.path:
            return f"{self.method} {self.path}"
        return self.method or self.path or ""

    def __str__(self) -> str:
        where = self._where()
        return f"{where}: {self.message}" if where else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, "
            f"method={self.method!r}, path={self.path!r})"
        )


class ApiStatusError(BlooioError):
    """Blooio answered with a non-2xx status.

    `code` is Blooio's machine-readable code when the body had one (for the flat auth
    shape, the `code` field or else the `error` string); `message` is Blooio's
    human-readable message, suitable for a condition message. Subclasses know their
    status, so fakes may write `NotFound(code="not_found", message="no such webhook")`.
    """

    default_status: ClassVar[int] = 0

    def __init__(
        self,
        status: int | None = None,
        code: str | None = None,
        message: str = "",
        retry_after: float | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
        details: Mapping[str, Any] | None = None,
    ):
        self.status: int = status if status is not None else self.default_status
        self.code = code
        self.retry_after = retry_after
        self.details: Mapping[str, Any] = details if details is not None else {}
        super().__init__(message or f"HTTP {self.status}", method=method, path=path)

    def __str__(self) -> str:
        where = self._where()
        head = f"{where} -> HTTP {self.status}" if where else f"HTTP {self.status}"
        code = f" {self.code}" if self.code else ""
        retry = f" (retry after {self.retry_after:g}s)" if self.retry_after is not None else ""
        return f"{head}{code}: {self.message}{retry}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, retry_after={self.retry_after!r}, "
            f"method={self.method!r}, path={self.path!r})"
        )


class BadRequest(ApiStatusError):
    """400: the request was malformed."""

    default_status = 400


class Unauthorized(ApiStatusError):
    """401: the API key is missing or invalid."""

    default_status = 401


class Forbidden(ApiStatusError):
    """403: the key is valid but its plan or permissions do not allow the call."""

    default_status = 403


class NotFound(ApiStatusError):
    """404: no such webhook (or delivery) for this key."""

    default_status = 404


class Conflict(ApiStatusError):
    """409: conflicting state (V2 used it for the 64-webhook cap)."""

    default_status = 409


class ValidationFailed(ApiStatusError):
    """422: a field is invalid; `message` says which. Permanent until the spec changes."""

    default_status = 422


class RateLimited(ApiStatusError):
    """429: too many requests; `retry_after` carries the server's wish when it sent one."""

    default_status = 429


class ServerError(ApiStatusError):
    """5xx: Blooio failed. On create, the webhook may nevertheless have been committed."""

    default_status = 500


class UnexpectedResponse(ServerError):
    """A 2xx response whose body is not the V4 shape (not JSON, missing fields...).

    `status` is the real (2xx) status. The message names the offending fields but never
    their values, which could include a signing secret.
    """

    default_status = 200


class ApiConnectionError(BlooioError):
    """The request failed below HTTP: connection refused or reset, DNS, TLS, protocol."""


class ApiTimeout(ApiConnectionError):
    """The request timed out (connect, write, read or waiting for a pooled connection)."""


class CreateOutcomeUnknown(BlooioError):
    """A create request may have reached Blooio, but no usable answer came back.

    The webhook may or may not exist now. Never blindly retry the create: list the
    webhooks, adopt a match, and (since the secret was lost) rotate its secret.
    """


_STATUS_CLASSES: dict[int, type[ApiStatusError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationFailed,
    429: RateLimited,
}


def _error_class(status: int) -> type[ApiStatusError]:
    if status >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status, ApiStatusError)


def clean_text(text: str, redact: Iterable[str] = ()) -> str:
    """Collapse to one line, scrub `redact` values, and bound the length."""
    for secret in redact:
        if secret:
            text = text.replace(secret, _REDACTED)
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def _parse_body(response: httpx.Response) -> tuple[str | None, str | None, dict[str, Any]]:
    """Return (code, message, details) from either V4 error shape, or Nones."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None, None, {}
    if not isinstance(body, dict):
        return None, None, {}
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        details = error.get("details")
        return (
            code if isinstance(code, str) else None,
            message if isinstance(message, str) else None,
            details if isinstance(details, dict) else {},
        )
    # The auth middleware's flat shape; V2-style bodies look the same.
    code = body.get("code")
    message = body.get("message")
    if not isinstance(code, str):
        code = error if isinstance(error, str) else None
    return code, message if isinstance(message, str) else None, {}


def error_from_response(
    response: httpx.Response,
    *,
    method: str,
    path: str,
    redact: Iterable[str] = (),
) -> ApiStatusError:
    """Build the error for a non-2xx response. The one place status codes become classes."""
    status = response.status_code
    redact = tuple(redact)
    code, message, details = _parse_body(response)
    if message is None:
        excerpt = clean_text(response.text, redact) if response.content else ""
        reason = response.reason_phrase or "error"
        message = f"{reason} (unparseable body: {excerpt!r})" if excerpt else reason
    return _error_class(status)(
        status,
        clean_text(code, redact) if code else None,
        clean_text(message, redact),
        parse_retry_after(response.headers.get("retry-after")),
        method=method,
        path=path,
        details=details,
    )
