"""Byte-compile the modules ``blooio-operator run`` imports at start-up (image build step).

Run by the Dockerfile's builder stage with the venv's python. The image's root
filesystem is read-only, so Python can never cache bytecode at run time: a module
without a ``.pyc`` in the image is compiled again on every start. Compiling all of
the venv adds about 65 MB (the ``kubernetes`` package alone is 75 MB of source, most
of it never imported); compiling only what start-up imports adds about 10 MB and
gives nearly all of the start-up gain. The measurements are in docs/operations.md
("The image").

The ``.pyc`` files are written with ``unchecked-hash`` invalidation: the image never
changes, so Python need not compare them with the sources (no stat per module), and
they stay valid whatever timestamps the image builder gives the files.
"""

from __future__ import annotations

import importlib
import py_compile
import sys

# What cmd_run imports, plus the parts of aiohttp that kopf's liveness endpoint and
# the Blooio client load as they start.
STARTUP = (
    "blooio_operator.cli",
    "kopf",
    "blooio_operator.handlers.webhooks",
    "blooio_operator.logs",
    "blooio_operator.settings",
    "blooio_operator.metrics",
    "aiohttp.web",
)


def main() -> int:
    for name in STARTUP:
        importlib.import_module(name)
    from blooio_operator import cli

    cli.build_parser()  # imports the subcommands' modules, as every start does
    files = sorted(
        {
            path
            for module in list(sys.modules.values())
            if (path := getattr(module, "__file__", None))
            and path.startswith(sys.prefix + "/")
            and path.endswith(".py")
        }
    )
    for path in files:
        py_compile.compile(
            path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
        )
    print(f"compiled {len(files)} modules imported at start-up")
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
