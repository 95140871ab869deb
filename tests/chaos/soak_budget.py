"""The soak's compressed hour and its budget: what one resource may cost per hour.

Owns two things, both derived from the operator's own defaults (``operator/settings.py``):

- ``Scale``: one real hour compressed into ``hour_seconds``; every interval, delay and
  timeout of the operator is divided by the same factor, so the operator lives through
  a whole hour of its own timers (sweeps, drift checks, backoff to the cap, credential
  retries, delivery health, replay windows) in a few minutes.
- ``BUDGETS``: per fault class, per resource per (scaled) hour, the most each count may
  be. Budgets are stated in the operator's real units (a scaled hour is an hour to it),
  from SPEC §3/§6 and issue 18. They are the yardstick, not a forecast of today's
  operator: a breach is reported, never absorbed by loosening a number here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from blooio_operator.settings import Settings

HOUR = 3600.0

# Settings scaled with the hour (field name of Settings -> environment variable).
SCALED_SETTINGS = (
    "secret_check_interval_seconds",
    "drift_interval_seconds",
    "credentials_retry_seconds",
    "transient_retry_base_seconds",
    "transient_retry_cap_seconds",
    "recovery_delay_seconds",
    "deliveries_health_interval_seconds",
    "replay_grace_seconds",
    "replay_window_seconds",
    "replay_probe_delay_seconds",
    "http_timeout_seconds",
)
# A floor under the scaled value where a smaller one would measure the machine instead of
# the operator: a loopback request of a busy 2-core machine can take several hundred ms,
# and a timeout below that turns healthy calls into failures.
FLOORS = {"http_timeout_seconds": 1.0}


def default(name: str) -> float:
    """The operator's default for a Settings field (read, so budgets follow the code)."""
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float), f"Settings.{name} has no numeric default"
    return float(value)


@dataclass(frozen=True)
class Scale:
    hour_seconds: float

    @property
    def factor(self) -> float:
        return HOUR / self.hour_seconds

    def seconds(self, real: float) -> float:
        """A real duration in the compressed world."""
        return real / self.factor

    def env(self) -> dict[str, str]:
        out = {}
        for name in SCALED_SETTINGS:
            value = max(default(name) / self.factor, FLOORS.get(name, 0.0))
            out[f"BLOOIO_{name.upper()}"] = f"{value:.4g}"
        return out

    def describe(self) -> str:
        parts = []
        for name in SCALED_SETTINGS:
            scaled = float(self.env()[f"BLOOIO_{name.upper()}"])
            floor = " (floor)" if name in FLOORS and scaled == FLOORS[name] else ""
            short = name.removesuffix("_seconds").replace("_", " ")
            parts.append(f"{short} {default(name):g}s->{scaled:g}s{floor}")
        return f"scale: 1 h -> {self.hour_seconds:g} s (x{self.factor:g}); " + ", ".join(parts)


# --- the terms budgets are made of (operator defaults; real seconds) --------------------------

CAP = default("transient_retry_cap_seconds")  # backoff cap (300 s)
BASE = default("transient_retry_base_seconds")  # backoff base (1 s)
CHECK = default("secret_check_interval_seconds")  # the periodic sweep (60 s)
DRIFT = default("drift_interval_seconds")  # per-key drift list (600 s)
CREDENTIALS = default("credentials_retry_seconds")  # slow retry of a bad key (300 s)
HEALTH = default("deliveries_health_interval_seconds")  # delivery health read (600 s)

ATTEMPTS = 3  # one idempotent Blooio call: the first try and the client's 2 retries
RAMP = math.ceil(math.log2(CAP / BASE))  # tries before backoff reaches its cap (9)
TRIES = HOUR / CAP + RAMP  # tries of one failing operation in an hour (12 + 9 = 21)
EPISODE_WRITES = 2  # status written when an episode starts and when it clears


def periodic(interval: float) -> float:
    """Runs of something done every ``interval`` in an hour (+1: a window's two edges)."""
    return HOUR / interval + 1


