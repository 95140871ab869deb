"""Who may read ``/metrics``: a bearer token the API server authenticates (TokenReview)
and authorises for ``get`` on the non-resource URL ``/metrics`` (SubjectAccessReview).

This is the check kubebuilder scaffolds (controller-runtime's metrics filter
``WithAuthenticationAndAuthorization``) and kube-rbac-proxy makes. Grant a scraper a
ClusterRole rule ``nonResourceURLs: ["/metrics"], verbs: ["get"]``
(``deploy/monitoring/metrics-reader.yaml``).

- No ``Authorization: Bearer`` header, or a token the API server does not
  authenticate: 401. Authenticated but not allowed: 403. The API server unreachable: 503
  (nothing cached, so the next scrape asks again).
- Decisions (allowed or not) are cached for ``ttl`` seconds by the token's SHA-256,
  at most ``max_entries`` of them (the oldest go first): a scrape every 15-30 s costs two
  API calls a minute per scraper, and a flood of junk tokens cannot grow the cache.
- The token is never logged, nor kept (only its hash is).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("blooio_operator.metrics")

METRICS_PATH = "/metrics"
DEFAULT_TTL_SECONDS = 60.0
DEFAULT_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class Identity:
    user: str
    uid: str | None
    groups: tuple[str, ...]
    extra: dict[str, list[str]]


class ReviewUnavailable(RuntimeError):
    """The API server did not answer a review (not a decision: never cached)."""


class Reviewer(Protocol):
    def authenticate(self, token: str) -> Identity | None: ...

    def allowed(self, who: Identity, path: str, verb: str) -> bool: ...


class KubeReviewer:
    """TokenReview and SubjectAccessReview through the operator's own credentials
    (its ClusterRole grants ``create`` on both)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self._authn = k8s.AuthenticationV1Api(api)
        self._authz = k8s.AuthorizationV1Api(api)

    def authenticate(self, token: str) -> Identity | None:
        review = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token))
        try:
            result = self._authn.create_token_review(review, _request_timeout=10)
        except (ApiException, OSError) as exc:
            raise ReviewUnavailable(f"TokenReview failed: {_describe(exc)}") from None
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            return None
        user = status.user
        return Identity(
            user=user.username or "",
            uid=user.uid,
            groups=tuple(user.groups or ()),
            extra={k: list(v) for k, v in (user.extra or {}).items()},
        )

    def allowed(self, who: Identity, path: str, verb: str) -> bool:
        review = k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=who.user,
                uid=who.uid,
                groups=list(who.groups),
                extra=who.extra or None,
                non_resource_attributes=k8s.V1NonResourceAttributes(path=path, verb=verb),
            )
        )
        try:
            result = self._authz.create_subject_access_review(review, _request_timeout=10)
        except (ApiException, OSError) as exc:
            raise ReviewUnavailable(f"SubjectAccessReview failed: {_describe(exc)}") from None
        return bool(result.status is not None and result.status.allowed)


def _describe(exc: BaseException) -> str:
    # ApiException's str() carries the response body, which echoes the request (the token).
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return type(exc).__name__


@dataclass(frozen=True)
class Decision:
    status: int  # 200, 401, 403 or 503
    reason: str


ALLOWED = Decision(200, "allowed")


class MetricsAuth:
    """Decides whether an ``Authorization`` header may read ``/metrics``."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviewer = reviewer
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Decision]] = OrderedDict()
        self._lock = threading.Lock()
        self.reviews = 0  # TokenReviews sent (for tests)

    def check(self, authorization: str | None, path: str = METRICS_PATH) -> Decision:
        token = _bearer(authorization)
        if token is None:
            return Decision(401, "no bearer token")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        decision = self._review(token, path)
        if decision.status != 503:
            with self._lock:
                self._cache[key] = (now + self._ttl, decision)
                self._cache.move_to_end(key)
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
        return decision

    def _review(self, token: str, path: str) -> Decision:
        self.reviews += 1
        try:
            who = self._reviewer.authenticate(token)
            if who is None:
                return Decision(401, "token not authenticated")
            if not self._reviewer.allowed(who, path, "get"):
                log.info("denied %s to %s", path, who.user)
                return Decision(403, f"{who.user} may not get {path}")
        except ReviewUnavailable as exc:
            log.warning("cannot check a /metrics token: %s", exc)
            return Decision(503, "the API server could not check the token")
        return ALLOWED


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
