"""The BlooioWebhook spec and status as pydantic models (camelCase on the wire).

The spec is validated strictly (the CRD has already checked it). The status is input the
operator did not necessarily write (a restore, ``kubectl edit --subresource=status``, a
tenant), so it is validated defensively: times are parsed as any RFC 3339 value the CRD
accepts, and whatever cannot be used (a malformed field, an unparseable or impossible
time) is dropped field by field and reported, never raised (``WebhookStatus``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "blooio.com"
VERSION = "v1alpha1"
PLURAL = "blooiowebhooks"
KIND = "BlooioWebhook"

DeletionPolicy = Literal["Delete", "Orphan", "Disable"]
RemoteStatus = Literal["active", "disabled"]


# --- times -----------------------------------------------------------------------------

# RFC 3339 ``date-time``: a fraction of any length, ``Z`` or a numeric offset, ``T``/``Z``
# in either case. The CRD's ``format: date-time`` lets through more than this (any
# character before the fraction, anything after a second ``T``, offsets like ``+99:99``,
# year 0000); such values are not times, and are treated as absent.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
# How far ahead of the operator's clock a time it recorded as "now" may be (clock skew
# between its pods). Later than that, it was not recorded by the operator, and would
# make it wait for that moment (a create intent "started" in 2099 is never settled).
FUTURE_SKEW_SECONDS = 60.0


def rfc3339_seconds(value: object) -> float | None:
    """Seconds since the epoch of an RFC 3339 ``date-time``; None for anything else.

    None also for a time Python cannot represent in UTC (``9999-12-31T23:59:59-14:00``
    is in year 10000), so callers never meet an overflow later.
    """
    if not isinstance(value, str):
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_hours, off_minutes = match.group(7, 8, 9, 10)
    second = min(second, 59)  # a leap second (RFC 3339 allows :60)
    try:
        local = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        if sign is not None:
            hours, minutes = int(off_hours), int(off_minutes)
            if hours > 23 or minutes > 59:
                return None
            offset = timedelta(hours=hours, minutes=minutes)
            local = local - offset if sign == "+" else local + offset
    except (ValueError, OverflowError):
        return None
    return local.timestamp() + (float(f"0.{fraction[:9]}") if fraction else 0.0)


def _time(value: str) -> str:
    if rfc3339_seconds(value) is None:
        raise ValueError("not an RFC 3339 time")
    return value


def _past_time(value: str, info: ValidationInfo) -> str:
    seconds = rfc3339_seconds(value)
    if seconds is None:
        raise ValueError("not an RFC 3339 time")
    now = info.context.get("now") if isinstance(info.context, dict) else None
    if isinstance(now, int | float) and seconds > now + FUTURE_SKEW_SECONDS:
        raise ValueError("in the future, so not recorded by the operator")
    return value


# A time as written (the string is kept, so nothing is rewritten); ``PastTime``: a moment
# the operator recorded as "now", which cannot be in the future (checked when the caller
# passes ``context={"now": ...}`` to ``model_validate``).
Time = Annotated[str, AfterValidator(_time)]
PastTime = Annotated[str, AfterValidator(_past_time)]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class CredentialsRef(_Camel):
    name: str
    key: str = "api-key"


class SecretTemplate(_Camel):
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class WebhookSpec(_Camel):
    url: str
    event_types: list[str] = Field(default_factory=lambda: ["*"])
    channel_id: str | None = None
    channel_type: str | None = None
    credentials_ref: CredentialsRef | None = None
    secret: SecretTemplate = Field(default_factory=SecretTemplate)
    suspend: bool = False
    deletion_policy: DeletionPolicy = "Delete"

    def secret_name(self, resource_name: str) -> str:
        return self.secret.name or f"{resource_name}-blooio-webhook"

    @property
    def desired_remote_status(self) -> RemoteStatus:
        return "disabled" if self.suspend else "active"


class Applied(_Camel):
    """What the operator last applied to (or confirmed at) Blooio."""

    url: str
    event_types: list[str]
    channel_id: str | None = None
    channel_type: str | None = None


class Rotation(_Camel):
    """A signing-secret rotation sent (or about to be) whose answer is not yet in the Secret.

    Rotate mints a new secret per call: an earlier call answered late (or never, to us)
    can commit after a later one and leave the Secret stale. While this is recorded,
    no new rotation is sent before the earlier one can no longer commit.
    """

    webhook_id: str
    started_at: PastTime | None = None  # unknown: long ago (the rotation is settled)


class Pending(_Camel):
    """An intent recorded before a non-idempotent call (create), for crash recovery."""

    operation: Literal["create", "replace"]
    # Unknown (unreadable in status): long ago, so recovery looks at once rather than never.
    started_at: PastTime | None = None
    url: str
    # None in intents recorded before 0.3 (not matched on then).
    event_types: list[str] | None = None
    channel_id: str | None = None
    channel_type: str | None = None
    old_webhook_id: str | None = None


class Condition(_Camel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: Time
    observed_generation: int | None = None


class NewestDelivery(_Camel):
    """The newest delivery a health check saw (no payload, ever)."""

    id: str
    at: PastTime | None = None
    status: str | None = None
    response_code: int | None = None


class ReplayEpisode(_Camel):
    """Replays in progress, recorded before each replay is posted (crash-safe).

    ``rotation``: deliveries the receiver rejected (401/403) after a signing-secret
    change; ``request``: every failed delivery since ``blooio.com/replay-failed-since``.
    """

    trigger: Literal["rotation", "request"]
    since: Time  # deliveries created at or after this are considered
    changed_at: PastTime | None = None  # rotation: when the signing secret changed
    token: str | None = None  # request: the annotation value
    give_up_at: Time
    phase: Literal["waiting", "probing", "replaying", "verifying"] = "waiting"
    started_at: PastTime | None = None  # first replay posted (evidence of ours is newer)
    next_at: Time | None = None
    probe_id: str | None = None  # the delivery replayed first, to see if it now succeeds
    probe_at: PastTime | None = None  # its replay is (about to be) posted
    probe_replay_id: str | None = None
    attempts: int = 0  # probes that failed
    inflight: list[str] | None = None  # replays that may have been posted (intent)
    inflight_at: PastTime | None = None
    posted: int = 0
    skipped: int = 0  # over the bound, or refused by Blooio
    refused: list[str] | None = None  # deliveries Blooio would not replay (e.g. 404)


class ReplayRecord(_Camel):
    """How the last replay episode ended."""

    trigger: Literal["rotation", "request"]
    since: Time
    finished_at: PastTime
    outcome: Literal["replayed", "gaveUp"]
    replayed: int = 0
    accepted: int = 0
    not_replayed: int = 0


class DeliveriesStatus(_Camel):
    """Delivery health (a compact summary, never payloads) and replay bookkeeping."""

    checked_at: PastTime | None = None
    complete: bool | None = None  # every listed delivery was read within the page bound
    seen: int | None = None
    delivered: int | None = None
    failed: int | None = None
    pending: int | None = None
    newest: NewestDelivery | None = None
    last_delivered_at: PastTime | None = None
    # The webhook the replay bookkeeping below refers to; another id in status.webhookId
    # means the webhook (and with it the signing secret) was replaced.
    webhook_id: str | None = None
    secret_change_at: PastTime | None = None  # the last signing-secret change dealt with
    replay_token: str | None = None  # the last replay-failed-since value dealt with
    replay: ReplayEpisode | None = None
    last_replay: ReplayRecord | None = None


class WebhookStatus(_Camel):
    observed_generation: int | None = None
    webhook_id: str | None = None
    remote_status: RemoteStatus | None = None
    secret_name: str | None = None
    created_at: PastTime | None = None
    last_synced_at: PastTime | None = None
    secret_rotated_at: PastTime | None = None
    conditions: list[Condition] = Field(default_factory=list)
    applied: Applied | None = None
    pending: Pending | None = None
    abandoned: list[Pending] | None = None
    rotate_token: str | None = None
    adopted_webhook_id: str | None = None
    # Fingerprint of the API key the webhook was created or adopted with (never the key).
    key_id: str | None = None
    rotating: Rotation | None = None
    deliveries: DeliveriesStatus | None = None
    # The operator's seal over the fields above that name something at Blooio
    # (reconcile/claims.py): a status it did not seal is not acted on.
    claim: str | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _tolerate(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Validate what can be, drop what cannot, field by field; never raise.

        Unknown fields are ignored (``extra="ignore"``). A malformed field is dropped
        (an object whose required field goes with it is dropped too, a list item alone),
        and each drop is appended to ``context["dropped"]`` as ``Dropped`` when the
        caller passes a list there, for it to report once.
        """
        context = info.context if isinstance(info.context, dict) else {}
        sink = context.get("dropped")
        report: list[Dropped] = sink if isinstance(sink, list) else []
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            if data is not None:
                report.append(Dropped("", _shown(data), "not an object"))
            return handler({})
        copied = False
        damaged: set[int] = set()  # objects that lost a field (reported already)
        for _ in range(_MAX_ROUNDS):
            try:
                return handler(data)
            except ValidationError as exc:
                errors = exc.errors(include_url=False)
            if not copied:
                data, copied = _plain(data), True
            removed = False
            for err in errors:
                loc = tuple(err["loc"])
                explained = False
                why = str((err.get("ctx") or {}).get("error") or err["msg"])
                if err["type"] == "missing":
                    loc = loc[:-1]  # the object lacking a required field goes
                    explained = id(_at(data, loc)) in damaged
                    why = f"no {err['loc'][-1]}"
                parent = _at(data, loc[:-1])
                value = _at(data, loc)
                if not loc or not _remove(data, loc):
                    continue
                removed = True
                damaged.add(id(parent))
                if not explained:
                    report.append(Dropped(_path(loc), _shown(value), why))
            _sweep(data)
            if not removed:
                break
        report.append(Dropped("", _shown(data), "could not be read"))
        return handler({})

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: str) -> bool:
        cond = self.condition(type_)
        return cond is not None and cond.status == "True"


