"""Deterministic crash points for fault-injection tests.

``BLOOIO_CRASH_POINT=<name>`` (optionally ``<name>:<n>`` to crash on the n-th time the
point is reached) makes the process SIGKILL itself at that step boundary, exactly as an
OOM kill or node failure would. Unset in production; the check is a string compare.
"""

from __future__ import annotations

import os
import signal
from typing import Final

POINTS: Final = (
    "before-create",  # intent recorded, POST not sent
    "after-create",  # POST answered, nothing written
    "after-secret",  # Secret written, status not
    "after-replace-create",  # replace: new webhook created, nothing written
    "before-replace-delete",  # replace: new webhook installed, old not deleted
    "after-remote-delete",  # delete: webhook deleted, finalizer not removed
    "after-rotate",  # rotation answered, Secret not written
    "before-replay",  # replay intent recorded, replay not posted
    "after-replay",  # replay posted, not recorded
)


class CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self.name: str | None = None
        self.remaining = 1
        if spec:
            name, _, count = spec.partition(":")
            if name not in POINTS:
                raise ValueError(f"unknown crash point {name!r}; known: {', '.join(POINTS)}")
            self.name = name
            self.remaining = int(count) if count else 1

    def __call__(self, point: str) -> None:
        if point != self.name:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
