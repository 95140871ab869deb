"""Issue 19, item 1: status is input, and is parsed defensively.

The CRD declares the status times ``format: date-time``, which the API server checks with
kube-openapi's ``strfmt.IsDateTime`` (ported below as ``crd_accepts``): RFC 3339 with a
fraction of any length, an offset, lowercase ``t``/``z``, and some things that are no
time at all (any character before the fraction, anything after a second ``t``, offsets
like ``+99:99``, year 0000). The operator wrote them as ``%Y-%m-%dT%H:%M:%SZ`` and read
them only in that form, so a restore writing ``...00.5Z`` wedged the object. Here:

- property tests (hypothesis, many examples) of the parser against that grammar, and of
  ``WebhookStatus.model_validate`` against malformed, foreign and restored statuses;
- the findings as scenarios on the reconcile layer (fake cluster, fake Blooio).
"""

from __future__ import annotations

import calendar
import logging
import re
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from pydantic import BaseModel

from blooio_operator.models.resource import (
    FUTURE_SKEW_SECONDS,
    Dropped,
    WebhookStatus,
    rfc3339_seconds,
)
from blooio_operator.reconcile import context, deletion, periodic, replay_plan
from blooio_operator.reconcile.context import now_iso, parse_iso
from tests.unit.fakes import NAMESPACE, World, merge_patch

# Hypothesis keeps a cache (and would keep an example database) in ./.hypothesis by default.
set_hypothesis_home_dir(Path(__file__).resolve().parents[2] / ".build" / "hypothesis")

NOW = 1_800_000_000.0  # 2027-01-15: "now" for the model properties
EXAMPLES = settings(
    max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
STATUS_EXAMPLES = settings(EXAMPLES, max_examples=400)  # a status costs 25 ms to generate

# --- what the CRD accepts (k8s.io/kube-openapi/pkg/validation/strfmt/time.go) -------------

_CRD_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))")


def _go_date(text: str) -> bool:
    """Go's ``time.Parse("2006-01-02", text)``: year 0000 is allowed (and a leap year)."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    year, month, day = int(text[:4]), int(text[5:7]), int(text[8:])
    if not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return 1 <= day <= days


def crd_accepts(value: str) -> bool:
    """``strfmt.IsDateTime``: what the API server lets into a ``date-time`` field."""
    if len(value) < 4:
        return False
    parts = value.lower().split("t")
    if len(parts) < 2 or not _go_date(parts[0]):
        return False
    match = _CRD_TIME.fullmatch(parts[1])
    if match is None:
        return False
    return match[1] <= "23" and match[2] <= "59" and match[3] <= "59"


# --- generators ------------------------------------------------------------------------------


def _two(n: int) -> str:
    return f"{n:02d}"


@st.composite
def rfc3339_times(draw: st.DrawFn) -> tuple[str, float | None]:
    """An RFC 3339 time in any of its spellings, and the instant it names (None when that
    instant is outside years 1-9999 in UTC)."""
    year = draw(st.integers(1, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    hour, minute, second = (
        draw(st.integers(0, 23)),
        draw(st.integers(0, 59)),
        draw(st.integers(0, 59)),
    )
    digits = draw(st.text("0123456789", min_size=1, max_size=12) | st.none())
    zone = draw(
        st.sampled_from(["Z", "z"])
        | st.builds(
            lambda sign, h, m: f"{sign}{_two(h)}:{_two(m)}",
            st.sampled_from("+-"),
            st.integers(0, 23),
            st.integers(0, 59),
        )
    )
    sep = draw(st.sampled_from("Tt"))
    text = (
        f"{year:04d}-{_two(month)}-{_two(day)}{sep}{_two(hour)}:{_two(minute)}:{_two(second)}"
        + (f".{digits}" if digits else "")
        + zone
    )
    offset = 0
    if zone not in ("Z", "z"):
        offset = (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - offset
    lowest = calendar.timegm((1, 1, 1, 0, 0, 0))
    highest = calendar.timegm((9999, 12, 31, 23, 59, 59))
    if not lowest <= seconds <= highest:
        return text, None
    return text, seconds + (float(f"0.{digits[:9]}") if digits else 0.0)


@st.composite
def crd_date_times(draw: st.DrawFn) -> str:
    """Anything ``crd_accepts``: the grammar's corners, not only RFC 3339."""
    year = draw(st.integers(0, 9999))
    month = draw(st.integers(1, 12))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)  # Go's, year 0 included
    day = draw(st.integers(1, 29 if month == 2 and leap else calendar.monthrange(2001, month)[1]))
    time_ = ":".join(_two(draw(st.integers(0, 59 if i else 23))) for i in range(3))
    fraction = draw(
        st.none()
        | st.text("0123456789", min_size=1, max_size=10).map(lambda d: "." + d)
        | st.builds(
            lambda c, d: c + d,
            st.characters().filter(lambda c: len(c.lower()) == 1 and c.lower() not in "t\n"),
            st.text("0123456789", min_size=1, max_size=4),
        )
    )
    zone = draw(
        st.sampled_from(["Z", "z"])
        | st.builds(
            lambda sign, h, m: f"{sign}{_two(h)}:{_two(m)}",
            st.sampled_from("+-"),
            st.integers(0, 99),
            st.integers(0, 99),
        )
    )
    suffix = draw(st.none() | st.text(max_size=12).map(lambda t: "T" + t))
    value = (
        f"{year:04d}-{_two(month)}-{_two(day)}{draw(st.sampled_from('Tt'))}{time_}"
        + (fraction or "")
        + zone
        + (suffix or "")
    )
    assume(crd_accepts(value))
    return value


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_times = st.one_of(
    rfc3339_times().map(lambda t: t[0]),
    crd_date_times(),
    st.sampled_from(
        [
            "2026-01-01T00:00:00.5Z",
            "2026-01-01T02:00:00+02:00",
            "9999-12-31T23:59:59-14:00",
            "0000-01-01T00:00:00Z",
            "2099-01-01T00:00:00Z",
            now_iso(),
        ]
    ),
)
# What a restore, an edit or a tenant may put into a field: the right type most often.
_strings = st.text(max_size=30) | _times
_anything = _strings | _json


