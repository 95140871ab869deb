"""The node's binaries (kubelet + scheduler, pause) and the pause image, built here."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from blooio_operator.devenv.controlplane import K8S_VERSION, cache_dir
from blooio_operator.devenv.node_host import NodeError

PAUSE_IMAGE = "localhost/blooio-pause:e2e"
_SOURCES = ("go.mod", "go.sum", "main.go", "pause/main.go")


def find_node_source(start: Path | None = None) -> Path:
    for parent in [start or Path.cwd(), *(start or Path.cwd()).parents]:
        if (parent / "tests" / "node" / "go.mod").is_file():
            return parent / "tests" / "node"
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "tests" / "node" / "go.mod").is_file():
            return parent / "tests" / "node"
    raise NodeError("tests/node/go.mod not found: run from a source checkout")


def ensure_node_binaries(src: Path | None = None) -> tuple[Path, Path]:
    """Build ``node`` (kubelet + scheduler) and ``pause`` once per source hash."""
    src = src or find_node_source()
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update(name.encode())
        digest.update((src / name).read_bytes())
    target = cache_dir() / "node" / digest.hexdigest()[:16]
    node, pause = target / "node", target / "pause"
    if node.is_file() and pause.is_file():
        return node, pause
    go = shutil.which("go")
    if go is None:
        raise NodeError("Go 1.26+ is required to build tests/node (go not on PATH)")
    target.mkdir(parents=True, exist_ok=True)
    pkg = "k8s.io/component-base/version"
    ldflags = f"-s -w -X {pkg}.gitVersion={K8S_VERSION} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor=36"
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    for out, pkg_path in ((node, "."), (pause, "./pause")):
        tmp = out.with_suffix(".tmp")
        cmd = [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), pkg_path]
        res = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise NodeError(f"go build {pkg_path} failed:\n{res.stderr[-4000:]}")
        tmp.rename(out)
    return node, pause


def pause_image_archive(pause_binary: Path, dest: Path, name: str = PAUSE_IMAGE) -> Path:
    """Write an OCI archive of a one-file image (``/pause``), deterministic bytes."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = pause_binary.read_bytes()
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    layer = layer_buf.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    files = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": index,
        f"blobs/sha256/{layer_digest[7:]}": layer,
        f"blobs/sha256/{config_digest[7:]}": config,
        f"blobs/sha256/{manifest_digest[7:]}": manifest,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path, blob in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(blob), 0o644, 0
            tar.addfile(info, io.BytesIO(blob))
    return dest
