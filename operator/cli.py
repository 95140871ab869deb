"""The ``blooio-operator`` command: ``run``, ``simulate``, ``dev``, ``controlplane``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from blooio_operator import __version__


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the operator against the current kubeconfig or in-cluster config",
        description="Run the operator. Settings come from BLOOIO_* environment variables "
        "(see docs/configuration.md).",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; globs allowed)",
    )
    p.add_argument(
        "--selector",
        "-l",
        default=None,
        help="serve only the BlooioWebhooks this label selector matches, e.g. "
        "blooio.com/shard=a (default: $BLOOIO_SELECTOR, all)",
    )
    p.add_argument("--health-port", type=int, default=None, help="serve /healthz on this port")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics")
    p.add_argument(
        "--peering",
        default=None,
        help="kopf peering object name (off by default; see docs/operations.md)",
    )
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="handle resources only while holding the Lease, as a standby otherwise "
        "(default: $BLOOIO_LEADER_ELECT, off)",
    )
    p.add_argument(
        "--lease-name",
        default=None,
        help="the Lease's name (default: $BLOOIO_LEADER_ELECTION_LEASE_NAME, blooio-operator)",
    )
    p.add_argument(
        "--lease-namespace",
        default=None,
        help="the Lease's namespace (default: $BLOOIO_LEADER_ELECTION_NAMESPACE, else "
        "$POD_NAMESPACE)",
    )


def _simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from blooio_operator.simulator import cli as sim_cli

    p = sub.add_parser("simulate", help="run the Blooio V4 webhooks simulator")
    sim_cli.add_arguments(p)


def _dev_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dev",
        help="local control plane + simulator + operator + examples",
        description="Start everything locally and keep it running until Ctrl-C. Writes "
        "`kubeconfig` and a shell-sourceable `env` into --state-dir.",
    )
    p.add_argument("--state-dir", default=".dev", help="where kubeconfig and env go (.dev/)")
    p.add_argument("--examples", default="examples", help="directory of example manifests")
    p.add_argument("--api-key", default="bl_test_dev_key", help="simulator/operator API key")
    p.add_argument("--no-operator", action="store_true", help="start everything but the operator")
    p.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop after the examples are Ready (smoke test)",
    )


def _controlplane_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("controlplane", help="build (if needed) and start the local control plane")
    p.add_argument("--state-dir", default=".dev/controlplane")
    p.add_argument("--build-only", action="store_true", help="only build the binary and print it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blooio-operator",
        description="Kubernetes operator for Blooio webhook subscriptions (BlooioWebhook).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _simulate_parser(sub)
    _dev_parser(sub)
    _controlplane_parser(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    import kopf

    from blooio_operator import leader
    from blooio_operator.handlers import credentials as credentials_handlers
    from blooio_operator.handlers import deliveries as delivery_handlers
    from blooio_operator.handlers.webhooks import register
    from blooio_operator.logs import configure_logging
    from blooio_operator.settings import Settings

    settings = Settings()
    overrides: dict[str, object] = {}
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.leader_elect is not None:
        overrides["leader_elect"] = args.leader_elect
    if args.lease_name is not None:
        overrides["leader_election_lease_name"] = args.lease_name
    if args.lease_namespace is not None:
        overrides["leader_election_namespace"] = args.lease_namespace
    if args.selector is not None:
        overrides["selector"] = args.selector or None
    if overrides:
        settings = settings.model_copy(update=overrides)
    secrets = [settings.api_key.get_secret_value()] if settings.api_key else []
    configure_logging(settings.log_format, settings.log_level, secrets)
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    delivery_handlers.register(registry, settings)
    credentials_handlers.register(registry)
    leader.register(registry)  # last: the shard's selector, the leader gauge
    namespaces = list(args.namespace)
    logging.getLogger("blooio_operator").info(
        "starting: %s%s, Blooio at %s%s",
        f"namespaces {namespaces}" if namespaces else "all namespaces",
        f", resources matching {settings.selector!r}" if settings.selector else "",
        settings.api_url,
        ", with leader election" if settings.leader_elect else "",
    )
    operator: dict[str, Any] = {
        "registry": registry,
        "identity": _identity(),
        "clusterwide": not namespaces,
        "namespaces": namespaces,
        "standalone": args.peering is None,
        "peering_name": args.peering,
    }
    if not settings.leader_elect:
        liveness = (
            f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port is not None else None
        )
        memo = kopf.Memo(settings=settings, namespaces=namespaces)
        kopf.run(**operator, liveness_endpoint=liveness, memo=memo)
        return 0
    # Under leader election the probes and metrics answer in both roles, so this process
    # serves them itself (a standby has no kopf); the operator's settings serve none.
    memo = kopf.Memo(
        settings=settings.model_copy(update={"metrics_port": None}), namespaces=namespaces
    )
    if settings.metrics_port is not None:
        from blooio_operator.metrics_server import kube_auth

        leader.serve_metrics(
            settings.metrics_port,
            lambda: getattr(memo.get("deps"), "metrics", None),
            kube_auth(settings.metrics_auth),
        )
    try:
        config = leader.election_config(settings)
    except ValueError as exc:
        print(f"blooio-operator run: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(
        leader.run_elected(
            config, lambda: kopf.operator(**operator, memo=memo), health_port=args.health_port
        )
    )


def _identity() -> str:
    """Who this operator process is (kopf peering, and kopf's own bookkeeping).

    kopf's default asks ``getpass.getuser()``, which raises for a uid without a passwd
    entry, as the image's 65532 has none under containerd (podman adds one itself).
    """
    pod = os.environ.get("POD_ID") or os.environ.get("POD_NAME")
    if pod:
        return pod
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}/{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "simulate":
        from blooio_operator.simulator import cli as sim_cli

        return sim_cli.run(args)
    if args.command == "dev":
        from blooio_operator.devenv.dev import run_dev

        return run_dev(args)
    if args.command == "controlplane":
        from blooio_operator.devenv.dev import run_controlplane

        return run_controlplane(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
