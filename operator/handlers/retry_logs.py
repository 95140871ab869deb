"""kopf logs every failed try of a handler at ERROR ("Handler 'reconcile' failed
temporarily: ..."). During a failure episode (``reconcile.episodes``) that is one line
per resource per retry for as long as the failure lasts. The episode's first failure
keeps its line; the retries of an episode already shown are logged at DEBUG only."""

from __future__ import annotations

import logging


class QuietRetries(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.ongoing: set[tuple[str, str]] = set()  # (namespace, name) in a shown episode

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or "failed temporarily" not in str(record.msg):
            return True
        ref = getattr(record, "k8s_ref", None)
        if not isinstance(ref, dict) or (ref.get("namespace"), ref.get("name")) not in self.ongoing:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


QUIET_RETRIES = QuietRetries()


def install() -> QuietRetries:
    logging.getLogger("kopf.objects").addFilter(QUIET_RETRIES)  # once: addFilter skips a repeat
    return QUIET_RETRIES