# --- reading a status defensively ---------------------------------------------------------

_MAX_ROUNDS = 32  # each round drops at least one element; real statuses need one or two
_GONE = object()  # a list item to remove once a round's paths have all been followed


class Dropped(NamedTuple):
    """A status element that could not be used: its path, its value (shown), and why."""

    path: str
    value: str
    why: str


def _shown(value: object) -> str:
    text = repr(value)  # repr: quotes, and control characters escaped
    return text if len(text) <= 80 else text[:77] + "..."


def _path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _plain(value: Any) -> Any:
    """A private deep copy made of dicts and lists (the caller's body is never changed)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return copy.copy(value)


def _at(data: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (in_dict or in_list):
            return _GONE
        data = data[part]
    return data


def _keys_at(data: Any, loc: tuple[str | int, ...]) -> list[str | int]:
    node = _at(data, loc)
    return list(node) if isinstance(node, dict) else []


def _remove(data: Any, loc: tuple[str | int, ...]) -> bool:
    parent, last = _at(data, loc[:-1]), loc[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        if parent[last] is _GONE:
            return False
        parent[last] = _GONE  # removed in _sweep: the round's other indexes stay valid
        return True
    return False


def _sweep(data: Any) -> None:
    if isinstance(data, dict):
        for value in data.values():
            _sweep(value)
    elif isinstance(data, list):
        data[:] = [v for v in data if v is not _GONE]
        for value in data:
            _sweep(value)
