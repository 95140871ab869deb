"""Go tools the tests and release use (helm, promtool, prometheus, syft), from the module proxy.

Owns: the pinned version of each tool, building it once per version into the cache
(``~/.cache/blooio-operator/tools/<name>-<version>/<name>``; Go's own build cache makes a
rebuild after a cache wipe cheap), and locating a module's source (e.g. the
prometheus-operator CRDs) in the module cache. Nothing is downloaded but Go modules.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from blooio_operator.devenv.controlplane import cache_dir


class GoToolError(RuntimeError):
    """A tool could not be built or a module could not be fetched."""


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str  # the main package's import path
    version: str  # the module version, as the module proxy serves it


HELM = GoTool("helm", "helm.sh/helm/v4/cmd/helm", "v4.3.2")
PROMTOOL = GoTool("promtool", "github.com/prometheus/prometheus/cmd/promtool", "v0.316.0")
PROMETHEUS = GoTool("prometheus", "github.com/prometheus/prometheus/cmd/prometheus", "v0.316.0")
# The release's SPDX SBOM of the image (make release).
SYFT = GoTool("syft", "github.com/anchore/syft/cmd/syft", "v1.57.2")
TOOLS = {tool.name: tool for tool in (HELM, PROMTOOL, PROMETHEUS, SYFT)}


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoToolError("Go 1.26+ is required to build the test tools (go not on PATH)")
    return go


def _env() -> dict[str, str]:
    return {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}


def ensure_tool(tool: GoTool) -> Path:
    """The tool's binary, built with ``go install pkg@version`` the first time."""
    target = cache_dir() / "tools" / f"{tool.name}-{tool.version}"
    binary = target / tool.name
    if binary.is_file():
        return binary
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cmd = [_go(), "install", "-trimpath", "-ldflags", "-s -w", f"{tool.package}@{tool.version}"]
    res = subprocess.run(
        cmd,
        env={**_env(), "GOBIN": str(staging)},
        cwd=staging,
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise GoToolError(f"go install {tool.package}@{tool.version} failed:\n{res.stderr[-4000:]}")
    target.mkdir(parents=True, exist_ok=True)
    (staging / tool.name).rename(binary)
    shutil.rmtree(staging, ignore_errors=True)
    return binary


def module_source(module: str, version: str) -> Path:
    """The read-only source directory of ``module@version`` in Go's module cache."""
    res = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise GoToolError(f"go mod download {module}@{version} failed:\n{res.stderr[-4000:]}")
    info = json.loads(res.stdout)
    if info.get("Error") or not info.get("Dir"):
        raise GoToolError(f"go mod download {module}@{version}: {info.get('Error', 'no Dir')}")
    return Path(info["Dir"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the pinned Go tools; print their paths.")
    parser.add_argument("names", nargs="*", choices=sorted(TOOLS), default=sorted(TOOLS))
    args = parser.parse_args(argv)
    for name in args.names:
        print(ensure_tool(TOOLS[name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
