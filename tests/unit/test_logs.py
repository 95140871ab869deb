"""RedactingFilter and configure_logging: secrets never reach a log line, JSON is valid."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from blooio_operator.logs import RedactingFilter, configure_logging

SIGNING = "whsec_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
LIVE_KEY = "bl_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
TEST_KEY = "bl_test_integration_key_0123456789"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzYSJ9.c2lnbmF0dXJl-_x"
LITERAL = "opaque-configured-secret-42"


def record(
    msg: str,
    *args: object,
    exc: BaseException | None = None,
    level: int = logging.INFO,
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("blooio_operator.test", level, __file__, 1, msg, args, exc_info)


def rendered(rec: logging.LogRecord, flt: RedactingFilter | None = None) -> str:
    """What a handler with the filter writes for ``rec`` (message and traceback)."""
    flt = flt or RedactingFilter()
    assert flt.filter(rec) is True, "the filter masks, it never drops a record"
    return logging.Formatter("%(levelname)s %(name)s: %(message)s").format(rec)


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


# --- patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "kept"),
    [
        (SIGNING, ""),
        ("whsec_short", ""),
        (LIVE_KEY, ""),
        (TEST_KEY, ""),
        (f"Bearer {TOKEN}", "Bearer "),
        (f"bearer {TOKEN}", "bearer "),
        (f"Authorization: Bearer {LIVE_KEY}", "Authorization: Bearer "),
    ],
)
def test_patterns_are_masked_in_messages(secret: str, kept: str) -> None:
    out = RedactingFilter().redact(f"before {secret} after")
    assert out == f"before {kept}[REDACTED] after"


def test_masks_secrets_passed_as_format_arguments() -> None:
    rec = record("created %s with secret %s (key %s)", "wh_1", SIGNING, LIVE_KEY)
    out = rendered(rec)
    assert SIGNING not in out
    assert LIVE_KEY not in out
    assert "created wh_1 with secret [REDACTED] (key [REDACTED])" in out


def test_masks_every_occurrence_and_leaves_clean_text_alone() -> None:
    text = f"{SIGNING} and again {SIGNING}; a whsec prefix alone is fine; bl_ too"
    out = RedactingFilter().redact(text)
    assert SIGNING not in out
    assert out.count("[REDACTED]") == 2
    assert out.endswith("; a whsec prefix alone is fine; bl_ too")

    rec = record("webhook %s is %s", "wh_1", "active")
    assert rendered(rec) == "INFO blooio_operator.test: webhook wh_1 is active"
    assert rec.args == ("wh_1", "active"), "a clean record keeps its arguments"


def test_configured_literals_are_masked() -> None:
    flt = RedactingFilter([LITERAL])
    assert flt.redact(f"key={LITERAL}!") == "key=[REDACTED]!"
    out = rendered(record("using %s", LITERAL), flt)
    assert LITERAL not in out


def test_short_literals_are_ignored_so_common_words_survive() -> None:
    flt = RedactingFilter(["", "abc", "secret7"])
    assert flt.literals == []
    assert flt.redact("abc secret7") == "abc secret7"


# --- exceptions -------------------------------------------------------------------------


def test_exception_text_is_masked() -> None:
    exc = raised(RuntimeError(f"Blooio said no to Bearer {LIVE_KEY} for {SIGNING}"))
    rec = record("create failed", exc=exc, level=logging.ERROR)
    out = rendered(rec)
    assert LIVE_KEY not in out
    assert SIGNING not in out
    assert out.startswith("ERROR blooio_operator.test: create failed")
    assert "RuntimeError: Blooio said no to Bearer [REDACTED] for [REDACTED]" in out


def test_exception_with_literal_in_message_and_args() -> None:
    exc = raised(ValueError(f"bad key {LITERAL}"))
    rec = record("call with %s failed", LITERAL, exc=exc, level=logging.WARNING)
    out = rendered(rec, RedactingFilter([LITERAL]))
    assert LITERAL not in out
    assert "call with [REDACTED] failed" in out
    assert "ValueError: bad key [REDACTED]" in out


def test_a_chained_cause_is_masked_too() -> None:
    """``raise Clean(...) from original``: the cause is printed in the traceback as well."""
    try:
        try:
            raise ValueError(f"upstream echoed Bearer {LIVE_KEY}")
        except ValueError as inner:
            raise RuntimeError("request failed") from inner
    except RuntimeError as outer:
        exc: BaseException = outer
    out = rendered(record("reconcile failed", exc=exc, level=logging.ERROR))
    assert LIVE_KEY not in out
    assert "RuntimeError: request failed" in out


def test_clean_exception_keeps_its_traceback() -> None:
    exc = raised(KeyError("webhook-id"))
    rec = record("lookup failed", exc=exc, level=logging.ERROR)
    out = rendered(rec)
    assert "Traceback (most recent call last)" in out
    assert "KeyError: 'webhook-id'" in out


def test_a_traceback_already_formatted_by_another_handler_does_not_leak() -> None:
    """kopf's per-object logger has handlers of its own that may format a record first."""
    exc = raised(RuntimeError(f"leak {SIGNING}"))
    rec = record("boom", exc=exc, level=logging.ERROR)
    logging.Formatter().format(rec)  # caches rec.exc_text, as any earlier handler would
    out = rendered(rec)
    assert SIGNING not in out


# --- configure_logging: the handler the operator actually uses ---------------------------


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


