"""Build and launch the local Kubernetes control plane (tests/controlplane).

Owns: locating the Go source, building the binary once per source hash into a cache
directory, starting it on free loopback ports, waiting for `/readyz` and the `default`
namespace with a deadline, and stopping it without leaving processes behind.

The binary is cached as ``$BLOOIO_CACHE_DIR/controlplane/<sha256 of go.mod, go.sum,
main.go>/controlplane`` (default cache dir ``~/.cache/blooio-operator``), so a fresh clone
on the same machine (CI) reuses it; the Go build cache makes a rebuild after a source
change quick. ``BLOOIO_CONTROLPLANE_BIN`` points at a prebuilt binary instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

K8S_VERSION = "v1.36.3"
_SOURCES = ("go.mod", "go.sum", "main.go")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or did not become ready."""


def find_source_dir(start: Path | None = None) -> Path:
    """Return ``tests/controlplane`` of the source checkout (it is not in the wheel)."""
    env = os.environ.get("BLOOIO_CONTROLPLANE_SRC")
    if env:
        return Path(env)
    candidates = [start or Path.cwd(), Path(__file__).resolve()]
    for base in candidates:
        for parent in [base, *base.parents]:
            src = parent / "tests" / "controlplane"
            if (src / "go.mod").is_file():
                return src
    raise ControlPlaneError(
        "tests/controlplane/go.mod not found: run from a source checkout "
        "or set BLOOIO_CONTROLPLANE_BIN"
    )


def cache_dir() -> Path:
    base = os.environ.get("BLOOIO_CACHE_DIR") or str(Path.home() / ".cache" / "blooio-operator")
    return Path(base)


def source_hash(src: Path) -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode())
        digest.update((src / name).read_bytes())
    return digest.hexdigest()[:16]


def ensure_binary(src: Path | None = None, *, log: Path | None = None) -> Path:
    """Return the control-plane binary, building it if its sources changed."""
    env = os.environ.get("BLOOIO_CONTROLPLANE_BIN")
    if env:
        return Path(env)
    src = src or find_source_dir()
    target = cache_dir() / "controlplane" / source_hash(src) / "controlplane"
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise ControlPlaneError("Go 1.26+ is required to build the control plane (go not on PATH)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    pkg = "k8s.io/component-base/version"
    ldflags = f"-s -w -X {pkg}.gitVersion={K8S_VERSION} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor=36"
    env_vars = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    cmd = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), "."]
    out = subprocess.run(cmd, cwd=src, env=env_vars, capture_output=True, text=True, check=False)
    if log is not None:
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise ControlPlaneError(f"go build failed:\n{out.stderr[-4000:]}")
    tmp.rename(target)
    return target


@dataclass(frozen=True)
class ControlPlaneInfo:
    server: str
    ca_file: Path
    token: str
    kubeconfig: Path
    pid: int


class ControlPlane:
    """One running control plane (etcd + kube-apiserver + GC/namespace controllers)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        binary: Path | None = None,
        extra_apiserver_args: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        ready_timeout: float = 120.0,
    ) -> None:
        self.work_dir = work_dir
        self.binary = binary
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_args = list(extra_args)  # controlplane's own flags (--node, --controllers)
        self.ready_timeout = ready_timeout
        self.log_path = work_dir / "controlplane.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._info: ControlPlaneInfo | None = None

    @property
    def info(self) -> ControlPlaneInfo:
        if self._info is None:
            raise ControlPlaneError("control plane not started")
        return self._info

    @property
    def kubeconfig(self) -> Path:
        return self.info.kubeconfig

    @property
    def server(self) -> str:
        return self.info.server

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def write_token_kubeconfig(self, token: str, path: Path) -> Path:
        """Write a kubeconfig (mode 0600) that authenticates with ``token``, e.g. a
        ServiceAccount token from the TokenRequest API."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.info.ca_file),
                    },
                }
            ],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
            "current-context": "sa",
        }
        path.write_text(json.dumps(cfg))  # JSON is YAML: kubectl and clients read it
        path.chmod(0o600)
        return path

    def start(self) -> Self:
        binary = self.binary or ensure_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(2):  # a lost free-port race makes the apiserver exit at once
            try:
                self._start_once(binary)
                return self
            except ControlPlaneError:
                self.stop()
                if attempt == 1:
                    raise
        return self

    def restart(self) -> None:
        """Stop the process and start it again on the same etcd data, PKI and ports."""
        self.stop()
        self._start_once(self.binary or ensure_binary())

    def _start_once(self, binary: Path) -> None:
        info_file = self.work_dir / "info.json"
        info_file.unlink(missing_ok=True)
        args = [str(binary), "--work-dir", str(self.work_dir), *self.extra_args]
        if self.extra_apiserver_args:
            args += ["--", *self.extra_apiserver_args]
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.ready_timeout
        while not info_file.is_file():
            self._check_alive()
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"no info.json within {self.ready_timeout}s{self._tail()}")
            time.sleep(0.1)
        raw = json.loads(info_file.read_text())
        self._info = ControlPlaneInfo(
            server=raw["server"],
            ca_file=Path(raw["caFile"]),
            token=raw["token"],
            kubeconfig=Path(raw["kubeconfig"]),
            pid=int(raw["pid"]),
        )
        ctx = ssl.create_default_context(cafile=str(self._info.ca_file))
        for path in ("/readyz", "/api/v1/namespaces/default"):
            while not self._get_ok(path, ctx):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"{path} not OK within {self.ready_timeout}s{self._tail()}"
                    )
                time.sleep(0.2)

    def _get_ok(self, path: str, ctx: ssl.SSLContext) -> bool:
        req = urllib.request.Request(  # noqa: S310 - https to our own loopback server
            self.info.server + path, headers={"Authorization": f"Bearer {self.info.token}"}
        )
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:  # noqa: S310
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ControlPlaneError(
                f"control plane exited with code {self._proc.returncode}{self._tail()}"
            )

    def _tail(self, lines: int = 50) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- last log lines ---\n" + "\n".join(text)

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The controller-manager child is in the same process group; make sure.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
