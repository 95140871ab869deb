"""Where kopf keeps the last-handled configuration of a BlooioWebhook."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf


class StatusDiffBase(kopf.MultiDiffBaseStorage):
    """kopf's last-handled configuration, kept in ``status.kopf`` rather than an annotation.

    kopf writes it after a handler succeeds; in the status it rides in the same
    ``/status`` merge patch as the handler's final status (``WebhookContext.status_sink``),
    where an annotation cost a second request and a second watch event per change.
    Objects handled by an earlier version carry the annotation
    ``operator.blooio.com/last-handled-configuration``: it is still read (so an upgrade
    sees no change and writes nothing) and left out of the diff, but never written again.
    """

    def __init__(self) -> None:
        self._status = kopf.StatusDiffBaseStorage(field="status.kopf.last-handled-configuration")
        # Not "blooio.com": kopf leaves every annotation under its own prefix out of the
        # diff, and the user annotations blooio.com/rotate-secret etc. must trigger handlers.
        self._legacy = kopf.AnnotationsDiffBaseStorage(
            prefix="operator.blooio.com", key="last-handled-configuration"
        )
        super().__init__([self._status, self._legacy])

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        # The essence the two storages would build, with one deep copy of the body
        # instead of the three MultiDiffBaseStorage makes (per event, on every object).
        # The status is dropped whole by the base; only the legacy annotation remains.
        essence = kopf.DiffBaseStorage.build(self, body=body, extra_fields=extra_fields)
        legacy = self._legacy
        legacy.remove_annotations(essence, set(legacy.make_keys(legacy.key, body=body)))
        legacy.remove_empty_stanzas(essence)
        # The generation is part of what was handled: a spec changed and then changed
        # back to the last-handled one (while a retry of the first change was pending)
        # is still a change to handle. Without it kopf sees no diff and drops the retry,
        # and the resource stays behind its generation, with its intent, for good.
        cast(dict[str, Any], essence).setdefault("metadata", {})["generation"] = body.get(
            "metadata", {}
        ).get("generation")
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        essence = super().fetch(body=body)
        if essence is not None and "generation" not in (essence.get("metadata") or {}):
            # Stored by an earlier version, without it: as handled at this generation
            # (an upgrade must not look like a change of every resource).
            meta = cast(dict[str, Any], essence).setdefault("metadata", {})
            meta["generation"] = body.get("metadata", {}).get("generation")
        return essence

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._status.store(body=body, patch=patch, essence=essence)
