"""MetricsAuth's decisions and cache, over HTTP, with a reviewer standing in for the API
server (the real TokenReview/SubjectAccessReview path: tests/integration/test_metrics_auth.py)."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from blooio_operator.metrics_auth import Identity, MetricsAuth, ReviewUnavailable
from blooio_operator.metrics_server import serve


class Reviewer:
    def __init__(self) -> None:
        self.tokens = {"good": "system:serviceaccount:monitoring:prometheus", "nobody": "jane"}
        self.allowed_users = {"system:serviceaccount:monitoring:prometheus"}
        self.down = False
        self.calls = 0

    def authenticate(self, token: str) -> Identity | None:
        self.calls += 1
        if self.down:
            raise ReviewUnavailable("TokenReview failed: ConnectionError")
        user = self.tokens.get(token)
        return Identity(user, None, ("system:authenticated",), {}) if user else None

    def allowed(self, who: Identity, path: str, verb: str) -> bool:
        return who.user in self.allowed_users and (path, verb) == ("/metrics", "get")


def test_decisions() -> None:
    auth = MetricsAuth(Reviewer())
    assert auth.check(None).status == 401
    assert auth.check("Basic Z29vZA==").status == 401
    assert auth.check("Bearer ").status == 401
    assert auth.check("Bearer unknown").status == 401
    assert auth.check("Bearer nobody").status == 403
    assert auth.check("Bearer good").status == 200
    assert auth.check("bearer good").status == 200


def test_cache_expires_is_bounded_and_never_keeps_an_outage() -> None:
    now = [0.0]
    reviewer = Reviewer()
    auth = MetricsAuth(reviewer, ttl=60, max_entries=2, clock=lambda: now[0])
    assert auth.check("Bearer good").status == 200
    assert auth.check("Bearer good").status == 200
    assert reviewer.calls == 1  # cached
    reviewer.allowed_users.clear()  # the ClusterRoleBinding removed
    now[0] = 59
    assert auth.check("Bearer good").status == 200
    now[0] = 61
    assert auth.check("Bearer good").status == 403  # seen within the TTL
    for token in ("a", "b", "c"):
        auth.check(f"Bearer {token}")
    assert len(auth._cache) == 2
    reviewer.down = True
    assert auth.check("Bearer x").status == 503
    reviewer.down = False
    reviewer.tokens["x"] = "system:serviceaccount:monitoring:prometheus"
    reviewer.allowed_users.add("system:serviceaccount:monitoring:prometheus")
    assert auth.check("Bearer x").status == 200  # the outage was not cached


def test_served_over_http(unused_tcp_port: int) -> None:
    registry = CollectorRegistry()
    Counter("probe_hits", "test", registry=registry).inc()
    httpd = serve(unused_tcp_port, registry, MetricsAuth(Reviewer()), addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
        r = httpx.get(url)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "probe_hits" not in r.text
        assert httpx.get(url, headers={"Authorization": "Bearer nobody"}).status_code == 403
        ok = httpx.get(url, headers={"Authorization": "Bearer good"})
        assert ok.status_code == 200
        assert "probe_hits_total 1.0" in ok.text
        assert httpx.get(f"http://127.0.0.1:{unused_tcp_port}/other").status_code == 404
    finally:
        httpd.shutdown()
        httpd.server_close()