@dataclass(frozen=True)
class Budget:
    """Per resource per hour, except ``lists_per_key`` (per API key per hour) and Events
    (per resource per episode: each class is one episode)."""

    calls: float  # Blooio calls about the resource (per-key list calls apart)
    writes: float  # Kubernetes writes by the operator about it (Events apart)
    warnings: float  # Warning Events (objects; aggregation may add to their count)
    normals: float  # Normal Events
    lists_per_key: float = 0.0  # GET /webhooks per API key

    def __add__(self, other: Budget) -> Budget:
        return Budget(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


# Log lines are bounded per key, not per resource (issue 18): this many per API key per
# hour, plus a few per resource per episode (the line saying it started and cleared).
LOG_LINES_PER_KEY = HOUR / CHECK  # one summary line per key per check interval (60)
LOG_LINES_PER_RESOURCE = 2.0
# What the soak's own change to a resource may add on top (a drift fixed, a rotation, a
# deletion, an adoption): a few calls, the writes of a create as the operator makes them
# today (4: kopf's finalizer, the intent, the Secret, the final status; issue 24 brings it
# to SPEC §6's 3), plus, when the change replaced the signing secret (rotation, adoption,
# recreation), the zero-loss replay episode that follows it (SPEC: "followed by the
# zero-loss replay"): opened and closed, 2 status writes, even when nothing was rejected.
# Its Normal Event and its log lines. A one-off per touched resource, never a rate.
CREATE_WRITES = 4
REPLAY_EPISODE_WRITES = 2
ACTION = Budget(
    calls=2 * ATTEMPTS, writes=CREATE_WRITES + REPLAY_EPISODE_WRITES, warnings=0, normals=1
)
ACTION_LOG_LINES = 4.0

# Blooio failing for the hour (503, timeouts, 429): one failing operation per resource at
# the backoff's rate (each try up to ATTEMPTS calls), the delivery health reads (failing
# too), episode status writes plus kopf's progress write per try; lists per key at the
# drift interval and retried like any failing operation.
_BLOOIO_DOWN = Budget(
    calls=ATTEMPTS * (TRIES + periodic(HEALTH)),
    writes=EPISODE_WRITES + TRIES,
    warnings=1,
    normals=1,
    lists_per_key=ATTEMPTS * (periodic(DRIFT) + TRIES),
)

BUDGETS: Mapping[str, Budget] = {
    "a": _BLOOIO_DOWN,  # every endpoint 503
    "b": _BLOOIO_DOWN,  # every endpoint hangs (client timeouts)
    "c": _BLOOIO_DOWN,  # every endpoint 429 with Retry-After
    # The key revoked: 401s are not retried inside a call; the slow credentials retry
    # and the health reads; a per-key probe each check interval may show the revocation.
    "d": Budget(
        calls=periodic(CREDENTIALS) + periodic(HEALTH),
        writes=EPISODE_WRITES + periodic(CREDENTIALS),
        warnings=1,
        normals=1,
        lists_per_key=periodic(CHECK) + periodic(DRIFT),
    ),
    # API server restarts with deletions in the gap: Blooio is fine; an unchanged
    # resource costs its health reads and nothing else (SPEC §6: 0 writes on restart).
    "e": Budget(
        calls=periodic(HEALTH),
        writes=EPISODE_WRITES,
        warnings=1,
        normals=1,
        lists_per_key=2 * periodic(DRIFT),
    ),
    # Receiver down for the hour: health reads, and the health summary may be written
    # after each read (the soak keeps delivering, so the state does change).
    "f": Budget(
        calls=periodic(HEALTH),
        writes=EPISODE_WRITES + periodic(HEALTH),
        warnings=1,
        normals=1,
        lists_per_key=periodic(DRIFT),
    ),
}


def log_lines_budget(keys: int, resources: int, touched: int, hours: float = 1.0) -> float:
    """Operator log lines allowed in one class: per key per hour of the window, and per
    resource per episode (each class is one) and per change the soak made."""
    return (
        keys * LOG_LINES_PER_KEY * hours
        + resources * LOG_LINES_PER_RESOURCE
        + touched * ACTION_LOG_LINES
    )


def budget_table() -> dict[str, dict[str, float]]:
    """The table as data, for the report."""
    table = {name: {k: round(v, 2) for k, v in asdict(b).items()} for name, b in BUDGETS.items()}
    table["(per touched resource)"] = {
        **{k: float(v) for k, v in asdict(ACTION).items()},
        "log_lines": ACTION_LOG_LINES,
    }
    table["(log lines)"] = {
        "per_key": LOG_LINES_PER_KEY,
        "per_resource": LOG_LINES_PER_RESOURCE,
    }
    return table
