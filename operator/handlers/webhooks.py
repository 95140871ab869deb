"""kopf registrations for BlooioWebhook: thin wrappers over ``reconcile.lifecycle``.

Each handler builds a ``WebhookContext`` from the body, calls the reconcile layer under
a per-object lock (handlers and the periodic check of one object never overlap), and turns a
failure into conditions + Events (done by the reconcile layer) and a kopf error with the
retry delay the reconcile layer decided.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, cast

import kopf

from blooio_operator import metrics_server
from blooio_operator.blooio import ClientPool, RetryPolicy
from blooio_operator.handlers import retry_logs
from blooio_operator.handlers.diffbase import StatusDiffBase, StatusProgress
from blooio_operator.handlers.events import KopfEvents, KubeEvents
from blooio_operator.handlers.registry import Registry
from blooio_operator.handlers.relist import RelistAudit
from blooio_operator.handlers.sweep import SweepChecks, SweepRetries, periodic_sweep
from blooio_operator.kube import KubeClient, KubeError, KubeForbidden
from blooio_operator.kube.client import COMPONENT, load_api_client
from blooio_operator.logs import quiet_success
from blooio_operator.metrics import Metrics
from blooio_operator.metrics_server import kube_auth
from blooio_operator.models import reasons
from blooio_operator.models.resource import GROUP, PLURAL, VERSION
from blooio_operator.reconcile import claims, deletion, episodes, lifecycle, periodic
from blooio_operator.reconcile.context import Deps, EventSink, WebhookContext
from blooio_operator.reconcile.crash import CrashPoints
from blooio_operator.reconcile.errors import (
    CredentialsFailure,
    PermanentFailure,
    ReconcileError,
)
from blooio_operator.reconcile.snapshots import SnapshotCache
from blooio_operator.settings import Settings

log = logging.getLogger("blooio_operator.handlers")
RESOURCE = (GROUP, VERSION, PLURAL)
# How long after our own status write a body from kopf may still predate it (the event
# was queued behind the write, or the watch has not delivered it yet).
STALE_BODY_SECONDS = 10.0


class ObjectGuards:
    """Per-object serialisation shared by every writer of a resource's status.

    ``locks[uid]``: handlers, the periodic check and any other status writer of one
    object never overlap. ``written_at[uid]``: monotonic time of our last status write; a
    body from kopf received shortly after it may predate it and is read again.
    """

    def __init__(self) -> None:
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.written_at: dict[str, float] = {}

    def wrote(self, uid: str) -> None:
        self.written_at[uid] = time.monotonic()


def to_kopf(err: Exception, *, deleting: bool = False) -> kopf.PermanentError | kopf.TemporaryError:
    if isinstance(err, PermanentFailure) and not deleting:
        return kopf.PermanentError(err.message)
    if isinstance(err, CredentialsFailure | PermanentFailure):
        delay = getattr(err, "delay", 300.0)
        return kopf.TemporaryError(err.message, delay=delay)
    if isinstance(err, ReconcileError):
        return kopf.TemporaryError(err.message, delay=getattr(err, "delay", 10.0))
    return kopf.TemporaryError(str(err), delay=10.0)


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register every handler on ``registry`` with intervals from ``settings``."""
    guards = ObjectGuards()
    locks, written_at = guards.locks, guards.written_at
    known = Registry()  # every resource's slim body and the webhook id it holds
    retries = SweepRetries()  # the periodic checks' own retries
    quiet = retry_logs.install()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
        if info is None:
            return kopf.login_with_kubeconfig(**kwargs)
        # As client-go and the kubernetes client do: the API server the kubelet names in
        # the environment, not kopf's fixed https://kubernetes.default.svc (which needs
        # cluster DNS and a routed Service).
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT")
        if host and port:
            host = f"[{host}]" if ":" in host else host
            info = dataclasses.replace(info, server=f"https://{host}:{port}")
        return info

    # backoff: an operator (re)started while the API server is briefly away retries in
    # seconds, not kopf's default minute (found by the storm).
    @kopf.on.startup(registry=registry, id="configure", backoff=2.0)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        app: Settings = memo["settings"]
        # Our own Events only: no log line ever becomes an Event (kopf's poster would post
        # it formatted, before our log redaction runs). kopf 1.45's default, pinned.
        settings.posting.loggers = False
        settings.posting.level = logging.CRITICAL
        settings.posting.reporting_component = COMPONENT  # as KubeEvents posts them
        settings.posting.reporting_instance = COMPONENT
        settings.persistence.finalizer = "blooio.com/finalizer"
        # kopf's per-handler progress read defensively: a junk record written into status
        # (a restore, a tenant) stopped kopf from handling the object for good.
        settings.persistence.progress_storage = StatusProgress(field="status.kopf")
        settings.persistence.diffbase_storage = StatusDiffBase()
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.reconnect_backoff = 1.0
        settings.networking.request_timeout = 30
        settings.queueing.idle_timeout = app.worker_idle_seconds
        # Safe only because no kopf index is registered (see handlers/registry.py): with
        # one, every worker waits for all objects to be indexed, a deadlock as soon as
        # there are more objects than workers (nolar/kopf#1243).
        settings.queueing.worker_limit = app.max_workers
        namespaces: list[str] = memo.get("namespaces") or []
        if namespaces and not any(c in ns for ns in namespaces for c in "*?[!"):
            # Exact namespaces: nothing to discover, and the namespaced RBAC variant
            # deliberately cannot list namespaces or watch CRDs.
            settings.scanning.disabled = True
        metrics = Metrics(
            readiness=app.metrics_resource_readiness, delivery_detail=app.metrics_delivery_detail
        )
        snapshots = SnapshotCache(
            app.drift_interval_seconds, failure_cap=app.transient_retry_cap_seconds
        )
        kube = KubeClient(load_api_client(), max_workers=app.kube_threads)
        clients = ClientPool(
            app.api_url,
            timeout=app.http_timeout_seconds,
            retry=RetryPolicy(),
            max_concurrency_per_key=app.max_concurrency_per_key,
            rate_per_key=app.rate_per_key,
            on_response=metrics.observe_request,
        )
        memo["guards"] = guards  # for other handler modules that write a resource's status
        memo["registry"] = known  # for other handler modules that need every resource
        memo["deps"] = Deps(
            settings=app,
            kube=kube,
            clients=clients,
            snapshots=snapshots,
            metrics=metrics,
            crash=CrashPoints(app.crash_point),
        )
        metrics.rejected_keys.set_function(lambda: len(snapshots.rejected))
        if app.metrics_port is not None:
            metrics_server.serve(app.metrics_port, metrics.registry, kube_auth(app.metrics_auth))

    @kopf.on.startup(registry=registry, id="seed_claims", backoff=2.0)
    async def seed_claims(memo: kopf.Memo, **_: Any) -> None:
        # Claims must be complete before any handler decides whether a webhook is someone
        # else's; the event handler below only catches up as kopf's workers get to objects.
        deps: Deps = memo["deps"]
        statuses: list[dict[str, Any]] = []
        try:
            deps.seal = await claims.load_seal(deps.settings, deps.kube)
            known.verify = deps.seal.verify
            await _held_webhook_ids(deps.kube, memo.get("namespaces") or [], statuses=statuses)
            held = await claims.seal_legacy(deps.kube, deps.seal, statuses)
        except KubeError as exc:
            raise kopf.TemporaryError(f"cannot list BlooioWebhooks yet: {exc}", delay=2) from None
        known.seed_claims(held)

        namespaces: list[str] = memo.get("namespaces") or []

        async def list_live() -> set[str]:
            return set(await _held_webhook_ids(deps.kube, namespaces, unclaimed=True))

        memo["relist"] = RelistAudit(known, list_live, lambda uid: forget(deps, uid))

    @kopf.on.cleanup(registry=registry, id="close")
    async def close(memo: kopf.Memo, **_: Any) -> None:
        sweep: asyncio.Task[None] | None = memo.get("periodic")
        if sweep is not None:
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)
        relist: RelistAudit | None = memo.get("relist")
        if relist is not None:
            await relist.close()
        deps: Deps | None = memo.get("deps")
        if deps is not None:
            await deps.clients.aclose()
            deps.kube.close()

    quiet_success("registry")  # runs on every watch event: its successes at DEBUG only

    @kopf.on.event(*RESOURCE, registry=registry, id="registry")
    async def observe(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
        # async: a sync handler would be sent to a thread pool on every event.
        if type == "DELETED":
            known.forget(body["metadata"]["uid"])
            if memo.get("deps") is not None:  # gone without our finalizer, or left the shard
                memo["deps"].metrics.forget(body["metadata"]["uid"])
            return
        relist: RelistAudit | None = memo.get("relist")
        if type is None and relist is not None:
            relist.listed()  # kopf is listing: after it, forget what it did not hold
        known.observe(body)

    def forget(deps: Deps, uid: str) -> None:
        """Drop what the handlers keep per object, once it is gone."""
        deps.metrics.forget(uid)  # every per-resource series
        locks.pop(uid, None)
        written_at.pop(uid, None)
        known.forget(uid)
        retries.discard(uid)
        deps.backoff.clear(uid)

    async def confirm_holders(deps: Deps, webhook_id: str, uid: str) -> None:
        """Before an adoption is refused for a claim: are its holders still there? (One
        may have vanished while the watch was away, before the re-list's audit.)"""
        for holder in known.holders(webhook_id) - {uid}:
            held = known.body(holder)
            if held is None:
                continue  # seeded at start-up, never seen: the audit's list decides
            meta = held["metadata"]
            fresh = await deps.kube.read_webhook_resource(meta["namespace"], meta["name"])
            if fresh is None or fresh.get("metadata", {}).get("uid") != holder:
                forget(deps, holder)

    async def run(
        body: kopf.Body,
        patch: kopf.Patch | None,
        memo: kopf.Memo,
        retry: int,
        trigger: str,
        step: Callable[[WebhookContext], Awaitable[None]],
        *,
        deleting: bool = False,
        skip_if: Callable[[WebhookContext], bool] | None = None,
        events: EventSink | None = None,
    ) -> None:
        deps: Deps = memo["deps"]
        uid = body["metadata"]["uid"]
        lock = locks[uid]
        waited = lock.locked()
        async with lock:
            recent = time.monotonic() - written_at.get(uid, float("-inf")) < STALE_BODY_SECONDS
            if retry > 0 or waited or recent:
                # Our own status writes since the event (a retry, or another handler or
                # the periodic check that held the lock) may not be in this body yet; acting on a
                # stale webhookId recreates a webhook that was already recreated.
                fresh = await deps.kube.read_webhook_resource(
                    body["metadata"]["namespace"], body["metadata"]["name"]
                )
                source: dict[str, Any] = fresh if fresh is not None else dict(body)
            else:
                source = dict(body)
            adopt_id = (source.get("metadata", {}).get("annotations") or {}).get(
                reasons.ANNOTATION_ADOPT
            )
            if adopt_id and adopt_id in known.claimed_by_others(uid):
                await confirm_holders(deps, str(adopt_id), uid)
            sink = _Counted(events or KopfEvents(body))
            ctx = WebhookContext.build(
                deps,
                body=source,
                events=sink,
                attempt=retry,
                claimed_ids=known.claimed_by_others(uid),
                reserve=lambda webhook_id: known.reserve(uid, webhook_id),
                status_sink=patch.status if patch is not None else None,
            )
            if skip_if is not None and skip_if(ctx):
                deps.metrics.reconciles.labels(trigger, "skipped").inc()
                _track(deps, uid, ctx)
                return
            failing = episodes.failing(ctx.status)  # the failure episode shown, if any
            where = (ctx.namespace, ctx.name)
            started = time.monotonic()
            try:
                await step(ctx)
            except Exception as exc:
                deps.metrics.reconcile_duration.labels(trigger).observe(time.monotonic() - started)
                if ctx.writes:
                    written_at[uid] = time.monotonic()
                err = await lifecycle.record_failure(ctx, exc, action=trigger)
                if failing is not None and episodes.failing(ctx.status) == failing:
                    quiet.ongoing.add(where)  # a retry of an episode already shown
                else:
                    quiet.ongoing.discard(where)
                deps.metrics.reconciles.labels(trigger, type(err).__name__).inc()
                _track(deps, uid, ctx)
                raise to_kopf(err, deleting=deleting) from None
            deps.metrics.reconcile_duration.labels(trigger).observe(time.monotonic() - started)
            if ctx.writes:
                written_at[uid] = time.monotonic()
            quiet.ongoing.discard(where)
            if ctx.status.is_true(reasons.READY):
                deps.backoff.clear(uid)
                if failing is not None and not sink.normal_posted:
                    sink.normal(
                        reasons.FAILURE_CLEARED,
                        f"Ready again: the {failing} failure has cleared.",
                    )
            deps.metrics.reconciles.labels(trigger, "success").inc()
            _track(deps, uid, ctx)

    def _skip_on_resume(ctx: WebhookContext) -> bool:
        return lifecycle.is_settled(ctx) or lifecycle.is_waiting_for_human(ctx)

    @kopf.on.resume(*RESOURCE, registry=registry, id="reconcile")
    async def resume_webhook(
        body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **kwargs: Any
    ) -> None:
        await run(
            body,
            patch,
            memo,
            retry,
            "resume",
            lifecycle.reconcile,
            skip_if=_skip_on_resume,
        )

    @kopf.on.create(*RESOURCE, registry=registry, id="reconcile")
    @kopf.on.update(*RESOURCE, registry=registry, id="reconcile")
    async def reconcile_webhook(
        body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, reason: str, **kwargs: Any
    ) -> None:
        await run(body, patch, memo, retry, str(reason), lifecycle.reconcile)

    @kopf.on.delete(*RESOURCE, registry=registry, id="finalize")
    async def delete_webhook(
        body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, **kwargs: Any
    ) -> None:
        await run(
            body,
            patch,
            memo,
            retry,
            "delete",
            deletion.finalize,
            deleting=True,
        )
        forget(memo["deps"], body["metadata"]["uid"])

    @kopf.on.startup(registry=registry, id="start_periodic_checks")
    async def start_periodic_checks(memo: kopf.Memo, **_: Any) -> None:
        memo["sweep_retries"] = retries

        async def run_check(body: dict[str, Any], retrying: bool) -> None:
            async def step(ctx: WebhookContext) -> None:
                await periodic.periodic_check(ctx, retrying=retrying)

            await run(
                kopf.Body(cast(kopf.RawBody, body)),
                None,  # the sweep's writes are its own: no kopf patch follows them
                memo,
                0,
                "periodic",
                step,
                events=KubeEvents(memo["deps"].kube, body),
            )

        checks = SweepChecks(
            known, retries, run_check, lambda uid: forget(memo["deps"], uid), lambda: memo["deps"]
        )
        memo["periodic"] = asyncio.create_task(
            periodic_sweep(
                checks.current,
                checks.regular,
                interval=settings.secret_check_interval_seconds,
                retries=retries,
            ),
            name="periodic-checks",
        )


class _Counted:
    """An EventSink that remembers whether a Normal Event was posted through it."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self.normal_posted = False

    def normal(self, reason: str, message: str) -> None:
        self.normal_posted = True
        self._sink.normal(reason, message)

    def warning(self, reason: str, message: str) -> None:
        self._sink.warning(reason, message)


def _track(deps: Deps, uid: str, ctx: WebhookContext) -> None:
    st = ctx.status
    for cond in (reasons.STALLED, reasons.READY, reasons.RECONCILING):
        if st.is_true(cond):
            deps.metrics.track(uid, ctx.namespace, ctx.name, cond)
            return
    deps.metrics.track(uid, ctx.namespace, ctx.name, "Unknown")


async def _held_webhook_ids(
    kube: KubeClient,
    namespaces: list[str],
    *,
    unclaimed: bool = False,
    statuses: list[dict[str, Any]] | None = None,
) -> dict[str, str]:
    """uid -> webhook id of every BlooioWebhook the operator may see, listed once.

    Cluster-wide when allowed (claims are about the whole cluster); the namespaced RBAC
    variant lists each of its namespaces instead.
    """
    try:
        return await kube.list_webhook_ids(unclaimed=unclaimed, statuses=statuses)
    except KubeForbidden:
        exact = [ns for ns in namespaces if not any(c in ns for c in "*?[!")]
        if not exact:
            log.warning("may not list BlooioWebhooks cluster-wide: claims start empty")
            return {}
    held: dict[str, str] = {}
    for ns in exact:
        held.update(await kube.list_webhook_ids(ns, unclaimed=unclaimed, statuses=statuses))
    return held
