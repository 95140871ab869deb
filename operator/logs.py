"""Logging setup: text or JSON, and a redaction filter as a last line of defence.

The code never logs secrets; the filter additionally masks anything that looks like a
Blooio key or signing secret, and the configured API key itself, in every record.
"""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

_PATTERNS = [
    re.compile(r"whsec_[A-Za-z0-9_]+"),
    re.compile(r"bl_(?:live|test)_[A-Za-z0-9_]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
]


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
            exc = record.exc_info[1]
            text = self.redact(str(exc))
            if text != str(exc):
                record.exc_info = None
                record.msg = f"{record.msg} ({type(exc).__name__}: {text})"
        return True


def configure_logging(
    fmt: str = "text", level: str = "INFO", secrets: list[str] | None = None
) -> RedactingFilter:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "httpcore", "httpx", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return redactor
