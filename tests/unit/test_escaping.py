"""Issue 19, item 4: user values are escaped in log lines, Event messages and conditions.

A user value (here ``blooio.com/adopt-webhook-id``) with a newline was copied raw into the
condition message, the Warning Event and kopf's "Handler failed" log line, so it could
forge an operator log line (``...\\n2026-01-01 ... INFO blooio_operator: ...``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from blooio_operator.handlers.events import KopfEvents, KubeEvents
from blooio_operator.logs import configure_logging, escape_controls
from blooio_operator.models import reasons
from blooio_operator.models.conditions import MAX_MESSAGE, mark_stalled, set_condition
from tests.unit.fakes import World

FORGED = "wh_x\n2026-01-01 00:00:00,000 INFO    blooio_operator: all good"
T0 = "2026-01-01T00:00:00Z"
CONTROLS = "a\rb\tc\x1b[31md\x00e\x7ff\x85g\u2028h\u2029i\u202ej"


def one_line(text: str) -> bool:
    return not any(ch in text for ch in "\n\r\x00\x1b\x7f\x85\u2028\u2029\u202e")


def test_escape_controls_keeps_text_on_one_line_and_readable() -> None:
    assert escape_controls(FORGED) == FORGED.replace("\n", "\\n")
    out = escape_controls(CONTROLS)
    assert one_line(out)
    assert out == "a\\rb\\tc\\x1b[31md\\x00e\\x7ff\\x85g\\u2028h\\u2029i\\u202ej"
    assert escape_controls("naïve 日本 ✓ wh_1 https://x/y?z") == "naïve 日本 ✓ wh_1 https://x/y?z"


# --- conditions ------------------------------------------------------------------------------


def test_condition_messages_are_escaped() -> None:
    conds = set_condition([], "Ready", "False", "AdoptionFailed", FORGED, generation=1, now=T0)
    assert conds[0].message == FORGED.replace("\n", "\\n")
    conds = mark_stalled(conds, "AdoptionFailed", CONTROLS, generation=1, now=T0)
    assert all(one_line(c.message) for c in conds)


def test_condition_messages_are_bounded() -> None:
    # An annotation value can be 256 KiB; the CRD takes messages up to 32768 characters.
    long = "wh_" + "\n" * 40_000
    conds = set_condition([], "Ready", "False", "AdoptionFailed", long, generation=1, now=T0)
    assert len(conds[0].message) == MAX_MESSAGE
    assert conds[0].message.startswith("wh_\\n\\n")
    assert conds[0].message.endswith("...")


async def test_adopt_annotation_with_a_newline_reaches_status_escaped() -> None:
    world = World()
    world.apply(annotations={reasons.ANNOTATION_ADOPT: FORGED})
    err = await world.run()
    assert err is not None
    stalled = world.condition("Stalled")
    assert stalled is not None
    assert stalled["status"] == "True"
    assert "wh_x\\n2026-01-01" in stalled["message"]
    assert all(one_line(c["message"]) for c in world.status()["conditions"])


# --- Events ----------------------------------------------------------------------------------


def test_kopf_events_are_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: posted.append(kw))
    sink = KopfEvents({})  # type: ignore[arg-type]
    sink.warning("AdoptionFailed", FORGED)
    sink.normal("Adopted", CONTROLS)
    assert [p["message"] for p in posted] == [escape_controls(FORGED), escape_controls(CONTROLS)]
    assert all(one_line(p["message"]) for p in posted)


class _Kube:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def create_event(self, involved: dict[str, Any], **kw: str) -> None:
        self.events.append(kw["message"])


async def test_sweep_events_are_escaped() -> None:
    kube = _Kube()
    body = {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "metadata": {"namespace": "shop", "name": "orders", "uid": "u"},
    }
    sink = KubeEvents(kube, body)  # type: ignore[arg-type]
    sink.warning("SecretRestored", FORGED)
    sink.normal("DriftCorrected", CONTROLS)
    for _ in range(20):
        if len(kube.events) == 2:
            break
        await asyncio.sleep(0)
    assert kube.events == [escape_controls(FORGED), escape_controls(CONTROLS)]


# --- log lines -------------------------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_text_log_lines_cannot_be_forged(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text", "INFO")
    ref = {"kind": "BlooioWebhook", "name": "orders", "namespace": "shop", "uid": "u"}
    extra = {"settings": kopf.OperatorSettings(), "k8s_skip": False, "k8s_ref": ref}
    # kopf's own line for a failed handler quotes the exception, i.e. the user value.
    logging.getLogger("kopf.objects").error(
        "Handler 'reconcile' failed permanently: %s", f"adopt {FORGED}", extra=extra
    )
    logging.getLogger("blooio_operator.reconcile").warning("%s", CONTROLS)
    lines = _lines(capsys)
    assert len(lines) == 2, lines
    assert lines[0].endswith(
        "kopf.objects: [shop/orders] Handler 'reconcile' failed permanently: adopt "
        + FORGED.replace("\n", "\\n")
    )
    assert lines[1].endswith("blooio_operator.reconcile: " + escape_controls(CONTROLS))


def test_text_log_tracebacks_stay_readable(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text", "INFO")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("blooio_operator").exception("failed with\nnewline")
    lines = _lines(capsys)
    assert lines[0].endswith("blooio_operator: failed with\\nnewline")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"


def test_json_log_lines_cannot_be_forged(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "INFO")
    logging.getLogger("blooio_operator.reconcile").warning("adopt %s %s", FORGED, CONTROLS)
    lines = _lines(capsys)
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["message"] == f"adopt {FORGED} {CONTROLS}"
    assert one_line(lines[0])
