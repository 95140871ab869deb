"""``make e2e``: a local node, the operator image on it, hack/e2e/scenario.sh, teardown.

    python -m tests.node.e2e [--work-dir .build/e2e] [--image-archive PATH] [--keep-up]
    python -m tests.node.e2e --down      # clean up after a run killed with SIGKILL

Needs root, containerd/runc/CNI plugins/iptables (``bash .ci/run`` installs them), Go
(builds tests/controlplane and tests/node once per source hash), and the image archive
of ``make image``; the scenario installs the operator with the Helm chart (``helm`` built
by devenv/gotools.py; ``--install kustomize`` for ``kubectl apply -k``). SIGTERM, SIGINT
and SIGHUP stop the scenario and tear down; the teardown leaves no process, mount,
cgroup, bridge or iptables chain behind, and checks that. Figures go to ``<work-dir>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from blooio_operator.devenv.gotools import HELM, GoToolError, ensure_tool
from blooio_operator.devenv.node import BRIDGE, CGROUP_ROOT, NAT_CHAIN, LocalNode, NodeError

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/blooio-operator:dev"


class Stopped(Exception):
    """A signal asked us to stop."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the teardown
    raise Stopped(signal.Signals(signum).name)


def leftovers(work_dir: Path) -> list[str]:
    """What a finished run must not leave behind (processes, mounts, net, cgroups)."""
    found = []
    marker = str(work_dir.resolve())
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(f"process {proc.name}: {cmd[:120]}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if marker in line]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_ROOT}")]
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True)
    if NAT_CHAIN in nat.stdout:
        found.append(f"iptables chain {NAT_CHAIN}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.node.e2e")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".build" / "e2e")
    parser.add_argument(
        "--image-archive", type=Path, default=ROOT / ".build" / "image" / "blooio-operator.oci.tar"
    )
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument(
        "--install",
        choices=["chart", "kustomize"],
        default="chart",
        help="install the operator with the Helm chart (default) or kubectl apply -k",
    )
    parser.add_argument("--keep-up", action="store_true", help="after the scenario, wait for ^C")
    parser.add_argument("--down", action="store_true", help="only clean up a killed run")
    args = parser.parse_args(argv)
    if args.down:
        stale = LocalNode(args.work_dir.resolve() / "node")
        problems = stale.down() + leftovers(stale.work_dir)
        print("\n".join(problems) or "nothing left behind")
        return 1 if problems else 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    work: Path = args.work_dir.resolve()
    node = LocalNode(work / "node")
    figures: dict[str, float | str] = {}
    scenario: subprocess.Popen[bytes] | None = None
    rc = 1
    try:
        node.build()
        node.up()
        print(f"node up in {node.timings['node_up_s']:.1f} s", flush=True)
        if not args.image_archive.is_file():
            raise NodeError(f"{args.image_archive} missing: run `make image` first")
        node.import_image(args.image_archive, args.image)
        if args.image not in node.images():
            raise NodeError(f"{args.image} not in containerd after import: {node.images()}")
        results = work / "scenario.env"
        helm = ensure_tool(HELM)  # the scenario installs with the chart (INSTALL=chart)
        env = {
            **os.environ,
            "KUBECONFIG": str(node.kubeconfig),
            "HELM": str(helm),
            "INSTALL": args.install,
            "IMAGE": args.image,
            "ADDRESSING": "podip",  # no cluster DNS, no kube-proxy: pods by IP
            "RESULTS": str(results),
            "WORK": str(work / "scenario"),
        }
        t0 = time.monotonic()
        scenario = subprocess.Popen(
            ["bash", str(ROOT / "hack" / "e2e" / "scenario.sh")], env=env, start_new_session=True
        )
        rc = scenario.wait()
        figures["scenario_wall_s"] = round(time.monotonic() - t0, 1)
        if results.is_file():
            for line in results.read_text().splitlines():
                key, _, value = line.partition("=")
                figures[key] = float(value)
        if args.keep_up and rc == 0:
            print(f"KUBECONFIG={node.kubeconfig}  (^C tears down)", flush=True)
            while True:
                time.sleep(3600)
    except Stopped as exc:
        print(f"\n{exc}: stopping the scenario and tearing down", file=sys.stderr, flush=True)
        rc = 143
    except (NodeError, GoToolError) as exc:
        print(f"e2e: {exc}", file=sys.stderr, flush=True)
        rc = 1
    finally:
        if scenario is not None and scenario.poll() is None:
            os.killpg(scenario.pid, signal.SIGTERM)
            try:
                scenario.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(scenario.pid, signal.SIGKILL)
                scenario.wait()
        t0 = time.monotonic()
        problems = node.down()
        figures["teardown_s"] = round(time.monotonic() - t0, 1)
        problems += leftovers(node.work_dir)
        figures.update({k: round(v, 2) for k, v in node.timings.items()})
        (work / "results.json").parent.mkdir(parents=True, exist_ok=True)
        (work / "results.json").write_text(json.dumps(figures, indent=2) + "\n")
        print("e2e figures (s): " + json.dumps(figures, indent=2), flush=True)
        if problems:
            print("teardown left behind:\n  " + "\n  ".join(problems), file=sys.stderr)
            rc = rc or 1
        else:
            print("teardown: no process, mount, cgroup, bridge or iptables chain left")
    print("e2e " + ("passed" if rc == 0 else f"FAILED (exit {rc})"), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
