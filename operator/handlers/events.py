"""Where the handlers' Events go: kopf's batched poster inside kopf's per-object tasks,
our own client anywhere else (the sweeps). Both escape control characters in the message
(it quotes user values), here and nowhere else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from blooio_operator.kube import KubeClient
from blooio_operator.logs import escape_controls

log = logging.getLogger("blooio_operator.handlers")


class KopfEvents:
    """EventSink posting through kopf's batched event poster."""

    def __init__(self, body: kopf.Body) -> None:
        self._body = body

    def normal(self, reason: str, message: str) -> None:
        kopf.event(self._body, type="Normal", reason=reason, message=escape_controls(message))

    def warning(self, reason: str, message: str) -> None:
        kopf.event(self._body, type="Warning", reason=reason, message=escape_controls(message))


class KubeEvents:
    """EventSink posting through our own client, for the periodic sweep.

    ``kopf.event()`` works only inside kopf's per-object tasks (it finds its poster's
    queue in a context variable set there); the sweep is not one. Posting happens in the
    background, as with kopf's poster: a failed post is logged, and never fails a check.
    """

    _posting: set[asyncio.Task[None]] = set()  # strong references until done

    def __init__(self, kube: KubeClient, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        self._kube = kube
        self._involved = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        }

    def normal(self, reason: str, message: str) -> None:
        self._post("Normal", reason, message)

    def warning(self, reason: str, message: str) -> None:
        self._post("Warning", reason, message)

    def _post(self, type_: str, reason: str, message: str) -> None:
        message = escape_controls(message)
        task = asyncio.get_running_loop().create_task(self._send(type_, reason, message))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _send(self, type_: str, reason: str, message: str) -> None:
        try:
            await self._kube.create_event(
                self._involved, type=type_, reason=reason, message=message
            )
        except Exception as exc:
            log.warning(
                "could not post Event %s about %s/%s: %s",
                reason,
                self._involved["namespace"],
                self._involved["name"],
                exc,
            )
