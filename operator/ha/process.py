"""The operator process under leader election: standby, leader, and the end of a term.

``run_elected`` starts the probe and metrics endpoints, waits as a standby until the Lease
is ours, then makes the term ambient (``fence.CURRENT``), puts kopf's own writes behind
it (``kopf_fence``) and only then starts kopf: no handler, sweep or write runs before this
process leads. While kopf runs, the elector renews; when the term ends (a renewal that
did not come in time, someone else holding the Lease, a send that found the fence
expired) the process logs one line and leaves at once with ``EXIT_TERM_OVER``, without
cleanup: anything cleanup would send is exactly what must not be sent, and the
crash-safety intents make a stop at any instant safe. A clean stop (SIGTERM) lets kopf
finish, then releases the Lease so a standby takes over at once, and exits 0.

Probes (``--health-port``): ``/healthz`` and ``/readyz`` answer 200 in both roles (a
standby is healthy and ready to take over; failing its readiness would only block
rollouts), with the role in the body; ``/leader`` answers 200 only while leading. The
metric ``blooio_operator_leader`` says the same to Prometheus; a standby exports only it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from blooio_operator.ha import fence as fencing
from blooio_operator.ha import kopf_fence
from blooio_operator.ha.elector import ElectionConfig, LeaseElector
from blooio_operator.kube.client import KubeClient, load_api_client
from blooio_operator.metrics import Metrics
from blooio_operator.settings import Settings

__all__ = [
    "EXIT_TERM_OVER",
    "election_config",
    "holder_identity",
    "register",
    "run_elected",
]

log = logging.getLogger("blooio_operator.leader")

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
    """Mark the leader gauge once the operator's metrics exist (after ``configure``).

    Registered after the other handlers, so it runs after them (kopf runs startup
    handlers in registration order). Without leader election the only process leads.
    """

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


def serve_metrics(port: int, active: Callable[[], Metrics | None]) -> None:
    registry = CollectorRegistry()
    registry.register(_RoleMetrics(active))
    start_http_server(port, addr="0.0.0.0", registry=registry)  # noqa: S104 - a Pod port


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
        if not acquiring.done() or acquiring.cancelled() or acquiring.exception():
            acquiring.cancel()
            await asyncio.gather(acquiring, return_exceptions=True)
            log.info("stopped as a standby")
            return 0
        stop_wait.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        # From here every task kopf spawns inherits the term, and every client built in
        # them checks it before sending.
        fencing.CURRENT.set(elector.fence)
        kopf_fence.install()
        holding = asyncio.create_task(elector.hold(), name="renew the Lease")
        status = 0
        try:
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
