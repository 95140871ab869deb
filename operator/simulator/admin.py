"""Synchronous client of the simulator's ``/_sim/`` admin API, for tests and the bench.

Owns :class:`SimulatorAdmin`, a thin wrapper over ``httpx.Client``. It never talks to
the ``/v4`` API and needs no API key. ``base_url`` may be the server root
(``http://127.0.0.1:PORT``) or the ``/v4`` URL; both work.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx


class SimulatorAdminError(RuntimeError):
    """The admin API answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"simulator admin API returned {status}: {body[:500]}")
        self.status = status
        self.body = body


def admin_root(base_url: str) -> str:
    """Server root from either the root URL or the ``/v4`` API URL."""
    root = base_url.rstrip("/")
    if root.endswith("/v4"):
        root = root[: -len("/v4")]
    return root


class SimulatorAdmin:
    """Inspect and steer a running simulator over HTTP."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = admin_root(base_url)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, json: Any = None) -> Any:
        response = self._http.request(method, path, json=json)
        if response.status_code >= 400:
            raise SimulatorAdminError(response.status_code, response.text)
        return response.json()

    # --- state ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/_sim/health")
        return result

    def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook of every key, with ``signing_secret`` and ``api_key_id``."""
        data: list[dict[str, Any]] = self._request("GET", "/_sim/webhooks")["data"]
        return data

    def webhook(self, webhook_id: str) -> dict[str, Any] | None:
        """One webhook (admin view), or ``None`` if it does not exist."""
        response = self._http.get(f"/_sim/webhooks/{webhook_id}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise SimulatorAdminError(response.status_code, response.text)
        data: dict[str, Any] = response.json()["data"]
        return data

    def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        """Deliveries of a webhook with simulator-only details (target, error, body)."""
        data: list[dict[str, Any]] = self._request(
            "GET", f"/_sim/webhooks/{webhook_id}/deliveries"
        )["data"]
        return data

    def mutate(self, webhook_id: str, **fields: Any) -> dict[str, Any]:
        """Change a webhook behind the operator's back (not counted as an API call)."""
        data: dict[str, Any] = self._request("PATCH", f"/_sim/webhooks/{webhook_id}", fields)[
            "data"
        ]
        return data

    def remove(self, webhook_id: str) -> None:
        """Delete a webhook behind the operator's back (not counted as an API call)."""
        self._request("DELETE", f"/_sim/webhooks/{webhook_id}")

    def reset(self) -> None:
        """Forget all webhooks and calls, and clear faults."""
        self._request("POST", "/_sim/reset")

    # --- calls ---------------------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        """``/v4`` calls: ``method``, ``path``, ``endpoint``, ``status``, ``ts``, ..."""
        data: list[dict[str, Any]] = self._request("GET", "/_sim/calls")["calls"]
        return data

    def counts(self) -> dict[str, int]:
        """Calls per endpoint template, e.g. ``{"POST /webhooks": 3}``."""
        data: dict[str, int] = self._request("GET", "/_sim/calls")["counts"]
        return data

    def reset_calls(self) -> None:
        self._request("POST", "/_sim/calls/reset")

    # --- faults --------------------------------------------------------------------------

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/_sim/faults")
        return result

    def set_faults(self, **config: Any) -> dict[str, Any]:
        """Replace the fault configuration: ``latency_ms``, ``jitter_ms``, ``rules``, ``seed``."""
        result: dict[str, Any] = self._request("PUT", "/_sim/faults", config)
        return result

    def add_fault(self, kind: str, **rule: Any) -> dict[str, Any]:
        """Append one rule, e.g. ``add_fault("error", status=503, count=2)``."""
        result: dict[str, Any] = self._request("POST", "/_sim/faults", {"kind": kind, **rule})
        return result

    def clear_faults(self) -> None:
        self._request("DELETE", "/_sim/faults")

    # --- keys and deliveries -----------------------------------------------------------------

    def add_api_key(
        self, api_key: str, *, organization: str | None = None, forbidden: bool = False
    ) -> str:
        """Accept another key at run time; returns its ``api_key_id`` fingerprint."""
        body: dict[str, Any] = {"api_key": api_key, "forbidden": forbidden}
        if organization is not None:
            body["organization"] = organization
        key_id: str = self._request("POST", "/_sim/keys", body)["api_key_id"]
        return key_id

    def revoke_api_key(self, api_key: str) -> bool:
        revoked: bool = self._request("POST", "/_sim/keys/revoke", {"api_key": api_key})["revoked"]
        return revoked

    def deliver(
        self,
        webhook_id: str,
        event_type: str = "message.received",
        data: Mapping[str, Any] | None = None,
        *,
        target_url: str | None = None,
        timestamp: int | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Send a signed event; returns ``{"data": delivery, "event": event}``."""
        body: dict[str, Any] = {"event_type": event_type, "data": dict(data or {}), "force": force}
        if target_url is not None:
            body["target_url"] = target_url
        if timestamp is not None:
            body["timestamp"] = timestamp
        result: dict[str, Any] = self._request("POST", f"/_sim/webhooks/{webhook_id}/deliver", body)
        return result
