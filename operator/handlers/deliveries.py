"""kopf registrations for delivery health and replays (``reconcile.deliveries``/``replay``).

* A watch-event handler works out, from a resource's status and annotations, when
  replay work is next due (a signing-secret change, an episode in progress, a
  ``blooio.com/replay-failed-since`` value); a timer per resource with work due runs
  the next step. Events cost no API call.
* The health sweep: one ``GET /webhooks/{id}/deliveries`` per resource per
  ``BLOOIO_DELIVERIES_HEALTH_INTERVAL_SECONDS``, spread evenly over the interval by
  ``handlers.sweep.periodic_sweep``. A check writes status only when the summary or
  the condition changed.

Every status write takes the object's lock (``memo["guards"]``, shared with the webhook
handlers), on a resource read again under it, and records the write
(``guards.wrote``). Events go through ``KubeEvents``: these tasks are not kopf's.

Failures are logged through one ``FailureLog``: under a long Blooio outage, one line per
API key and failure class per health interval (counting the rest, which go to DEBUG),
not one per resource per try.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from blooio_operator.blooio import ApiStatusError, BlooioError
from blooio_operator.handlers.events import KubeEvents
from blooio_operator.handlers.registry import Registry
from blooio_operator.handlers.sweep import periodic_sweep
from blooio_operator.handlers.webhooks import ObjectGuards
from blooio_operator.logs import quiet_success
from blooio_operator.models import reasons
from blooio_operator.models.resource import GROUP, PLURAL, VERSION, WebhookStatus
from blooio_operator.reconcile import replay, replay_plan
from blooio_operator.reconcile.context import Deps, WebhookContext, now_iso, parse_iso
from blooio_operator.reconcile.deliveries import apply_health, list_deliveries, verdict
from blooio_operator.reconcile.errors import CredentialsFailure, ReconcileError
from blooio_operator.settings import Settings

log = logging.getLogger("blooio_operator.handlers")
RESOURCE = (GROUP, VERSION, PLURAL)
REPLAY_CONCURRENCY = 8
FAILURE_RETRY_BASE_SECONDS = 10.0
FAILURE_RETRY_CAP_SECONDS = 300.0
FAILURE_LOG_INTERVAL_SECONDS = 600.0  # when the health sweep is off


def failure_class(exc: BaseException) -> str:
    """What a failure is, coarsely: the same class from many resources is one story."""
    name = type(exc).__name__
    if isinstance(exc, ApiStatusError):
        return f"{name} {exc.status}"
    if isinstance(exc, ReconcileError):
        return f"{name} {exc.reason}"
    return name


class FailureLog:
    """At most one line per (scope, failure class) per ``interval``; the rest at DEBUG.

    ``scope`` is an API key's fingerprint (or another shared cause, or "operator"), so a
    Blooio outage seen by 10,000 resources is one line per key per interval, and the
    next line says how many were held back. A new class, or a new scope, is shown at
    once: failures that matter stay visible.
    """

    _MAX_ENTRIES = 4096  # scopes x classes; forgotten oldest first beyond this

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._shown: dict[tuple[str, str], tuple[float, int]] = {}  # -> (shown at, held)

    def failed(
        self,
        scope: str,
        exc: BaseException,
        msg: str,
        *args: object,
        level: int = logging.WARNING,
    ) -> None:
        key = (scope, failure_class(exc))
        now = self.clock()
        entry = self._shown.get(key)
        if entry is not None and now - entry[0] < self.interval:
            self._shown[key] = (entry[0], entry[1] + 1)
            self.logger.debug(msg, *args)
            return
        held = entry[1] if entry is not None else 0
        self._shown.pop(key, None)
        self._shown[key] = (now, 0)
        if len(self._shown) > self._MAX_ENTRIES:
            del self._shown[next(iter(self._shown))]
        if held:
            msg += " (%d more like it in the last %.0fs, at DEBUG)"
            args = (*args, held, self.interval)
        self.logger.log(level, msg, *args)


class DueTimers:
    """One timer per resource with replay work due; the step runs when it fires.

    A step returns when the next one is due. While a step runs, new due times are held
    and the earliest is applied when it ends, so one resource never runs two steps at
    once. A step that raises is retried with capped exponential backoff, which no new
    due time (a watch event) shortens; ``deadline(uid)`` (the episode's give-up) bounds
    a retry, so a failing episode still ends on time.
    """

    def __init__(
        self,
        step: Callable[[str], Awaitable[float | None]],
        *,
        concurrency: int = REPLAY_CONCURRENCY,
        failure_delay: Callable[[Exception, int], float] | None = None,
        deadline: Callable[[str], float | None] | None = None,
        failures: FailureLog | None = None,
    ) -> None:
        self._step = step
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._running: dict[str, float | None] = {}
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}  # uid -> the backoff of a failing step
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(concurrency)
        self._failure_delay = failure_delay or _default_failure_delay
        self._deadline = deadline
        self._log = failures or FailureLog(log, interval=FAILURE_LOG_INTERVAL_SECONDS)
        self._closed = False

    def due(self, uid: str) -> float | None:
        entry = self._timers.get(uid)
        return entry[0] if entry is not None else None

    def set(self, uid: str, when: float | None) -> None:
        """Work for ``uid`` is due at ``when`` (epoch s), or there is none (``None``)."""
        if self._closed:
            return
        if uid in self._running:
            if when is not None:
                held = self._running[uid]
                self._running[uid] = when if held is None else min(held, when)
            return
        entry = self._timers.get(uid)
        if when is None:
            if entry is not None:
                entry[1].cancel()
                del self._timers[uid]
            return
        retry_at = self._retry_at.get(uid)
        if retry_at is not None:
            when = max(when, retry_at)  # a failing step's backoff holds
        if entry is not None:
            if abs(entry[0] - when) < 0.001:
                return
            entry[1].cancel()
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0.0, when - time.time()), self._fire, uid)
        self._timers[uid] = (when, handle)

    def forget(self, uid: str) -> None:
        self.set(uid, None)
        self._failures.pop(uid, None)
        self._retry_at.pop(uid, None)

    def _fire(self, uid: str) -> None:
        self._timers.pop(uid, None)
        task = asyncio.get_running_loop().create_task(self._run(uid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, uid: str) -> None:
        self._running[uid] = None
        due: float | None
        try:
            async with self._gate:
                due = await self._step(uid)
            self._failures.pop(uid, None)
            self._retry_at.pop(uid, None)
        except asyncio.CancelledError:
            self._running.pop(uid, None)
            raise
        except Exception as exc:
            count = self._failures.get(uid, 0) + 1
            self._failures[uid] = count
            now = time.time()
            due = now + self._failure_delay(exc, count)
            limit = self._deadline(uid) if self._deadline is not None else None
            if limit is not None and now < limit:
                due = min(due, limit)
            self._retry_at[uid] = due
            self._log.failed(
                "replay",
                exc,
                "replay step for %s failed (%s); retrying in %.0fs",
                uid,
                exc,
                due - now,
            )
        held = self._running.pop(uid, None)
        if held is not None:
            due = held if due is None else min(due, held)
        self.set(uid, due)

    async def close(self) -> None:
        self._closed = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _default_failure_delay(exc: Exception, count: int) -> float:
    if isinstance(exc, CredentialsFailure):
        return float(exc.delay)
    delay = getattr(exc, "retry_after", None) or 0.0
    backoff = min(FAILURE_RETRY_BASE_SECONDS * 2.0 ** (count - 1), FAILURE_RETRY_CAP_SECONDS)
    return max(float(delay), backoff)


def key_scope(ctx: WebhookContext) -> str:
    """The API key a failure concerns, for ``FailureLog`` (a fingerprint, never the key):
    once resolved, its id; before that, the Secret named, or the default key."""
    if ctx.key_id:
        return f"key {ctx.key_id}"
    ref = ctx.spec.credentials_ref
    return f"Secret {ctx.namespace}/{ref.name}" if ref is not None else "the default key"


async def check_health(
    deps: Deps,
    guards: ObjectGuards,
    body: dict[str, Any],
    *,
    failures: FailureLog | None = None,
) -> bool:
    """One health check of one resource; True when status was written."""
    settings = deps.settings
    ctx = WebhookContext.build(deps, body=body, events=KubeEvents(deps.kube, body))
    webhook_id = ctx.status.webhook_id
    if ctx.deleting or not webhook_id:
        return False
    try:
        client = await ctx.blooio()
        listing = await list_deliveries(
            client, webhook_id, max_pages=settings.deliveries_health_pages
        )
    except (BlooioError, ReconcileError) as exc:
        # Nothing known; the webhook handlers report Blooio and credential failures.
        # One line per key and failure class per interval (e.g. "for key 3f2a...: HTTP
        # 503"), naming the resource it was first seen on.
        scope = key_scope(ctx)
        (failures or FailureLog(log, interval=FAILURE_LOG_INTERVAL_SECONDS)).failed(
            scope,
            exc,
            "delivery health check of %s/%s failed (%s): %s",
            ctx.namespace,
            ctx.name,
            scope,
            exc,
        )
        return False
    last = listing.last_delivered()
    deps.metrics.observe_deliveries(
        ctx.uid,
        ctx.namespace,
        ctx.name,
        listing.counts(),
        (last.created_at or 0) / 1000 if last is not None else None,
        verdict(listing, max_pages=settings.deliveries_health_pages)[0],
    )
    now = now_iso()
    pages = settings.deliveries_health_pages
    probe = ctx.status.model_copy(deep=True)
    if not apply_health(probe, listing, generation=ctx.generation, now=now, max_pages=pages):
        return False  # the body is moments old (kept current by watch events)
    async with guards.locks[ctx.uid]:
        if not await ctx.reread() or ctx.status.webhook_id != webhook_id or ctx.deleting:
            return False
        if not apply_health(
            ctx.status, listing, generation=ctx.generation, now=now, max_pages=pages
        ):
            return False
        await ctx.save_status()
        guards.wrote(ctx.uid)
    return True


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register the delivery handlers (call next to ``handlers.webhooks.register``).

    Resource bodies for the health sweep come from the webhook handlers' registry
    (``memo["registry"]``, kept current from every watch event; no second copy). The event
    handler runs only for events that may concern replays (its ``when`` filter), and
    remembers per resource only its name and webhook id.
    """
    refs: dict[str, tuple[str, str, str, str, str]] = {}  # uid -> apiVersion, kind, ns, name, uid
    webhook_ids: dict[str, str | None] = {}  # uid -> webhook id in the last event seen
    previous: dict[str, str] = {}  # uid -> webhook id seen before the current one
    give_ups: dict[str, float] = {}  # uid -> its episode's give-up (bounds a retry)
    state: dict[str, Any] = {}
    interval = settings.deliveries_health_interval_seconds
    failures = FailureLog(log, interval=interval if interval > 0 else FAILURE_LOG_INTERVAL_SECONDS)

    def due_for(uid: str, body: kopf.Body) -> float | None:
        status = body.get("status") or {}
        if not status.get("webhookId") or body["metadata"].get("deletionTimestamp"):
            return None
        try:
            parsed = WebhookStatus.model_validate(status)
        except ValueError:
            return None
        annotations = dict(body["metadata"].get("annotations") or {})
        return replay_plan.due_at(
            parsed,
            annotations,
            settings,
            now=time.time(),
            previous_webhook_id=previous.get(uid),
            suspended=bool((body.get("spec") or {}).get("suspend")),
        )

    def may_concern_replays(type: str | None, body: kopf.Body, **_: Any) -> bool:
        uid = body["metadata"]["uid"]
        status = body.get("status") or {}
        deliveries = status.get("deliveries") or {}
        annotations = body["metadata"].get("annotations") or {}
        rotated = status.get("secretRotatedAt")
        if rotated and rotated != deliveries.get("secretChangeAt"):
            at = parse_iso(rotated) if isinstance(rotated, str) else None
            if at is None or at < time.time() - settings.replay_window_seconds:
                rotated = None  # too old to act on: not worth a call per event
        return bool(
            type == "DELETED"
            or uid not in refs
            or webhook_ids.get(uid) != status.get("webhookId")
            or deliveries.get("replay")
            or annotations.get(reasons.ANNOTATION_REPLAY_SINCE)
            or (rotated and rotated != deliveries.get("secretChangeAt"))
            or uid in previous
        )

    quiet_success("deliveries")  # runs on most watch events: its successes at DEBUG only

    @kopf.on.event(*RESOURCE, registry=registry, id="deliveries", when=may_concern_replays)
    async def deliveries_event(body: kopf.Body, type: str | None, memo: Any, **_: Any) -> None:
        meta = body["metadata"]
        uid = meta["uid"]
        timers: DueTimers | None = state.get("timers")
        if type == "DELETED":
            refs.pop(uid, None)
            webhook_ids.pop(uid, None)
            previous.pop(uid, None)
            give_ups.pop(uid, None)
            if timers is not None:
                timers.forget(uid)
            deps: Deps | None = memo.get("deps")
            if deps is not None:
                deps.metrics.forget(uid)
            return
        refs[uid] = (body["apiVersion"], body["kind"], meta["namespace"], meta["name"], uid)
        old_id = webhook_ids.get(uid)
        new_id = (body.get("status") or {}).get("webhookId")
        if old_id and new_id and old_id != new_id:
            previous[uid] = old_id
        webhook_ids[uid] = new_id
        if timers is not None:
            timers.set(uid, due_for(uid, body))

    @kopf.on.startup(registry=registry, id="start_deliveries")
    async def start_deliveries(memo: kopf.Memo, **kwargs: Any) -> None:
        deps: Deps | None = memo.get("deps")
        guards: ObjectGuards | None = memo.get("guards")
        if deps is None or guards is None:
            raise kopf.TemporaryError("waiting for the webhook handlers' startup", delay=1)
        known: Registry | None = memo.get("registry")

        async def step(uid: str) -> float | None:
            ref = refs.get(uid)
            if ref is None:
                return None
            _, _, namespace, name, _ = ref
            async with guards.locks[uid]:
                # Read under the lock: the body acted on is never older than the last write.
                body = await deps.kube.read_webhook_resource(namespace, name)
                if body is None or body["metadata"].get("uid") != uid:
                    return None
                ctx = WebhookContext.build(deps, body=body, events=KubeEvents(deps.kube, body))
                try:
                    due = await replay.step(ctx, previous_webhook_id=previous.get(uid))
                finally:
                    if ctx.writes:
                        guards.wrote(uid)
                    d = ctx.status.deliveries
                    episode = d.replay if d is not None else None
                    give_up = replay_plan.epoch(episode.give_up_at) if episode else None
                    if give_up is not None:
                        give_ups[uid] = give_up
                    else:
                        give_ups.pop(uid, None)
                if d is not None and d.webhook_id is not None:
                    previous.pop(uid, None)  # recorded in status now
            return due

        timers = DueTimers(step, deadline=give_ups.get, failures=failures)
        state["timers"] = timers
        tasks: list[asyncio.Task[None]] = []
        if interval > 0 and known is not None:
            body_of = known.body

            def current() -> list[str]:
                due = []
                for uid in known.uids():
                    body = known.body(uid)
                    if (
                        body is not None
                        and (body.get("status") or {}).get("webhookId")
                        and not body["metadata"].get("deletionTimestamp")
                    ):
                        due.append(uid)
                return due

            async def check(uid: str) -> None:
                body = body_of(uid)
                if body is None:
                    return
                try:
                    await check_health(deps, guards, body, failures=failures)
                except Exception as exc:  # the sweep outlives any one resource
                    failures.failed(
                        "operator", exc, "delivery health check of %s failed: %s", uid, exc
                    )

            tasks.append(
                asyncio.create_task(
                    periodic_sweep(current, check, interval=interval), name="delivery-health"
                )
            )
        elif interval > 0:
            log.warning("delivery health is off: the webhook handlers' registry is missing")
        state["tasks"] = tasks

    @kopf.on.cleanup(registry=registry, id="stop_deliveries")
    async def stop_deliveries(**_: Any) -> None:
        tasks: list[asyncio.Task[None]] = state.get("tasks", [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        timers: DueTimers | None = state.get("timers")
        if timers is not None:
            await timers.close()
