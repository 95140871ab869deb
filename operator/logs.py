"""Logging setup: text or JSON, and a redaction filter as a last line of defence.

The code never logs secrets; the filter additionally masks anything that looks like a
Blooio key or signing secret, and the configured API key itself, in every record.

User values (annotations, spec fields, Blooio's messages) reach log lines, Event and
condition messages; ``escape_controls`` keeps them on one line, so a newline in
``blooio.com/adopt-webhook-id`` cannot forge an operator log line. Text logs escape the
whole message here; JSON logs are escaped by the JSON encoder (``ensure_ascii``).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

_PATTERNS = [
    re.compile(r"whsec_[A-Za-z0-9_]+"),
    re.compile(r"bl_(?:live|test)_[A-Za-z0-9_]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
]
_TRACEBACKS = logging.Formatter()

# Every C0/C1 control character, DEL, the Unicode line and paragraph separators, and the
# bidirectional overrides (text that reads differently from what it is).
_ESCAPES: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    **{ord(c): e for c, e in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))},
    **{c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))},
}


def escape_controls(text: str) -> str:
    """``text`` with every control character escaped as Python would (``\\n``, ``\\x1b``):
    one line, whatever a user put into it."""
    return text.translate(_ESCAPES)


# kopf's per-object logger passes these as ``extra``. ``settings`` cannot be serialised:
# left in, every kopf.objects record is lost to a "--- Logging error ---" traceback.
_KOPF_EXTRAS = ("settings", "k8s_skip", "k8s_ref")


class RedactingFilter(logging.Filter):
    def __init__(self, literals: list[str] | None = None) -> None:
        super().__init__()
        self.literals = [s for s in (literals or []) if len(s) >= 8]

    def redact(self, text: str) -> str:
        for lit in self.literals:
            text = text.replace(lit, "[REDACTED]")
        for pat in _PATTERNS:
            text = pat.sub(lambda m: (m.group(1) if m.lastindex else "") + "[REDACTED]", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            # The whole traceback (chained causes included, and whatever an earlier handler
            # cached in exc_text), kept but masked: with exc_info unset, both the text and
            # the JSON formatter print exc_text as it is.
            text = record.exc_text or _TRACEBACKS.formatException(record.exc_info)
            masked = self.redact(text)
            if masked != text:
                record.exc_info, record.exc_text = None, masked
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class _JsonFormatter(JsonFormatter):
    """JSON lines; kopf's object reference (``k8s_ref``) becomes an ``object`` field."""

    def __init__(self, fmt: str, **kwargs: Any) -> None:
        super().__init__(fmt, reserved_attrs=[*RESERVED_ATTRS, *_KOPF_EXTRAS], **kwargs)

    def add_fields(
        self,
        log_record: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            log_record["object"] = ref


class _TextFormatter(logging.Formatter):
    """One line per record; kopf's per-object records name their object, ``[ns/name]``.

    The message is escaped (``escape_controls``); a traceback that follows it is not.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        ref = getattr(record, "k8s_ref", None)
        where = ""
        if isinstance(ref, dict) and ref.get("name"):
            namespace = ref.get("namespace")
            where = f"[{namespace}/{ref['name']}] " if namespace else f"[{ref['name']}] "
        record.where = where
        return super().format(record)


class _QuietSuccesses(logging.Filter):
    """kopf logs every handler's success at INFO. For the bookkeeping handlers that run on
    every watch event of every object (two lines per event: 20,000 at a restart with
    10,000 resources), that is noise: their successes are shown at DEBUG only. Failures stay."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and record.msg in self.messages
            and not logging.getLogger().isEnabledFor(logging.DEBUG)
        )


_QUIET = _QuietSuccesses()


def quiet_success(handler_id: str) -> None:
    """Show kopf's "Handler '<handler_id>' succeeded." at DEBUG only."""
    _QUIET.messages.add(f"Handler {handler_id!r} succeeded.")
    logging.getLogger("kopf.objects").addFilter(_QUIET)  # once: addFilter skips a repeat


def configure_logging(
    fmt: str = "text", level: str = "INFO", secrets: list[str] | None = None
) -> RedactingFilter:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            _JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            _TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(where)s%(message)s")
        )
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "httpcore", "httpx", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return redactor
