"""Where kopf keeps the last-handled configuration of a BlooioWebhook, and its handlers'
progress; both are read defensively (status is written by restores and tenants too)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, cast

import iso8601
import kopf

log = logging.getLogger("blooio_operator.handlers")
_REPORTED: OrderedDict[tuple[str, str, str], None] = OrderedDict()
_REPORTED_MAX = 4096  # (resource, where, value digest) remembered; oldest forgotten first


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
        """The stored essence, from the status or else the legacy annotation.

        Either may hold anything (a tenant, a restore, a hand edit): one that is not a
        JSON object is ignored with one warning per resource and value, as if absent, so
        the resource is handled (kopf stopped handling it: its fetch raised on every
        event). With neither, kopf handles the resource as new; the handlers are
        level-triggered, so that is a reconcile, and the next store fixes the status.
        """
        essence: kopf.BodyEssence | None = None
        for storage, where in (
            (self._status, "status.kopf.last-handled-configuration"),
            (self._legacy, "annotation operator.blooio.com/last-handled-configuration"),
        ):
            try:
                found: object = storage.fetch(body=body)
            except (ValueError, TypeError) as exc:  # not JSON (ValueError), not a string
                found = exc
            if found is None:
                continue
            if _is_essence(found):
                essence = cast(kopf.BodyEssence, found)
                break
            _report_invalid(body, where, storage)
        if essence is not None and "generation" not in (essence.get("metadata") or {}):
            # Stored by an earlier version, without it: as handled at this generation
            # (an upgrade must not look like a change of every resource).
            meta = cast(dict[str, Any], essence).setdefault("metadata", {})
            meta["generation"] = body.get("metadata", {}).get("generation")
        return essence

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._status.store(body=body, patch=patch, essence=essence)


class StatusProgress(kopf.StatusProgressStorage):
    """kopf's per-handler progress (``status.kopf.<handler id>``), read defensively.

    kopf trusts the record: one that is not an object, or holds a time its parser
    refuses, raised on every event (the resource was never handled again), and a retry
    "delayed" until 2099 is a retry that never comes. Such a record is ignored with one
    warning per resource and value: the handler runs as if it had never started.
    """

    def fetch(self, *, key: str, body: kopf.Body) -> kopf.ProgressRecord | None:
        record: object = super().fetch(key=cast(Any, key), body=body)
        if record is None or _is_progress(record):
            return cast(kopf.ProgressRecord | None, record)
        _report(body, f"status.kopf.{key}", record)
        return None


# A kopf retry is never delayed longer than this (the longest delay the handlers ask
# for is the credentials retry, minutes); a later one was not written by kopf.
_MAX_DELAY_SECONDS = 86400.0


def _is_progress(record: object) -> bool:
    if not isinstance(record, dict):
        return False
    times: dict[str, float] = {}
    for field in ("started", "stopped", "delayed"):
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            return False
        try:  # kopf's own parser (a time it refuses raises inside kopf)
            parsed = iso8601.parse_date(value, default_timezone=None)
        except (iso8601.ParseError, ValueError, OverflowError):
            return False
        if parsed.tzinfo is None:  # kopf subtracts it from an aware "now"
            return False
        times[field] = parsed.timestamp()
    if times.get("delayed", 0.0) > time.time() + _MAX_DELAY_SECONDS:
        return False
    kinds: dict[str, tuple[type, ...]] = {
        "purpose": (str,),
        "retries": (int,),
        "success": (bool,),
        "failure": (bool,),
        "message": (str,),
        "subrefs": (list,),
    }
    for field, types in kinds.items():
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, types) or (field == "retries" and isinstance(value, bool)):
            return False
    subrefs = record.get("subrefs") or []
    return all(isinstance(ref, str) for ref in subrefs)


def _is_essence(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("metadata", {}), dict)


def _report_invalid(body: kopf.Body, where: str, storage: kopf.DiffBaseStorage) -> None:
    meta = body.get("metadata", {})
    if isinstance(storage, kopf.AnnotationsDiffBaseStorage):
        annotations = meta.get("annotations") or {}
        keys = storage.make_keys(storage.key, body=body)
        raw: object = next((annotations[k] for k in keys if k in annotations), None)
    else:
        raw = (body.get("status") or {}).get("kopf", {})
        raw = raw.get("last-handled-configuration") if isinstance(raw, dict) else raw
    _report(body, where, raw)


def _report(body: kopf.Body, where: str, raw: object) -> None:
    """One warning per resource, place and value (not one per event)."""
    meta = body.get("metadata", {})
    digest = hashlib.sha256(repr(raw).encode()).hexdigest()[:16]
    key = (str(meta.get("uid")), where, digest)
    if key in _REPORTED:
        _REPORTED.move_to_end(key)
        return
    _REPORTED[key] = None
    if len(_REPORTED) > _REPORTED_MAX:
        _REPORTED.popitem(last=False)
    shown = repr(raw)
    log.warning(
        "%s/%s: %s is unreadable (%s); ignored, the resource is handled as if it had none",
        meta.get("namespace"),
        meta.get("name"),
        where,
        shown if len(shown) <= 80 else shown[:77] + "...",
    )
