"""Fault injection for the Blooio simulator.

Owns the fault model: a baseline latency (fixed + jitter) and an ordered list of
:class:`FaultRule` s, each limited to some endpoints and to a count ("the next N matching
requests") or a probability, drawn from one seeded :class:`random.Random` so runs are
reproducible. The server consults :class:`Faults` for every ``/v4`` request; tests
switch faults in-process (``sim.faults``) or over ``PUT /_sim/faults``.

Fault kinds:

- ``latency`` — extra delay ``ms`` + uniform(0, ``jitter_ms``), added to the baseline.
- ``error`` — answer ``status`` (default 500) with the V4 error envelope (or a raw
  ``body``), optionally with ``Retry-After``.
- ``rate_limit`` — answer 429 with ``Retry-After``; either by count/probability, or as a
  per-API-key token bucket (``per_second`` + ``burst``).
- ``hang`` — do not answer: until the client disconnects (``seconds`` null), or for
  ``seconds`` and then handle the request normally (it may then commit after the client
  gave up).
- ``connection_reset`` — close the connection (TCP RST) without a response; nothing is
  processed.
- ``commit_then_drop`` — process the request (the create is stored) and then close the
  connection instead of sending the 2xx response. Only fires on 2xx outcomes.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

FAULT_KINDS: Final[tuple[str, ...]] = (
    "latency",
    "error",
    "rate_limit",
    "hang",
    "connection_reset",
    "commit_then_drop",
)
KIND_ALIASES: Final[Mapping[str, str]] = {
    "reset": "connection_reset",
    "5xx": "error",
    "server_error": "error",
    "429": "rate_limit",
    "timeout": "hang",
    "drop": "commit_then_drop",
}
PRE_HANDLER_KINDS: Final[frozenset[str]] = frozenset(
    {"error", "rate_limit", "hang", "connection_reset"}
)

ENDPOINTS: Final[tuple[str, ...]] = (
    "GET /webhooks",
    "POST /webhooks",
    "GET /webhooks/{id}",
    "PATCH /webhooks/{id}",
    "DELETE /webhooks/{id}",
    "POST /webhooks/{id}/secret/rotate",
    "GET /webhooks/{id}/deliveries",
    "POST /webhooks/{id}/deliveries/{delivery_id}/replay",
)
"""Endpoint templates used in the call log, the counts and fault rules (aliases folded)."""

_PLACEHOLDER = re.compile(r"\{[^}]*\}")


_RULE_KEYS: Final = frozenset(
    {
        "kind",
        "endpoint",
        "endpoints",
        "count",
        "probability",
        "status",
        "retry_after",
        "per_second",
        "burst",
        "seconds",
        "ms",
        "jitter_ms",
        "body",
        "fired",
    }
)


class FaultConfigError(ValueError):
    """A fault configuration that cannot be applied (rendered as HTTP 400)."""


def normalize_endpoint(endpoint: str) -> str:
    """Map spellings like ``post /v4/webhooks/{webhookId}/logs/{x}/replay`` to a template.

    Raises :class:`FaultConfigError` for anything that is not a known endpoint.
    """
    method, _, path = endpoint.strip().partition(" ")
    path = path.strip()
    if path.startswith("/v4/"):
        path = path[3:]
    segments = [seg for seg in path.split("/") if seg]
    placeholders = iter(("{id}", "{delivery_id}"))
    normalized: list[str] = []
    for seg in segments:
        if _PLACEHOLDER.fullmatch(seg):
            normalized.append(next(placeholders, seg))
        elif seg == "logs":
            normalized.append("deliveries")
        else:
            normalized.append(seg)
    template = f"{method.upper()} /{'/'.join(normalized)}"
    if template not in ENDPOINTS:
        raise FaultConfigError(
            f"unknown endpoint {endpoint!r}; expected one of: {', '.join(ENDPOINTS)}"
        )
    return template


def _number(spec: Mapping[str, Any], key: str, *, minimum: float = 0.0) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultConfigError(f"{key} must be a number")
    if value < minimum:
        raise FaultConfigError(f"{key} must be >= {minimum:g}")
    return float(value)


@dataclass
class FaultRule:
    """One fault. ``count`` is how many more times it may fire (``None`` = unlimited)."""

    kind: str
    endpoints: tuple[str, ...] | None = None
    count: int | None = None
    probability: float | None = None
    status: int = 500
    retry_after: float | None = None
    per_second: float | None = None
    burst: int | None = None
    seconds: float | None = None
    ms: float = 0.0
    jitter_ms: float = 0.0
    body: str | None = None
    fired: int = 0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> FaultRule:
        """Build a rule from its JSON form, rejecting unknown keys and bad values."""
        if not isinstance(spec, Mapping):
            raise FaultConfigError("a fault rule must be a JSON object")
        unknown = set(spec) - _RULE_KEYS
        if unknown:
            raise FaultConfigError(f"unknown fault rule keys: {', '.join(sorted(unknown))}")
        raw_kind = spec.get("kind")
        if not isinstance(raw_kind, str):
            raise FaultConfigError(f"kind is required, one of: {', '.join(FAULT_KINDS)}")
        kind = KIND_ALIASES.get(raw_kind, raw_kind)
        if kind not in FAULT_KINDS:
            raise FaultConfigError(f"unknown fault kind {raw_kind!r}")

        endpoints: tuple[str, ...] | None = None
        raw_endpoints = spec.get("endpoints", spec.get("endpoint"))
        if isinstance(raw_endpoints, str):
            endpoints = (normalize_endpoint(raw_endpoints),)
        elif isinstance(raw_endpoints, list):
            if not all(isinstance(e, str) for e in raw_endpoints) or not raw_endpoints:
                raise FaultConfigError("endpoints must be a non-empty list of strings")
            endpoints = tuple(normalize_endpoint(e) for e in raw_endpoints)
        elif raw_endpoints is not None:
            raise FaultConfigError("endpoint must be a string or a list of strings")

        count = spec.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise FaultConfigError("count must be an integer")
        if count is not None and count < 0:
            raise FaultConfigError("count must be >= 0")
        probability = _number(spec, "probability")
        if probability is not None and probability > 1:
            raise FaultConfigError("probability must be between 0 and 1")

        status = spec.get("status", 500 if kind == "error" else 429)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise FaultConfigError("status must be an HTTP status code")
        if kind == "rate_limit":
            status = 429

        burst = spec.get("burst")
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
            raise FaultConfigError("burst must be an integer")
        per_second = _number(spec, "per_second")
        if per_second is not None and per_second <= 0:
            raise FaultConfigError("per_second must be > 0")
        body = spec.get("body")
        if body is not None and not isinstance(body, str):
            raise FaultConfigError("body must be a string")
        retry_after = _number(spec, "retry_after")
        if kind == "rate_limit" and retry_after is None and per_second is None:
            retry_after = 1.0
        fired = spec.get("fired", 0)
        return cls(
            kind=kind,
            endpoints=endpoints,
            count=count,
            probability=probability,
            status=status,
            retry_after=retry_after,
            per_second=per_second,
            burst=max(1, burst) if burst is not None else None,
            seconds=_number(spec, "seconds"),
            ms=_number(spec, "ms") or 0.0,
            jitter_ms=_number(spec, "jitter_ms") or 0.0,
            body=body,
            fired=fired if isinstance(fired, int) and not isinstance(fired, bool) else 0,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form; ``count`` shows what is left, ``fired`` how often it fired."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "endpoints": list(self.endpoints) if self.endpoints is not None else None,
            "count": self.count,
            "probability": self.probability,
            "fired": self.fired,
        }
        if self.kind == "latency":
            out.update(ms=self.ms, jitter_ms=self.jitter_ms)
        if self.kind in ("error", "rate_limit"):
            out.update(status=self.status, retry_after=self.retry_after)
        if self.kind == "error":
            out["body"] = self.body
        if self.kind == "rate_limit":
            out.update(per_second=self.per_second, burst=self.burst)
        if self.kind == "hang":
            out["seconds"] = self.seconds
        return out

    def applies_to(self, endpoint: str | None) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return self.endpoints is None or endpoint in self.endpoints

    def _bucket_take(self, key: str) -> float | None:
        """Token bucket: ``None`` if a token was taken, else seconds until the next one."""
        assert self.per_second is not None
        default_burst = max(1, math.ceil(self.per_second))
        capacity = float(self.burst if self.burst is not None else default_burst)
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * self.per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.per_second

    def trigger(self, rng: random.Random, key: str) -> float | None:
        """Decide whether the rule fires for this request; consume count if it does.

        Returns ``None`` when it does not fire, else the Retry-After seconds to send
        (``0.0`` when the rule carries none).
        """
        retry_after = self.retry_after
        if self.kind == "rate_limit" and self.per_second is not None:
            wait = self._bucket_take(key)
            if wait is None:
                return None
            if retry_after is None:
                retry_after = float(max(1, math.ceil(wait)))
        elif self.probability is not None and rng.random() >= self.probability:
            return None
        if self.count is not None:
            self.count -= 1
        self.fired += 1
        return retry_after if retry_after is not None else 0.0


class Faults:
    """The live fault configuration of one simulator.

    ``latency_ms``/``jitter_ms`` are the baseline delay of every ``/v4`` request;
    ``clear()`` returns to the baseline given at construction (the ``--latency-ms`` of
    the process) and drops every rule.
    """

    def __init__(
        self, *, latency_ms: float = 0.0, jitter_ms: float = 0.0, seed: int | None = None
    ) -> None:
        self.default_latency_ms = float(latency_ms)
        self.default_jitter_ms = float(jitter_ms)
        self.latency_ms = self.default_latency_ms
        self.jitter_ms = self.default_jitter_ms
        self.rules: list[FaultRule] = []
        self.seed = seed
        self.rng = random.Random(seed)  # noqa: S311 - reproducible fault draws, not crypto

    # --- configuration -------------------------------------------------------------

    def clear(self) -> None:
        """Drop every rule and restore the baseline latency."""
        self.rules = []
        self.latency_ms = self.default_latency_ms
        self.jitter_ms = self.default_jitter_ms

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.rng.seed(seed)

    def set(
        self,
        *,
        latency_ms: float | None = None,
        jitter_ms: float | None = None,
        rules: Iterable[FaultRule | Mapping[str, Any]] = (),
        seed: int | None = None,
    ) -> None:
        """Replace the whole configuration (omitted latency -> the baseline)."""
        built = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules]
        self.latency_ms = self.default_latency_ms if latency_ms is None else float(latency_ms)
        self.jitter_ms = self.default_jitter_ms if jitter_ms is None else float(jitter_ms)
        self.rules = built
        if seed is not None:
            self.reseed(seed)

    def load(self, config: Mapping[str, Any]) -> None:
        """Replace the configuration from its JSON form (``PUT /_sim/faults``)."""
        if not isinstance(config, Mapping):
            raise FaultConfigError("fault configuration must be a JSON object")
        unknown = set(config) - {"latency_ms", "jitter_ms", "rules", "seed"}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise FaultConfigError(f"unknown fault configuration keys: {names}")
        rules = config.get("rules") or []
        if not isinstance(rules, list):
            raise FaultConfigError("rules must be a list")
        seed = config.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FaultConfigError("seed must be an integer")
        self.set(
            latency_ms=_number(config, "latency_ms"),
            jitter_ms=_number(config, "jitter_ms"),
            rules=rules,
            seed=seed,
        )

    def add(self, rule: FaultRule | Mapping[str, Any]) -> FaultRule:
        """Append one rule (rules are consulted in order; the first that fires wins)."""
        built = rule if isinstance(rule, FaultRule) else FaultRule.from_dict(rule)
        self.rules.append(built)
        return built

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "seed": self.seed,
            "rules": [r.to_dict() for r in self.rules],
        }

    # --- convenience builders --------------------------------------------------------

    def _rule(
        self,
        kind: str,
        endpoint: str | Iterable[str] | None,
        count: int | None,
        probability: float | None,
        **extra: Any,
    ) -> FaultRule:
        spec: dict[str, Any] = {"kind": kind, "count": count, "probability": probability}
        if endpoint is not None:
            spec["endpoints"] = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        spec.update(extra)
        return self.add(spec)

    def latency(
        self,
        ms: float,
        jitter_ms: float = 0.0,
        *,
        endpoint: str | Iterable[str] | None = None,
        count: int | None = None,
        probability: float | None = None,
    ) -> FaultRule:
        return self._rule("latency", endpoint, count, probability, ms=ms, jitter_ms=jitter_ms)

    def error(
        self,
        status: int = 500,
        *,
        endpoint: str | Iterable[str] | None = None,
        count: int | None = None,
        probability: float | None = None,
        retry_after: float | None = None,
        body: str | None = None,
    ) -> FaultRule:
        return self._rule(
            "error", endpoint, count, probability, status=status, retry_after=retry_after, body=body
        )

    def rate_limit(
        self,
        retry_after: float | None = None,
        *,
        endpoint: str | Iterable[str] | None = None,
        count: int | None = None,
        probability: float | None = None,
        per_second: float | None = None,
        burst: int | None = None,
    ) -> FaultRule:
        return self._rule(
            "rate_limit",
            endpoint,
            count,
            probability,
            retry_after=retry_after,
            per_second=per_second,
            burst=burst,
        )

    def hang(
        self,
        seconds: float | None = None,
        *,
        endpoint: str | Iterable[str] | None = None,
        count: int | None = None,
        probability: float | None = None,
    ) -> FaultRule:
        return self._rule("hang", endpoint, count, probability, seconds=seconds)

    def connection_reset(
        self,
        *,
        endpoint: str | Iterable[str] | None = None,
        count: int | None = None,
        probability: float | None = None,
    ) -> FaultRule:
        return self._rule("connection_reset", endpoint, count, probability)

    def commit_then_drop(
        self,
        *,
        endpoint: str | Iterable[str] | None = "POST /webhooks",
        count: int | None = None,
        probability: float | None = None,
    ) -> FaultRule:
        return self._rule("commit_then_drop", endpoint, count, probability)

    # --- evaluation (used by the server) -----------------------------------------------

    def delay_seconds(self, endpoint: str | None, key: str) -> float:
        """Total latency for this request: baseline plus every latency rule that fires."""
        delay = self.latency_ms
        if self.jitter_ms > 0:
            delay += self.rng.uniform(0.0, self.jitter_ms)
        for rule in self.rules:
            if (
                rule.kind == "latency"
                and rule.applies_to(endpoint)
                and rule.trigger(self.rng, key) is not None
            ):
                delay += rule.ms
                if rule.jitter_ms:
                    delay += self.rng.uniform(0.0, rule.jitter_ms)
        return delay / 1000.0

    def pick(
        self, endpoint: str | None, key: str, *, after_commit: bool
    ) -> tuple[FaultRule, float] | None:
        """First rule of the phase that fires: before handling, or after a 2xx."""
        for rule in self.rules:
            if rule.kind == "latency":
                continue
            if (rule.kind == "commit_then_drop") != after_commit:
                continue
            if not rule.applies_to(endpoint):
                continue
            retry_after = rule.trigger(self.rng, key)
            if retry_after is not None:
                return rule, retry_after
        return None
