"""The bench in smoke mode (N=10, 5 s restart window): the whole pipeline end to end.

Runs ``python -m bench.run --sizes 10 --restart-window 5`` as a subprocess (its own
control plane with audit logging, simulator, operator and floor processes) and checks
the correctness figures of SPEC §6 in its JSON: every resource Ready, exactly one
Blooio POST per resource, and a restart costing no Blooio calls (drift-check lists
aside) and no Kubernetes writes by the operator. Timing targets are for the full bench.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--sizes",
            "10",
            "--restart-window",
            "5",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"bench failed:\n{proc.stderr[-6000:]}"
    assert elapsed < 120, f"smoke bench took {elapsed:.0f}s (budget 120s)"
    assert "| operator / floor |" in proc.stdout  # the Markdown table went to stdout
    for suffix in ("json", "md", "png"):
        assert (out / f"latest.{suffix}").stat().st_size > 0

    results = json.loads((out / "latest.json").read_text())
    (run,) = results["runs"]
    assert run["size"] == 10
    op = run["operator"]

    burst = op["burst"]
    assert burst["all_ready"], burst
    assert burst["ready"] == 10
    assert burst["blooio_calls"].get("POST /webhooks") == 10
    assert burst["posts_per_resource"] == 1
    assert burst["kube_writes"]["total"] > 0  # the audit log was read and filtered

    steady = op["steady"]
    assert steady["all_ready"], steady
    assert steady["posts_per_resource"] == 1

    restart = op["restart"]
    assert restart["ready_before"] == restart["resources"] == restart["ready_after"]
    # The only non-list call is the one POST of the resource applied right after the
    # restart (the liveness check); the restarted operator must handle it.
    non_list = {k: v for k, v in restart["blooio_calls"].items() if k != "GET /webhooks"}
    assert non_list == {"POST /webhooks": 1}, restart["blooio_calls"]
    assert restart["blooio_calls_excluding_list"] == 0
    assert restart["kube_writes"]["total"] == 0, restart["kube_writes"]
    assert restart["new_resource_ready_s"] is not None
    assert restart["new_resource_kube_writes"] >= 3  # its Secret, its status, its Event

    floor = run["floor"]["burst"]
    assert floor["all_ready"], floor
    assert floor["posts_per_resource"] == 1
    assert floor["kube_writes"]["by_verb_resource"] == {
        "create secrets": 10,
        "patch blooiowebhooks/status": 10,
    }
    assert run["ratio_to_floor"] is not None
    assert run["ratio_to_floor"] > 0
    assert {t["name"] for t in run["targets"]} >= {"all Ready", "restart: K8s writes"}
