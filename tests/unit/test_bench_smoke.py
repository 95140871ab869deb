"""The bench's pure parts: audit-log counting, Ready detection, percentiles, the report.

The end-to-end smoke run (control plane, operator, floor) is
tests/integration/test_bench_smoke.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from bench import audit, report
from bench.measure import Applied, is_ready, percentile, phase_result

OP = "system:serviceaccount:blooio-system:blooio-operator"


def _event(user: str, verb: str, resource: str, *, sub: str = "", code: int = 200) -> str:
    ref: dict[str, Any] = {"resource": resource, "namespace": "ns", "name": "x"}
    if sub:
        ref["subresource"] = sub
    return json.dumps(
        {
            "kind": "Event",
            "stage": "ResponseComplete",
            "verb": verb,
            "user": {"username": user},
            "objectRef": ref,
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": "2026-11-28T10:14:05.827385Z",
            "stageTimestamp": "2026-11-28T10:14:05.856800Z",
            "userAgent": "test",
        }
    )


def test_audit_counts_writes_per_user_and_ignores_other_stages(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    started = json.loads(_event(OP, "patch", "blooiowebhooks"))
    started["stage"] = "ResponseStarted"
    log.write_text(
        "\n".join(
            [
                _event(OP, "patch", "blooiowebhooks", sub="status"),
                _event(OP, "patch", "blooiowebhooks", sub="status"),
                _event(OP, "create", "secrets", code=409),
                _event("admin", "create", "blooiowebhooks"),
                _event(OP, "get", "secrets"),  # not a write
                json.dumps(started),
            ]
        )
        + "\n"
        + _event(OP, "delete", "secrets")[:40]  # a line being written: ignored
    )
    reader = audit.AuditLog(log)
    writes = reader.since(0)
    summary = audit.summarize(writes, OP)
    assert summary["total"] == 3
    assert summary["by_verb_resource"] == {
        "create secrets": 1,
        "patch blooiowebhooks/status": 2,
    }
    assert summary["failed"] == {"create secrets -> 409": 1}
    assert audit.summarize(writes, "admin")["total"] == 1
    assert reader.since(reader.mark()) == []


def test_audit_policy_is_valid_yaml_with_write_verbs_only() -> None:
    policy = yaml.safe_load(audit.policy_yaml([OP]))
    assert policy["kind"] == "Policy"
    assert policy["omitStages"] == ["RequestReceived"]
    assert policy["rules"][0]["users"] == [OP]
    for rule in policy["rules"][:-1]:
        assert rule["level"] == "Metadata"
        assert set(rule["verbs"]) <= set(audit.WRITE_VERBS)
    assert policy["rules"][-1] == {"level": "None"}


def _bwh(generation: int, observed: int | None, ready: str, cond_gen: int | None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": ready, "observedGeneration": cond_gen}]
    }
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": "a", "generation": generation}, "status": status}


def test_is_ready_needs_current_generation_everywhere() -> None:
    assert is_ready(_bwh(2, 2, "True", 2))
    assert not is_ready(_bwh(2, 1, "True", 2))
    assert not is_ready(_bwh(2, 2, "True", 1))
    assert not is_ready(_bwh(2, 2, "False", 2))
    assert not is_ready(_bwh(2, None, "True", 2))
    assert not is_ready({"metadata": {"name": "a", "generation": 1}})


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_phase_result_latency_from_ack_and_time_from_first_create() -> None:
    applied = Applied(
        sent={"a": 0.0, "b": 0.1}, acked={"a": 10.0, "b": 10.5}, t0=9.5, t_last_ack=10.5
    )
    result = phase_result(applied, {"a": 11.0, "b": 12.5}, ["a", "b"])
    assert result["all_ready"]
    assert result["time_to_all_ready_s"] == 3.0
    assert result["latency_s"]["p50"] == 1.0
    assert result["latency_s"]["max"] == 2.0
    partial = phase_result(applied, {"a": 11.0}, ["a", "b"])
    assert not partial["all_ready"]
    assert math.isnan(partial["time_to_all_ready_s"])


def _phase(n: int, t: float, posts: int, writes: int) -> dict[str, Any]:
    lat = {"p50": 0.2, "p95": 0.4, "p99": 0.5, "max": 0.6, "mean": 0.25}
    return {
        "n": n,
        "ready": n,
        "all_ready": True,
        "time_to_all_ready_s": t,
        "throughput_per_s": n / t,
        "latency_s": lat,
        "latencies": [0.1, 0.2, 0.3],
        "ready_times": [0.5, 1.0, 1.5],
        "blooio_calls": {"POST /webhooks": posts},
        "blooio_per_resource": {"POST /webhooks": posts / n},
        "posts_per_resource": posts / n,
        "kube_writes": {"total": writes, "by_verb_resource": {}, "failed": {}, "failed_total": 0},
        "kube_writes_per_resource": {"create secrets": 1.0},
        "kube_writes_per_resource_total": writes / n,
        "process": {"peak_rss_mib": 90.0, "cpu_s": 1.0, "rss_timeline": [[0.0, 80.0], [1.0, 90.0]]},
        "cpu_s": {"operator": 1.0, "floor": 0.5, "controlplane": 2.0, "other": 0.1},
        "rate_per_s": 10.0,
        "settle_s": 3.0,
    }


def test_report_renders_targets_table_and_chart(tmp_path: Path) -> None:
    run: dict[str, Any] = {
        "size": 10,
        "latency_ms": 50.0,
        "ratio_to_floor": 2.0,
        "operator": {
            "burst": _phase(10, 2.0, 10, 60),
            "steady": _phase(10, 1.0, 10, 60),
            "process": {"peak_rss_mib": 99.0, "rss_settled_mib": 95.0},
            "restart": {
                "resources": 20,
                "ready_before": 20,
                "ready_after": 20,
                "blooio_calls": {"GET /webhooks": 1},
                "blooio_calls_excluding_list": 0,
                "kube_writes": {"total": 0, "by_verb_resource": {}, "failed": {}},
                "rss_mib": 93.0,
            },
        },
        "floor": {"burst": _phase(10, 1.0, 10, 20)},
    }
    run["targets"] = report.targets(run)
    met = {t["name"]: t["met"] for t in run["targets"]}
    assert met["time-to-all-ready / floor"] is False
    assert met["restart: Blooio calls excl. list"] is True
    assert met["restart: K8s writes"] is True
    assert met["POST per resource (burst)"] is True
    results = {
        "meta": {
            "date": "2026-11-28T10:00:00+00:00",
            "label": "",
            "kopf": "1.45.2",
            "machine": {"cpus": 2, "cpu_model": "x", "memory_gib": 24.0, "python": "3.11"},
            "args": {
                "latency_ms": 50.0,
                "apply_concurrency": 50,
                "floor_blooio_concurrency": 16,
                "floor_kube_concurrency": 32,
                "steady_count": 10,
                "steady_rate": 10.0,
                "restart_window_s": 5.0,
                "operator_env": {},
            },
        },
        "runs": [run],
    }
    paths = report.write(results, tmp_path)
    md = paths["md_text"]
    assert "| operator / floor | 2.00 **MISSED** | <= 1.5 |" in md
    assert "| restart: operator K8s writes | 0 | 0 |" in md
    assert (tmp_path / "latest.png").stat().st_size > 0
    assert json.loads((tmp_path / "latest.json").read_text())["runs"][0]["size"] == 10