def test_json_lines_have_level_logger_message_and_are_redacted(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "DEBUG", [LITERAL])
    log = logging.getLogger("blooio_operator.reconcile")
    log.debug("debug line with %s", SIGNING)
    log.info('quotes " and newlines\n are escaped; key %s', LITERAL)
    try:
        raise RuntimeError(f"Bearer {TOKEN}")
    except RuntimeError:
        log.exception("failed")
    try:
        raise KeyError("x")
    except KeyError:
        log.exception("clean failure")

    lines = _lines(capsys)
    assert len(lines) == 4, lines
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert {"level", "logger", "message", "time"} <= rec.keys(), rec
        assert rec["logger"] == "blooio_operator.reconcile"
    assert [r["level"] for r in records] == ["DEBUG", "INFO", "ERROR", "ERROR"]
    assert records[0]["message"] == "debug line with [REDACTED]"
    assert records[1]["message"] == 'quotes " and newlines\n are escaped; key [REDACTED]'
    assert records[2]["message"].startswith("failed")
    failure = records[2]["message"] + records[2].get("exc_info", "")
    assert "RuntimeError: Bearer [REDACTED]" in failure
    assert "KeyError" in records[3]["exc_info"]
    text = "\n".join(lines)
    for secret in (SIGNING, LITERAL, TOKEN):
        assert secret not in text


def test_kopf_per_object_records_are_json_and_name_their_object(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """kopf.objects records carry kopf's ``extra``: settings (not serialisable) and a ref."""
    import kopf

    configure_logging("json", "DEBUG")
    ref = {
        "apiVersion": "blooio.com/v1alpha1",
        "kind": "BlooioWebhook",
        "name": "orders",
        "uid": "0b9c2f1e",
        "namespace": "shop",
    }
    extra = {"settings": kopf.OperatorSettings(), "k8s_skip": False, "k8s_ref": ref}
    logging.getLogger("kopf.objects").info("Handler 'reconcile' succeeded.", extra=extra)
    err = capsys.readouterr().err
    assert "Logging error" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    rec = json.loads(lines[0])
    assert rec["logger"] == "kopf.objects"
    assert rec["message"] == "Handler 'reconcile' succeeded."
    assert "shop" in lines[0], "the object stays identifiable"
    assert "orders" in lines[0], "the object stays identifiable"


def test_text_format_and_level(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    flt = configure_logging("text", "info", [LITERAL])
    assert isinstance(flt, RedactingFilter)
    assert flt.literals == [LITERAL]
    log = logging.getLogger("blooio_operator.handlers")
    log.debug("hidden")
    log.info("visible %s", LIVE_KEY)
    lines = _lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].endswith("INFO    blooio_operator.handlers: visible [REDACTED]")


def test_kopf_per_object_text_lines_name_their_object(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import kopf

    configure_logging("text", "INFO")
    ref = {"kind": "BlooioWebhook", "name": "orders", "namespace": "shop", "uid": "0b9c2f1e"}
    extra = {"settings": kopf.OperatorSettings(), "k8s_skip": False, "k8s_ref": ref}
    logging.getLogger("kopf.objects").info("Handler 'reconcile' succeeded.", extra=extra)
    logging.getLogger("kopf.objects").info(
        "cluster-wide", extra={**extra, "k8s_ref": {"name": "x"}}
    )
    logging.getLogger("blooio_operator").info("no object")
    lines = _lines(capsys)
    assert lines[0].endswith("kopf.objects: [shop/orders] Handler 'reconcile' succeeded."), lines
    assert lines[1].endswith("kopf.objects: [x] cluster-wide"), lines
    assert lines[2].endswith("blooio_operator: no object"), lines


def test_bookkeeping_handler_successes_only_at_debug(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import kopf

    from blooio_operator.logs import _QUIET, quiet_success

    objects = logging.getLogger("kopf.objects")
    extra = {"settings": kopf.OperatorSettings(), "k8s_skip": False, "k8s_ref": {"name": "x"}}
    # Handler registration elsewhere in this process may have installed it already.
    installed, messages = _QUIET in objects.filters, set(_QUIET.messages)
    try:
        quiet_success("registry")
        configure_logging("text", "INFO")
        objects.info("Handler 'registry' succeeded.", extra=extra)
        objects.info("Handler 'reconcile' succeeded.", extra=extra)
        objects.error("Handler 'registry' failed permanently: boom", extra=extra)
        lines = _lines(capsys)
        assert [line.split("] ", 1)[1] for line in lines] == [
            "Handler 'reconcile' succeeded.",
            "Handler 'registry' failed permanently: boom",
        ], lines
        configure_logging("text", "DEBUG")
        objects.info("Handler 'registry' succeeded.", extra=extra)
        assert _lines(capsys)[0].endswith("Handler 'registry' succeeded.")
    finally:
        if not installed:
            objects.removeFilter(_QUIET)
        _QUIET.messages.clear()
        _QUIET.messages.update(messages)


def test_reconfiguring_replaces_the_handler(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text", "INFO")
    configure_logging("json", "INFO")
    assert len(logging.getLogger().handlers) == 1
    logging.getLogger("x").warning("once")
    lines = _lines(capsys)
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "once"


def test_noisy_libraries_stay_quiet_at_debug(root_logging: None) -> None:
    configure_logging("json", "DEBUG")
    for name in ("urllib3", "httpcore", "httpx", "asyncio"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
