"""Leader election on a Lease, the fence around kopf's own writes, and the process that
runs under them (the term itself is ``fence``, a leaf the clients import).

**The Lease.** Not ``kubernetes.leaderelection``: it measures the term on the wall clock,
renews from a thread with blocking sleeps and no request timeout, and when a renewal
fails it only calls a callback while the work it protected keeps running: nothing stops
a deposed leader from writing. Here the term is a ``Fence`` that every send checks, and
the process ends the instant the term does. The rules (timings from ``ElectionConfig``):

- A standby reads the Lease every ``retry_period``. It takes it over when the holder is
  empty (released), or when the record has not changed for the record's
  ``leaseDurationSeconds`` *as measured on the standby's own clock since it saw the last
  change* (no clock is ever compared across machines). The takeover is a replace with the
  resourceVersion read: of two standbys, one wins, the other gets 409.
- The leader renews every ``retry_period`` with a replace of the version it last wrote.
  A renewal sent at ``t`` that succeeds extends the term to ``t + renew_deadline``.
  Anyone else can take over no earlier than ``lease_duration`` after observing that
  renewal, which was committed after ``t``: the margin ``lease_duration -
  renew_deadline`` separates the two terms.
- At the end of the term (no successful renewal for ``renew_deadline``) ``on_lost`` runs
  from a loop timer, and any send that comes first finds the fence expired.
- ``release()`` (a clean stop) empties the holder so a standby takes over at its next
  try instead of waiting out the lease.

**kopf's own writes.** kopf patches the resources itself (finalizers, its progress and
diff base in status, the handler's final status patch) and posts the Events of its
poster, all through one function, ``kopf._cogs.clients.api.request`` (kopf 1.45;
``get``/``patch``/``post``/``delete`` and the watch streams call it by its module-global
name). kopf offers no hook for its HTTP session short of replacing the login handler, so
that one function is wrapped: a write (any method but GET/HEAD) checks the fence of the
running operator first. ``install_kopf_fence()`` is idempotent and a unit test pins the
structure of the pinned kopf, so an upgrade that moves the function fails a test instead
of silently unfencing kopf.

**The process.** ``run_elected`` starts the probe endpoints, waits as a standby until the
Lease is ours, then makes the term ambient (``fence.CURRENT``), puts kopf's own writes
behind it and only then starts kopf: no handler, sweep or write runs before this process
leads. While kopf runs, the elector renews; when the term ends (a renewal that did not
come in time, someone else holding the Lease, a send that found the fence expired) the
process logs one line and leaves at once with ``EXIT_TERM_OVER``, without cleanup:
anything cleanup would send is exactly what must not be sent, and the crash-safety
intents make a stop at any instant safe. A clean stop (SIGTERM) lets kopf finish, then
releases the Lease so a standby takes over at once, and exits 0.

Probes (``--health-port``): ``/healthz`` and ``/readyz`` answer 200 in both roles (a
standby is healthy and ready to take over; failing its readiness would only block
rollouts), with the role in the body; ``/leader`` answers 200 only while leading. The
metric ``blooio_operator_leader`` says the same to Prometheus; a standby exports only it.

``register`` adds the startup handlers of an instance: its shard's label selector and
the leader gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import kopf
from aiohttp import web
from kopf._cogs.clients import api as kopf_api
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from blooio_operator import fence as fencing
from blooio_operator import metrics_server
from blooio_operator.fence import Fence, clock
from blooio_operator.kube.client import (
    KubeClient,
    KubeConflict,
    KubeError,
    LeaseRecord,
    load_api_client,
)
from blooio_operator.metrics import Metrics
from blooio_operator.metrics_auth import MetricsAuth
from blooio_operator.models.resource import GROUP, PLURAL
from blooio_operator.settings import Settings

__all__ = [
    "EXIT_TERM_OVER",
    "ElectionConfig",
    "LeaseElector",
    "LeaseStore",
    "election_config",
    "holder_identity",
    "install_kopf_fence",
    "kopf_fence_installed",
    "register",
    "run_elected",
    "serve_metrics",
]

log = logging.getLogger("blooio_operator.leader")


# --- the Lease --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float
    renew_deadline: float
    retry_period: float

    @property
    def request_timeout(self) -> float:
        """One Lease request may take at most this long (a hung one must not eat the term)."""
        return max(1.0, min(self.renew_deadline / 2, 5.0))


class LeaseStore(Protocol):
    """The Lease calls of ``kube.KubeClient`` (a fake in unit tests)."""

    async def read_lease(
        self, namespace: str, name: str, *, request_timeout: float | None = None
    ) -> LeaseRecord | None: ...

    async def write_lease(
        self,
        namespace: str,
        name: str,
        *,
        holder: str | None,
        lease_duration_seconds: int,
        acquire_time: datetime | None,
        renew_time: datetime | None,
        transitions: int,
        resource_version: str | None,
        request_timeout: float | None = None,
    ) -> LeaseRecord: ...


class LeaseElector:
    """Acquire, renew and release one Lease; ``fence`` is the term it proves."""

    def __init__(
        self,
        leases: LeaseStore,
        config: ElectionConfig,
        *,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = clock,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._leases = leases
        self.config = config
        self._on_lost = on_lost
        self._clock = clock
        self._now = now
        self.fence = Fence(config.renew_deadline, on_expired=self._expired, clock=clock)
        self.leading = False
        self.holder: str | None = None  # the holder as last seen
        self._record: LeaseRecord | None = None  # the Lease as we last read or wrote it
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False

    # -- standby --------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this process holds the Lease (and its term has started)."""
        while True:
            if await self.try_acquire():
                return
            await asyncio.sleep(self.config.retry_period)

    async def try_acquire(self) -> bool:
        cfg = self.config
        try:
            record = await self._leases.read_lease(
                cfg.namespace, cfg.name, request_timeout=cfg.request_timeout
            )
        except KubeError as exc:
            log.warning("cannot read Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        if record is not None:
            self._observe(record)
            if record.holder and record.holder != cfg.identity:
                duration = record.lease_duration_seconds or cfg.lease_duration
                if self._clock() < self._observed_at + duration:
                    return False
                log.info(
                    "Lease %s/%s: %s has not renewed for %.0f s; taking over",
                    cfg.namespace,
                    cfg.name,
                    record.holder,
                    duration,
                )
        return await self._write(record, taking_over=True)

    def _observe(self, record: LeaseRecord) -> None:
        if record.resource_version != self._observed_version:
            self._observed_version = record.resource_version
            self._observed_at = self._clock()
        self._record = record
        if record.holder != self.holder:
            self.holder = record.holder
            if record.holder and record.holder != self.config.identity:
                log.info(
                    "Lease %s/%s is held by %s",
                    self.config.namespace,
                    self.config.name,
                    record.holder,
                )

    # -- leader ---------------------------------------------------------------------

    async def hold(self) -> None:
        """Renew every retry period, for as long as the term lasts (cancel to stop)."""
        while not self._lost:
            await asyncio.sleep(self.config.retry_period)
            await self.renew()

    async def renew(self) -> bool:
        """One renewal; True when it extended the term."""
        record = self._record
        if await self._write(record, taking_over=False):
            return True
        # Our version is stale (409) or the call failed: read what is there now.
        cfg = self.config
        try:
            current = await self._leases.read_lease(
                cfg.namespace, cfg.name, request_timeout=cfg.request_timeout
            )
        except KubeError as exc:
            log.warning("cannot read Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        if current is None or current.holder != cfg.identity:
            self._lose(f"the Lease is now held by {current.holder if current else 'nobody'}")
            return False
        self._observe(current)
        return await self._write(current, taking_over=False)

    async def release(self) -> None:
        """Give the Lease up (a clean stop), only while the term still runs."""
        self._cancel_timer()
        record = self._record
        if not self.leading or record is None or self.fence.expired():
            self.fence.end()
            return
        self.fence.end()  # nothing may be sent from now on; the release is the last write
        self.leading = False
        cfg = self.config
        now = self._now()
        try:
            await self._leases.write_lease(
                cfg.namespace,
                cfg.name,
                holder=None,
                lease_duration_seconds=1,
                acquire_time=now,
                renew_time=now,
                transitions=record.transitions,
                resource_version=record.resource_version,
                request_timeout=cfg.request_timeout,
            )
        except KubeError as exc:
            log.warning("could not release Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return
        log.info("released Lease %s/%s", cfg.namespace, cfg.name)

    # -- both -----------------------------------------------------------------------

    async def _write(self, record: LeaseRecord | None, *, taking_over: bool) -> bool:
        cfg = self.config
        if self._lost:
            return False
        if self.leading and self.fence.expired():
            # Too late to renew: the others may already count the Lease as free.
            self._lose(f"no renewal for {cfg.renew_deadline:g} s (the renew deadline)")
            return False
        now = self._now()
        ours = record is not None and record.holder == cfg.identity
        if not taking_over and not ours:
            return False
        if record is None:
            acquire_time, transitions = now, 0
        elif ours:
            acquire_time, transitions = record.acquire_time or now, record.transitions
        else:
            acquire_time = now
            transitions = record.transitions + (1 if record.holder else 0)
        sent_at = self._clock()
        try:
            written = await self._leases.write_lease(
                cfg.namespace,
                cfg.name,
                holder=cfg.identity,
                lease_duration_seconds=math.ceil(cfg.lease_duration),
                acquire_time=acquire_time,
                renew_time=now,
                transitions=transitions,
                resource_version=record.resource_version if record else None,
                request_timeout=cfg.request_timeout,
            )
        except KubeConflict:
            return False
        except KubeError as exc:
            log.warning("cannot write Lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            return False
        if self._lost:
            return False
        self._record = written
        self._observed_version = written.resource_version
        self._observed_at = sent_at
        self.holder = cfg.identity
        self.fence.extend(sent_at)
        if not self.leading:
            self.leading = True
            log.info("leading: acquired Lease %s/%s as %s", cfg.namespace, cfg.name, cfg.identity)
        self._arm_timer()
        return True

    def _arm_timer(self) -> None:
        # The end of the term as a loop timer: after a pause (SIGSTOP, a frozen VM) every
        # timer that came due runs in the same loop iteration, before any task they wake.
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, self.fence.remaining()), self._deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> None:
        self._timer = None
        if self._lost or self.fence.ended:
            return
        if not self.fence.expired():  # renewed meanwhile, or the loop's clock runs ahead
            self._arm_timer()
            return
        self._lose(f"no renewal for {self.config.renew_deadline:g} s (the renew deadline)")

    def _expired(self, action: str) -> None:
        if self.fence.ended:
            return  # a clean stop: the caller gets TermOver, the process is leaving anyway
        self._lose(f"the term ran out before: {action}")

    def _lose(self, reason: str) -> None:
        # May run in a kube thread (a fenced write found the term over): touch only
        # plain attributes here; the loop timer sees _lost and does nothing.
        if self._lost:
            return
        self._lost = True
        self.leading = False
        self.fence.end()
        self._on_lost(reason)


# --- kopf's own writes behind the fence ----------------------------------------------------

_READS = frozenset({"GET", "HEAD"})
_MARK = "__blooio_fenced__"


def kopf_fence_installed() -> bool:
    return bool(getattr(kopf_api.request, _MARK, False))


def install_kopf_fence() -> None:
    """Wrap kopf's request function once (no effect on a process without a fence)."""
    if kopf_fence_installed():
        return
    original: Callable[..., Awaitable[Any]] = kopf_api.request

    @functools.wraps(original)
    async def fenced_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() not in _READS:
            fence = fencing.current()
            if fence is not None:
                fence.check(f"kopf {method.upper()} {url}")
        return await original(method, url, *args, **kwargs)

    setattr(fenced_request, _MARK, True)
    kopf_api.request = fenced_request


# --- the process ------------------------------------------------------------------------------

EXIT_TERM_OVER = 3
"""Exit status of a process whose leadership term ended (the Deployment restarts it)."""

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def holder_identity() -> str:
    """The pod name (or host name) plus a suffix unique to this process: a restarted
    container is a new candidate, never mistaken for the holder it replaced."""
    base = os.environ.get("POD_NAME") or socket.gethostname() or "blooio-operator"
    return f"{base}_{uuid.uuid4().hex[:12]}"


def lease_namespace(configured: str | None) -> str:
    if configured:
        return configured
    pod_namespace = os.environ.get("POD_NAMESPACE")
    if pod_namespace:
        return pod_namespace
    with contextlib.suppress(OSError):
        in_cluster = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        if in_cluster:
            return in_cluster
    raise ValueError(
        "leader election needs the Lease's namespace: set BLOOIO_LEADER_ELECTION_NAMESPACE "
        "or POD_NAMESPACE (the shipped Deployment sets it through the downward API)"
    )


def election_config(settings: Settings) -> ElectionConfig:
    return ElectionConfig(
        namespace=lease_namespace(settings.leader_election_namespace),
        name=settings.leader_election_lease_name,
        identity=holder_identity(),
        lease_duration=settings.lease_duration_seconds,
        renew_deadline=settings.lease_renew_deadline_seconds,
        retry_period=settings.lease_retry_period_seconds,
    )


def register(registry: kopf.OperatorRegistry) -> None:
    """The shard's label selector, and the leader gauge once the metrics exist.

    Registered after the other handlers, so these run after ``configure`` (kopf runs
    startup handlers in registration order), and before any watch starts.

    Sharding (``--selector``): kopf's watch of BlooioWebhooks carries the selector, so the
    API server sends this instance only the resources it matches. A resource relabelled
    out of the selector arrives as a DELETED event, which kopf takes as "gone" (no
    handler, no patch): its finalizer, status, webhook and Secret stay as they are, and
    the shard it now matches receives it as a resource to resume, with the same
    finalizer. What spans all shards stays unfiltered: the claims seeded at start-up
    (no shard adopts a webhook another shard's resource holds) and the lists that decide
    whether a credentials Secret is still in use.
    """

    @kopf.on.startup(registry=registry, id="shard")
    async def shard(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        app: Settings = memo["settings"]
        if app.selector:
            settings.watching.label_selectors[GROUP, PLURAL] = app.selector
            log.info("serving only BlooioWebhooks matching %r", app.selector)

    @kopf.on.startup(registry=registry, id="leading", backoff=1.0)
    async def leading(memo: kopf.Memo, **_: Any) -> None:
        deps = memo.get("deps")
        if deps is None:
            raise kopf.TemporaryError("the operator is not configured yet", delay=1.0)
        deps.metrics.leader.set(1)


def _die(reason: str) -> None:
    log.critical("leadership term over (%s): exiting now, sending nothing more", reason)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_TERM_OVER)


class _RoleMetrics(Collector):
    """The leader's full metrics, or a standby's single gauge."""

    def __init__(self, active: Callable[[], Metrics | None]) -> None:
        self._active = active
        self._standby = Metrics()

    def collect(self) -> Iterator[Metric]:
        metrics = self._active()
        if metrics is None:
            yield from self._standby.leader.collect()
        else:
            yield from metrics.registry.collect()


def serve_metrics(
    port: int, active: Callable[[], Metrics | None], auth: MetricsAuth | None = None
) -> None:
    registry = CollectorRegistry()
    registry.register(_RoleMetrics(active))
    metrics_server.serve(port, registry, auth)


async def _serve_probes(port: int, elector: LeaseElector) -> web.AppRunner:
    def body() -> dict[str, Any]:
        return {
            "status": "ok",
            "role": "leader" if elector.leading else "standby",
            "identity": elector.config.identity,
            "holder": elector.holder,
        }

    async def ok(_: web.Request) -> web.Response:
        return web.json_response(body())

    async def leader(_: web.Request) -> web.Response:
        return web.json_response(body(), status=200 if elector.leading else 503)

    app = web.Application()
    app.add_routes([web.get("/healthz", ok), web.get("/readyz", ok), web.get("/leader", leader)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - a Pod port
    return runner


async def run_elected(
    config: ElectionConfig,
    operator: Callable[[], Awaitable[None]],
    *,
    health_port: int | None = None,
    on_lost: Callable[[str], None] = _die,
) -> int:
    """Wait for the Lease, run ``operator`` (kopf) while it is ours; the exit status."""
    loop = asyncio.get_running_loop()
    kube = KubeClient(load_api_client(), max_workers=2)  # the Lease only, never fenced
    elector = LeaseElector(kube, config, on_lost=on_lost)
    probes = await _serve_probes(health_port, elector) if health_port is not None else None
    log.info(
        "standby: waiting for Lease %s/%s as %s", config.namespace, config.name, config.identity
    )
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)  # kopf installs its own once it runs
    acquiring = asyncio.create_task(elector.acquire(), name="acquire the Lease")
    stop_wait = asyncio.create_task(stopping.wait(), name="standby stop")
    try:
        await asyncio.wait({acquiring, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            await asyncio.gather(acquiring, return_exceptions=True)
            log.info("stopped as a standby")
            return 0
        if acquiring.exception() is not None:
            log.error("leader election failed", exc_info=acquiring.exception())
            return 1
        # From here every task kopf spawns inherits the term, and every client built in
        # them checks it before sending. Our signal handlers stay until kopf replaces
        # them with its own, so a SIGTERM in between still ends in a release.
        fencing.CURRENT.set(elector.fence)
        install_kopf_fence()
        holding = asyncio.create_task(elector.hold(), name="renew the Lease")
        status = 0
        try:
            if not stopping.is_set():
                await operator()
            log.info("the operator stopped; releasing the Lease")
        except Exception:
            log.exception("the operator failed; releasing the Lease")
            status = 1
        finally:
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            await elector.release()
        return status
    finally:
        stop_wait.cancel()
        if probes is not None:
            await probes.cleanup()
        kube.close()
