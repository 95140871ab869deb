"""Command line of the Blooio simulator (``blooio-operator simulate``, ``python -m``).

Owns argument parsing and the process lifecycle: start the server, write the ready file
atomically once listening, run until SIGTERM/SIGINT, stop cleanly, remove the ready
file. Logs show key fingerprints only, never API keys or signing secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from .server import Simulator
from .state import api_key_fingerprint
from .validation import CHANNEL_TYPES

log = logging.getLogger("blooio_operator.simulator")

API_KEY_ENV = "BLOOIO_API_KEY"


def _channel(value: str) -> tuple[str, str]:
    channel_id, sep, channel_type = value.partition("=")
    if not sep or not channel_id or channel_type not in CHANNEL_TYPES:
        raise argparse.ArgumentTypeError(
            f"expected CHANNEL_ID=TYPE with TYPE one of {', '.join(CHANNEL_TYPES)}"
        )
    return channel_id, channel_type


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind; 0 picks a free port (default: 0)"
    )
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        default=[],
        metavar="KEY",
        help=f"accepted API key, each its own organisation (repeatable; also ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--forbidden-key",
        dest="forbidden_keys",
        action="append",
        default=[],
        metavar="KEY",
        help="API key that authenticates but gets 403 (repeatable)",
    )
    parser.add_argument(
        "--channel",
        dest="channels",
        action="append",
        type=_channel,
        default=[],
        metavar="ID=TYPE",
        help="known channel (repeatable; replaces the defaults ch_a1b2c3d4=blooio, "
        "ch_e5f6a7b8=whatsapp)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="baseline latency per API request"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="random extra latency, uniform 0..N ms"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for faults and ids")
    parser.add_argument(
        "--delivery-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for a receiver when delivering events (default: %(default)s)",
    )
    parser.add_argument(
        "--replay-delay",
        type=float,
        default=0.0,
        help="seconds a queued replay waits before it is sent (its outcome arrives that much "
        "later; default: %(default)s)",
    )
    parser.add_argument(
        "--insecure-deliveries",
        action="store_true",
        help="do not verify TLS certificates of receivers",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="PATH",
        help='write {"url", "admin", "pid"} as JSON here once listening',
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def write_ready_file(path: Path, payload: dict[str, object]) -> None:
    """Write JSON atomically: a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def serve(args: argparse.Namespace) -> int:
    """Run the simulator until SIGTERM/SIGINT."""
    keys = list(
        dict.fromkeys(
            [*args.api_keys, *([os.environ[API_KEY_ENV]] if os.environ.get(API_KEY_ENV) else [])]
        )
    )
    if not keys:
        log.error("no API key: pass --api-key KEY or set %s", API_KEY_ENV)
        return 2
    channels = dict(args.channels) if args.channels else None
    sim = Simulator(
        keys,
        channels,
        forbidden_keys=args.forbidden_keys,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        seed=args.seed,
        delivery_timeout=args.delivery_timeout,
        verify_tls=not args.insecure_deliveries,
        replay_delay=args.replay_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    url = await sim.start(args.host, args.port)
    log.info(
        "API keys: %s; channels: %s",
        ", ".join(api_key_fingerprint(k) for k in keys),
        ", ".join(f"{cid}={ctype}" for cid, ctype in sim.channels.items()),
    )
    ready_file: Path | None = args.ready_file
    try:
        if ready_file is not None:
            write_ready_file(ready_file, {"url": url, "admin": sim.admin_url, "pid": os.getpid()})
        await stop.wait()
        log.info("shutting down")
    finally:
        await sim.stop()
        if ready_file is not None:
            _remove_quietly(ready_file)
    return 0


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def run(args: argparse.Namespace) -> int:
    """Entry point for ``blooio-operator simulate``; returns the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=getattr(logging, args.log_level),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    else:
        log.setLevel(getattr(logging, args.log_level))
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """``python -m blooio_operator.simulator``."""
    parser = argparse.ArgumentParser(
        prog="python -m blooio_operator.simulator",
        description="Run the Blooio V4 webhooks API simulator.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
