"""The pieces of the local e2e node that need no root: the pause image archive and the
scenario's overlays (they may change only the image and the Blooio URL)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from blooio_operator.devenv.node_build import PAUSE_IMAGE, pause_image_archive

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "hack" / "e2e" / "overlay"


def test_pause_archive_is_a_valid_deterministic_oci_layout(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    first = pause_image_archive(binary, tmp_path / "a.tar")
    second = pause_image_archive(binary, tmp_path / "b.tar")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(blobs["index.json"])
    (desc,) = index["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == PAUSE_IMAGE
    manifest = json.loads(blobs["blobs/sha256/" + desc["digest"][7:]])
    config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Entrypoint"] == ["/pause"]
    layer = blobs["blobs/sha256/" + manifest["layers"][0]["digest"][7:]]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]


def _render(
    tmp_path: Path, which: str, target: str, url: str = "http://10.213.0.9:8080/v4"
) -> list[dict]:  # type: ignore[type-arg]
    out = tmp_path / which
    out.mkdir()
    rel = os.path.relpath(ROOT / target, out)
    text = (OVERLAYS / which / "kustomization.yaml").read_text()
    for key, value in {
        "@DEPLOY@": rel,
        "@EXAMPLES@": rel,
        "@IMAGE_NAME@": "localhost/blooio-operator",
        "@IMAGE_TAG@": "dev",
        "@BLOOIO_API_URL@": url,
    }.items():
        text = text.replace(key, value)
    (out / "kustomization.yaml").write_text(text)
    res = subprocess.run(
        ["kubectl", "kustomize", str(out)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def _plain(target: str) -> list[dict]:  # type: ignore[type-arg]
    res = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / target)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def _strip(docs: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    """The documents with images and the Blooio URL blanked."""
    text = json.dumps(docs)
    for image in (
        "localhost/blooio-operator:dev",
        "ghcr.io/blooio-operator/blooio-operator:0.2.0",
        "python:3.11.11-slim-bookworm",
        "http://10.213.0.9:8080/v4",
        "https://api.blooio.com/v4",
    ):
        text = text.replace(image, "X")
    out: list[dict] = json.loads(text)  # type: ignore[type-arg]
    for doc in out:  # a strategic merge patch moves the patched env entry first
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["env"] = sorted(c.get("env", []), key=lambda e: e["name"])
    return out


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize(("which", "target"), [("operator", "deploy"), ("examples", "examples")])
def test_overlays_change_only_the_image_and_the_blooio_url(
    tmp_path: Path, which: str, target: str
) -> None:
    overlay = _render(tmp_path, which, target)
    assert _strip(overlay) == _strip(_plain(target))
    images = {
        c["image"]
        for d in overlay
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"localhost/blooio-operator:dev"}
