"""The ``blooio-operator`` command: ``run``, ``simulate``, ``dev``, ``controlplane``."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
from collections.abc import Sequence

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
    p.add_argument("--health-port", type=int, default=None, help="serve /healthz on this port")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics")
    p.add_argument(
        "--peering",
        default=None,
        help="kopf peering object name (off by default: run one replica, see docs/operations.md)",
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

    from blooio_operator.handlers import credentials as credentials_handlers
    from blooio_operator.handlers import deliveries as delivery_handlers
    from blooio_operator.handlers.webhooks import register
    from blooio_operator.logs import configure_logging
    from blooio_operator.settings import Settings

    settings = Settings()
    if args.metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    secrets = [settings.api_key.get_secret_value()] if settings.api_key else []
    configure_logging(settings.log_format, settings.log_level, secrets)
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    delivery_handlers.register(registry, settings)
    credentials_handlers.register(registry)
    liveness = (
        f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port is not None else None
    )
    namespaces = list(args.namespace)
    logging.getLogger("blooio_operator").info(
        "starting: %s, Blooio at %s",
        f"namespaces {namespaces}" if namespaces else "all namespaces",
        settings.api_url,
    )
    kopf.run(
        registry=registry,
        identity=_identity(),  # type: ignore[arg-type]  # kopf.Identity is a NewType of str, not exported
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=args.peering is None,
        peering_name=args.peering,
        liveness_endpoint=liveness,
        memo=kopf.Memo(settings=settings, namespaces=namespaces),
    )
    return 0


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
