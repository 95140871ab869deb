"""The ``/metrics`` HTTP endpoint: the exposition of a registry, behind ``MetricsAuth``
unless that is turned off (``BLOOIO_METRICS_AUTH=false``).

A thread-per-request WSGI server (prometheus_client's own), so the blocking TokenReview
and SubjectAccessReview calls never touch the operator's event loop. The probes
(``/healthz``, ``/readyz``, ``/leader``) are served elsewhere, on the health port, and
stay unauthenticated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.registry import Collector

from blooio_operator.metrics_auth import METRICS_PATH, MetricsAuth

log = logging.getLogger("blooio_operator.metrics")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log (a scrape every 15 s is noise)."""


def guarded(app: WSGIApp, auth: MetricsAuth | None) -> WSGIApp:
    """``app`` behind the bearer-token check (``auth`` None: open)."""

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        if auth is not None:
            decision = auth.check(environ.get("HTTP_AUTHORIZATION"))
            if decision.status != 200:
                status = {401: "401 Unauthorized", 403: "403 Forbidden"}.get(
                    decision.status, "503 Service Unavailable"
                )
                headers = [("Content-Type", "text/plain")]
                if decision.status == 401:
                    headers.append(("WWW-Authenticate", 'Bearer realm="blooio-operator"'))
                start_response(status, headers)
                return [f"{decision.reason}\n".encode()]
        return app(environ, start_response)

    return serve


def serve(
    port: int,
    registry: Collector,
    auth: MetricsAuth | None,
    addr: str = "0.0.0.0",  # noqa: S104 - a Pod port
) -> ThreadingWSGIServer:
    """Serve ``registry`` on ``addr:port/metrics`` from a daemon thread."""
    app = guarded(make_wsgi_app(registry), auth)
    httpd = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
    thread.start()
    log.info(
        "serving /metrics on port %d (%s)",
        port,
        "bearer token checked with TokenReview and SubjectAccessReview" if auth else "open",
    )
    return httpd


def kube_auth(enabled: bool) -> MetricsAuth | None:
    """The check against the API server the operator talks to, or None when turned off."""
    if not enabled:
        return None
    from blooio_operator.kube.client import load_api_client
    from blooio_operator.metrics_auth import KubeReviewer

    return MetricsAuth(KubeReviewer(load_api_client()))