def _field(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, values, values, _json)


def _objects(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of ``fields`` (each usually of its type), and maybe a foreign one."""

    values = {k: _field(v) for k, v in fields.items()}
    foreign = st.none() | st.tuples(st.text(max_size=8), _json)

    @st.composite
    def an_object(draw: st.DrawFn) -> dict[str, Any]:
        out = {k: draw(v) for k, v in values.items() if draw(st.booleans())}
        if (extra := draw(foreign)) is not None:
            out[extra[0]] = extra[1]
        return out

    return an_object()


_intent = _objects(
    {
        "operation": st.sampled_from(["create", "replace", "delete"]),
        "startedAt": _times,
        "url": _strings,
        "eventTypes": st.lists(st.text(max_size=8), max_size=3),
        "channelId": _strings,
        "channelType": _strings,
        "oldWebhookId": _strings,
    }
)
_condition = _objects(
    {
        "type": st.sampled_from(["Ready", "Reconciling", "Stalled", "Other"]),
        "status": st.sampled_from(["True", "False", "Unknown", "Maybe"]),
        "reason": _strings,
        "message": _strings,
        "lastTransitionTime": _times,
        "observedGeneration": st.integers(-(2**63), 2**63 - 1),
    }
)
_episode = _objects(
    {
        "trigger": st.sampled_from(["rotation", "request", "other"]),
        "since": _times,
        "changedAt": _times,
        "token": _strings,
        "giveUpAt": _times,
        "phase": st.sampled_from(["waiting", "probing", "replaying", "verifying", "x"]),
        "startedAt": _times,
        "nextAt": _times,
        "probeId": _strings,
        "probeAt": _times,
        "attempts": st.integers(),
        "inflight": st.lists(_strings, max_size=3),
        "inflightAt": _times,
        "posted": st.integers(),
        "refused": st.lists(_strings, max_size=3),
    }
)
_record = _objects(
    {
        "trigger": st.sampled_from(["rotation", "request"]),
        "since": _times,
        "finishedAt": _times,
        "outcome": st.sampled_from(["replayed", "gaveUp", "other"]),
        "replayed": st.integers(),
    }
)
_deliveries = _objects(
    {
        "checkedAt": _times,
        "complete": st.booleans(),
        "seen": st.integers(),
        "newest": _objects({"id": _strings, "at": _times, "responseCode": st.integers()}),
        "lastDeliveredAt": _times,
        "webhookId": _strings,
        "secretChangeAt": _times,
        "replayToken": _strings,
        "replay": _episode,
        "lastReplay": _record,
    }
)
statuses = _objects(
    {
        "observedGeneration": st.integers(-(2**63), 2**63 - 1),
        "webhookId": _strings,
        "remoteStatus": st.sampled_from(["active", "disabled", "gone"]),
        "secretName": _strings,
        "createdAt": _times,
        "lastSyncedAt": _times,
        "secretRotatedAt": _times,
        "rotateToken": _strings,
        "adoptedWebhookId": _strings,
        "keyId": _strings,
        "rotating": _objects({"webhookId": _strings, "startedAt": _times}),
        "applied": _objects(
            {
                "url": _strings,
                "eventTypes": st.lists(st.text(max_size=8), max_size=3),
                "channelId": _strings,
            }
        ),
        "pending": _intent,
        "abandoned": st.lists(_intent, max_size=5),
        "conditions": st.lists(_condition, max_size=4),
        "deliveries": _deliveries,
        "kopf": _json,
    }
)


# --- the parser ------------------------------------------------------------------------------


def test_fractional_offset_and_lowercase_times_parse() -> None:
    # Before issue 19 each of these raised ValueError out of every handler.
    assert parse_iso("2026-01-01T00:00:00.5Z") == 1767225600.5
    assert parse_iso("2026-01-01T02:00:00+02:00") == 1767225600.0
    assert parse_iso("2025-12-31T19:00:00-05:00") == 1767225600.0
    assert parse_iso("2026-01-01t00:00:00.000000001z") == pytest.approx(1767225600.0)
    assert parse_iso("2026-01-01T00:00:00Z") == 1767225600.0  # what the operator writes


def test_what_is_no_time_or_out_of_range_is_absent() -> None:
    for value in (
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "0000-01-01T00:00:00Z",
        "2026-01-01T00:00:00x5Z",  # the CRD takes any character before the fraction
        "2026-01-01T00:00:00ZTjunk",  # ...and anything after a second T
        "2026-01-01T00:00:00+99:99",
        "2026-01-01 00:00:00Z",
        "2026-02-30T00:00:00Z",
        "",
        None,
    ):
        assert parse_iso(value) is None, value


@EXAMPLES
@given(rfc3339_times())
@example(("2026-01-01T00:00:00.5Z", 1767225600.5))
@example(("9999-12-31T23:59:59-14:00", None))
def test_every_rfc3339_spelling_names_its_instant(case: tuple[str, float | None]) -> None:
    text, expected = case
    assert crd_accepts(text)  # the generator stays inside what the API server stores
    got = parse_iso(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-6)
        datetime.fromtimestamp(got, UTC)  # usable: no overflow later


@EXAMPLES
@given(crd_date_times())
def test_whatever_the_crd_accepts_parses_or_is_absent(value: str) -> None:
    got = parse_iso(value)
    assert got is None or isinstance(got, float)
    if got is not None:
        datetime.fromtimestamp(got, UTC)


@EXAMPLES
@given(st.text() | _json)
def test_parse_never_raises(value: Any) -> None:
    assert parse_iso(value) is None or isinstance(parse_iso(value), float)


@EXAMPLES
@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30)))
def test_the_form_the_operator_writes_round_trips(moment: datetime) -> None:
    # (from year 1000: strftime does not pad %Y below it)
    text = moment.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_iso(text) == calendar.timegm(moment.timetuple())


# --- the model -------------------------------------------------------------------------------


def _times_in(model: BaseModel) -> list[tuple[str, str, bool]]:
    """(field, value, is a past time) for every time field set anywhere in ``model``."""
    out: list[tuple[str, str, bool]] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        text = " ".join(str(m) for m in info.metadata) + str(info.annotation)
        if isinstance(value, str) and "_time" in text:
            out.append((name, value, "_past_time" in text))
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                out += _times_in(item)
    return out


def test_the_time_fields_are_known_to_the_property_below() -> None:
    # If a time field loses its type (plain str), the property checks nothing there.
    status = WebhookStatus.model_validate(
        {
            "createdAt": now_iso(),
            "pending": {"operation": "create", "url": "u", "startedAt": now_iso()},
        }
    )
    assert {(n, p) for n, _, p in _times_in(status)} == {("created_at", True), ("started_at", True)}


@STATUS_EXAMPLES
@given(statuses)
def test_any_status_validates_and_keeps_only_usable_times(raw: dict[str, Any]) -> None:
    dropped: list[Dropped] = []
    status = WebhookStatus.model_validate(raw, context={"now": NOW, "dropped": dropped})
    for name, value, past in _times_in(status):
        seconds = rfc3339_seconds(value)
        assert seconds is not None, (name, value)
        assert not past or seconds <= NOW + FUTURE_SKEW_SECONDS, (name, value)
    # What is left is stable: validated again, nothing more is dropped.
    again: list[Dropped] = []
    assert (
        WebhookStatus.model_validate(status.dump(), context={"now": NOW, "dropped": again})
        == status
    )
    assert again == []
    # A usable top-level string is kept as written.
    for key in ("webhookId", "secretName", "rotateToken", "keyId"):
        if isinstance(raw.get(key), str):
            assert status.dump()[key] == raw[key]
    if raw.get("createdAt") is not None and status.created_at is None:
        assert any(d.path == "createdAt" for d in dropped)


@EXAMPLES
@given(_json)
def test_status_of_any_shape_never_raises(raw: Any) -> None:
    WebhookStatus.model_validate(raw)
    WebhookStatus.model_validate({"conditions": raw, "pending": raw, "deliveries": raw})


def test_malformed_fields_are_dropped_one_by_one() -> None:
    # Before issue 19 each of these made model_validate raise, whole status rejected.
    dropped: list[Dropped] = []
    status = WebhookStatus.model_validate(
        {
            "webhookId": "wh_1",
            "observedGeneration": "three",
            "secretRotatedAt": "2026-01-01T00:00:00x5Z",
            "lastSyncedAt": "2026-01-01T00:00:00.25+01:00",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Synced", "lastTransitionTime": "x"},
                {
                    "type": "Stalled",
                    "status": "False",
                    "reason": "S",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                },
                7,
            ],
            "pending": {"operation": "create", "url": "https://x", "startedAt": "soon"},
            "rotating": {"webhookId": 5},
            "deliveries": {"seen": 1.5, "failed": 2, "replay": {"trigger": "request"}},
            "somethingElse": {"from": "a restore"},
        },
        context={"dropped": dropped},
    )
    assert status.webhook_id == "wh_1"
    assert status.observed_generation is None
    assert status.secret_rotated_at is None
    assert status.last_synced_at == "2026-01-01T00:00:00.25+01:00"
    assert [c.type for c in status.conditions] == ["Stalled"]
    # An intent is kept without its time (unknown: long ago, so recovery looks at once).
    assert status.pending is not None
    assert status.pending.started_at is None
    assert status.rotating is None
    assert status.deliveries is not None
    assert status.deliveries.failed == 2
    assert status.deliveries.seen is None
    assert status.deliveries.replay is None
    assert sorted(d.path for d in dropped) == [
        "conditions[0].lastTransitionTime",
        "conditions[2]",
        "deliveries.replay",
        "deliveries.seen",
        "observedGeneration",
        "pending.startedAt",
        "rotating.webhookId",
        "secretRotatedAt",
    ]


def test_a_future_now_time_is_absent_only_when_now_is_known() -> None:
    raw = {
        "lastSyncedAt": "2099-01-01T00:00:00Z",
        "deliveries": {
            "replay": {
                "trigger": "request",
                "since": "2026-01-01T00:00:00Z",
                "giveUpAt": "2099-01-01T00:00:00Z",
            }
        },
    }
    assert WebhookStatus.model_validate(raw).last_synced_at == "2099-01-01T00:00:00Z"
    status = WebhookStatus.model_validate(raw, context={"now": NOW})
    assert status.last_synced_at is None
    # A time that is meant to lie ahead (when replays are given up) stays.
    assert status.deliveries is not None
    assert status.deliveries.replay is not None
    assert status.deliveries.replay.give_up_at == "2099-01-01T00:00:00Z"


# --- the findings, on the reconcile layer ------------------------------------------------------


@pytest.fixture
def world() -> World:
    return World()


def restore(world: World, **fields: Any) -> None:
    """Write status fields as a restore tool (or ``kubectl edit --subresource=status``) would."""
    merge_patch(world.kube.objects[(NAMESPACE, "orders")]["status"], fields)


async def _edit_is_applied(world: World) -> None:
    world.edit_spec(url="https://edited.shop.example.com/blooio")
    await world.reconcile()
    assert world.blooio.count("update_webhook") == 1
    assert world.condition("Ready")["status"] == "True"
    assert world.status()["observedGeneration"] == 2


async def _deletion_completes(world: World) -> None:
    assert await world.run(deletion.finalize, action="delete") is None
    assert world.blooio.hooks == {}


@pytest.mark.parametrize(
    "value", ["2026-01-01T00:00:00.5Z", "2026-01-01T02:00:00+02:00", "2026-01-01T00:00:00x5Z"]
)
async def test_restored_secret_rotated_at_wedges_nothing(world: World, value: str) -> None:
    await world.ready()
    restore(world, secretRotatedAt=value)
    await _edit_is_applied(world)
    await _deletion_completes(world)


def test_restored_rotation_time_is_read_where_replays_are_planned() -> None:
    # The delivery handlers read secretRotatedAt on every event of the object: a restored
    # "...00.5Z" made each of them throw.
    status = WebhookStatus.model_validate(
        {"webhookId": "wh_1", "secretRotatedAt": "2026-01-01T00:00:00.5Z"}
    )
    assert replay_plan.secret_change(status) == 1767225600.5


async def test_restored_last_synced_at_gives_no_hot_loop(world: World) -> None:
    await world.ready()
    restore(world, lastSyncedAt="2020-01-01T00:00:00.5Z")
    await periodic.periodic_check(world.ctx())  # raised ValueError: a Warning and a retry, forever
    assert world.kube.writes == []
    assert world.events.events == []


@pytest.mark.parametrize(
    "started", ["2026-01-01T00:00:00.5Z", "2099-01-01T00:00:00Z", "0000-01-01T00:00:00Z"]
)
async def test_restored_pending_intent_is_recovered_not_reconciling_forever(
    world: World, started: str
) -> None:
    webhook_id = await world.ready()
    restore(
        world,
        webhookId=None,
        pending={
            "operation": "create",
            "startedAt": started,
            "url": world.body()["spec"]["url"],
            "eventTypes": world.body()["spec"]["eventTypes"],
        },
    )
    assert await world.run(let_time_pass=False) is None
    assert world.status()["webhookId"] == webhook_id  # recovered (adopted back), not recreated
    assert "pending" not in world.status()
    assert world.condition("Ready")["status"] == "True"
    assert world.blooio.count("create_webhook") == 0


async def test_abandoned_intent_from_the_future_does_not_hold_deletion(world: World) -> None:
    await world.ready()
    restore(
        world,
        abandoned=[
            {"operation": "create", "startedAt": "2099-01-01T00:00:00Z", "url": "https://x"}
        ],
    )
    err = await world.run(deletion.finalize, action="delete", let_time_pass=False)
    assert err is None  # waited until 2099 for the intent to settle
    assert world.blooio.hooks == {}


async def test_unusable_value_is_reported_once_per_resource_and_value(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "_REPORTED", OrderedDict())  # other tests' reports
    await world.ready()
    restore(world, secretRotatedAt="2026-01-01T00:00:00x5Z")
    with caplog.at_level(logging.WARNING, logger="blooio_operator.reconcile"):
        for _ in range(3):
            world.ctx()
        restore(world, secretRotatedAt="2026-01-01T00:00:00y5Z")
        world.ctx()
        world.ctx()
    lines = [r.getMessage() for r in caplog.records if "secretRotatedAt" in r.getMessage()]
    assert lines == [
        "shop/orders: status.secretRotatedAt '2026-01-01T00:00:00x5Z' is ignored "
        "(not an RFC 3339 time)",
        "shop/orders: status.secretRotatedAt '2026-01-01T00:00:00y5Z' is ignored "
        "(not an RFC 3339 time)",
    ]
    assert world.kube.writes == []
