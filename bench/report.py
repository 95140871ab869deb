"""SPEC §6 targets, and the JSON / Markdown / PNG outputs of a bench run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

RSS_LIMIT_MIB = 150.0
RATIO_LIMIT = 1.5
P50_LIMIT_S = 0.5
P99_LIMIT_S = 1.5
LIST_ENDPOINT = "GET /webhooks"


def _target(name: str, target: str, value: Any, met: bool) -> dict[str, Any]:
    return {"name": name, "target": target, "value": value, "met": bool(met)}


def targets(run: dict[str, Any]) -> list[dict[str, Any]]:
    op = run["operator"]
    burst, restart = op["burst"], op["restart"]
    out = [
        _target("all Ready", "all", f"{burst['ready']}/{burst['n']}", burst["all_ready"]),
        _target(
            "time-to-all-ready / floor",
            f"<= {RATIO_LIMIT}",
            _r(run["ratio_to_floor"], 2),
            run["ratio_to_floor"] <= RATIO_LIMIT,
        ),
        _target(
            "POST per resource (burst)",
            "== 1",
            _r(burst["posts_per_resource"], 3),
            burst["posts_per_resource"] == 1,
        ),
    ]
    steady = op.get("steady")
    if steady:
        lat = steady["latency_s"]
        out += [
            _target(
                "steady p50 (s)", f"<= {P50_LIMIT_S}", _r(lat["p50"], 3), lat["p50"] <= P50_LIMIT_S
            ),
            _target(
                "steady p99 (s)", f"<= {P99_LIMIT_S}", _r(lat["p99"], 3), lat["p99"] <= P99_LIMIT_S
            ),
            _target(
                "POST per resource (steady)",
                "== 1",
                _r(steady["posts_per_resource"], 3),
                steady["posts_per_resource"] == 1,
            ),
        ]
    out += [
        _target(
            "peak RSS (MiB)",
            f"<= {RSS_LIMIT_MIB:g}",
            op["process"]["peak_rss_mib"],
            op["process"]["peak_rss_mib"] <= RSS_LIMIT_MIB,
        ),
        _target(
            "restart: Blooio calls excl. list",
            "== 0",
            restart["blooio_calls_excluding_list"],
            restart["blooio_calls_excluding_list"] == 0,
        ),
        _target(
            "restart: K8s writes",
            "== 0",
            restart["kube_writes"]["total"],
            restart["kube_writes"]["total"] == 0,
        ),
        # The figures above mean something only if the restarted operator still works.
        _target(
            "restart: new resource Ready (s)",
            "Ready",
            restart.get("new_resource_ready_s"),
            restart.get("new_resource_ready_s") is not None,
        ),
    ]
    return out


def _r(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    return value


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _lat(lat: dict[str, float]) -> str:
    return " / ".join(_f(lat[k], 3) for k in ("p50", "p95", "p99"))


def _mark(run: dict[str, Any], name: str) -> str:
    for t in run["targets"]:
        if t["name"] == name:
            return "" if t["met"] else " **MISSED**"
    return ""


def _cpu(phase: dict[str, Any], who: str) -> str:
    cpu = phase.get("cpu_s") or {}
    return " / ".join(_f(cpu.get(k), 1) for k in (who, "controlplane", "other"))


def _per(phase: dict[str, Any], who: str) -> str:
    cpu = phase.get("cpu_s") or {}
    if who not in cpu or "controlplane" not in cpu or not phase.get("n"):
        return "n/a"
    return f"{(cpu[who] + cpu['controlplane']) / phase['n'] * 1000:.0f}"


def _breakdown(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in counts.items()) or "none"


def markdown(results: dict[str, Any]) -> str:
    meta, runs = results["meta"], results["runs"]
    m, a = meta["machine"], meta["args"]
    head = " | ".join(f"N={r['size']}" for r in runs)
    sep = "|".join("---" for _ in runs)
    lines = [
        f"## blooio-operator bench — {meta['date']}"
        + (f" ({meta['label']})" if meta["label"] else ""),
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown model'}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, kopf {meta['kopf']}, operator code "
        f"{meta.get('operator_source', {}).get('sha256', '?')}. "
        f"Simulator latency {a['latency_ms']:g} ms; "
        f"burst applied with {a['apply_concurrency']} creates in flight; floor concurrency "
        f"{a['floor_blooio_concurrency']} Blooio / {a['floor_kube_concurrency']} Kubernetes; "
        f"steady pass {a['steady_count']} (capped at N) at {a['steady_rate']:g}/s; restart window "
        f"{a['restart_window_s']:g} s. Operator env overrides: "
        f"{', '.join(f'{k}={v}' for k, v in a['operator_env'].items()) or 'none'}.",
        "",
        f"| metric | {head} | target |",
        f"|---|{sep}|---|",
    ]

    def row(label: str, cells: list[str], target: str = "") -> None:
        lines.append(f"| {label} | {' | '.join(cells)} | {target} |")

    ob = [r["operator"]["burst"] for r in runs]
    fb = [r["floor"]["burst"] for r in runs]
    row("all Ready (operator burst)", [f"{b['ready']}/{b['n']}" for b in ob], "all")
    row("time-to-all-ready, operator (s)", [_f(b["time_to_all_ready_s"]) for b in ob])
    row("time-to-all-ready, floor (s)", [_f(b["time_to_all_ready_s"]) for b in fb])
    row(
        "operator / floor",
        [_f(r["ratio_to_floor"]) + _mark(r, "time-to-all-ready / floor") for r in runs],
        f"<= {RATIO_LIMIT}",
    )
    row(
        "throughput operator / floor (resources/s)",
        [
            f"{_f(o['throughput_per_s'], 1)} / {_f(f['throughput_per_s'], 1)}"
            for o, f in zip(ob, fb, strict=True)
        ],
    )
    row("burst latency p50 / p95 / p99, operator (s)", [_lat(b["latency_s"]) for b in ob])
    row("burst latency p50 / p95 / p99, floor (s)", [_lat(b["latency_s"]) for b in fb])
    steady_cells = []
    for r in runs:
        st = r["operator"].get("steady")
        if st:
            steady_cells.append(
                f"{_lat(st['latency_s'])} ({st['n']} at {st['rate_per_s']:g}/s, "
                f"after {st.get('settle_s', 0):g}s idle wait)"
                + _mark(r, "steady p50 (s)")
                + _mark(r, "steady p99 (s)")
            )
        else:
            steady_cells.append("skipped")
    row(
        "steady latency p50 / p95 / p99, operator (s)",
        steady_cells,
        f"p50 <= {P50_LIMIT_S}, p99 <= {P99_LIMIT_S}",
    )
    row(
        "Blooio POST per resource (burst / steady)",
        [
            f"{_f(r['operator']['burst']['posts_per_resource'], 3)} / "
            f"{_f(r['operator'].get('steady', {}).get('posts_per_resource'), 3)}"
            + _mark(r, "POST per resource (burst)")
            + _mark(r, "POST per resource (steady)")
            for r in runs
        ],
        "== 1",
    )
    row(
        "Blooio calls per resource, all endpoints (burst)",
        [_f(sum(b["blooio_calls"].values()) / b["n"], 3) for b in ob],
    )
    row(
        "K8s writes per resource, operator (burst)",
        [_f(b["kube_writes_per_resource_total"], 2) for b in ob],
    )
    row(
        "K8s writes per resource, operator (steady)",
        [
            _f(r["operator"].get("steady", {}).get("kube_writes_per_resource_total"), 2)
            for r in runs
        ],
    )
    row("K8s writes per resource, floor", [_f(b["kube_writes_per_resource_total"], 2) for b in fb])
    row(
        "operator peak RSS (MiB)",
        [
            _f(r["operator"]["process"]["peak_rss_mib"], 1) + _mark(r, "peak RSS (MiB)")
            for r in runs
        ],
        f"<= {RSS_LIMIT_MIB:g}",
    )
    row(
        "operator RSS settled / after restart (MiB)",
        [
            f"{_f(r['operator']['process']['rss_settled_mib'], 1)} / "
            f"{_f(r['operator']['restart']['rss_mib'], 1)}"
            for r in runs
        ],
    )
    row(
        "CPU ms per resource in burst, operator+control plane / floor+control plane",
        [f"{_per(o, 'operator')} / {_per(f, 'floor')}" for o, f in zip(ob, fb, strict=True)],
    )
    row(
        "peak open fds (sockets) in burst, operator / floor",
        [
            f"{(o.get('process') or {}).get('peak_fds', 'n/a')} / "
            f"{(f.get('process') or {}).get('peak_fds', 'n/a')}"
            for o, f in zip(ob, fb, strict=True)
        ],
    )
    row(
        "CPU s in burst, operator pass: operator / control plane / other processes",
        [_cpu(o, "operator") for o in ob],
    )
    row(
        "CPU s in burst, floor pass: floor / control plane / other processes",
        [_cpu(f, "floor") for f in fb],
    )
    row(
        "restart: Blooio calls excl. list (list calls)",
        [
            f"{r['operator']['restart']['blooio_calls_excluding_list']} "
            f"({r['operator']['restart']['blooio_calls'].get(LIST_ENDPOINT, 0)})"
            + _mark(r, "restart: Blooio calls excl. list")
            for r in runs
        ],
        "0",
    )
    row(
        "restart: operator K8s writes",
        [
            str(r["operator"]["restart"]["kube_writes"]["total"]) + _mark(r, "restart: K8s writes")
            for r in runs
        ],
        "0",
    )
    row(
        "machine load (1-min loadavg) at start / end",
        [
            f"{r.get('loadavg_1m_at_start', 'n/a')} / {r.get('loadavg_1m_at_end', 'n/a')}"
            for r in runs
        ],
    )
    row(
        "restart: new resource applied right after it, Ready in (s)",
        [
            str(r["operator"]["restart"].get("new_resource_ready_s"))
            + _mark(r, "restart: new resource Ready (s)")
            for r in runs
        ],
        "Ready",
    )
    row(
        "restart: Ready before / after (of total)",
        [
            f"{r['operator']['restart']['ready_before']} / "
            f"{r['operator']['restart']['ready_after']} ({r['operator']['restart']['resources']})"
            for r in runs
        ],
    )
    lines.append("")
    for r in runs:
        b = r["operator"]["burst"]
        lines.append(f"N={r['size']} details (burst, per resource):")
        lines.append(f"- Blooio calls by endpoint: {_breakdown(b['blooio_per_resource'])}")
        lines.append(
            f"- operator writes by verb/resource: {_breakdown(b['kube_writes_per_resource'])}"
        )
        if b["kube_writes"]["failed_total"]:
            lines.append(f"- failed operator writes: {_breakdown(b['kube_writes']['failed'])}")
        rs = r["operator"]["restart"]
        if rs["kube_writes"]["total"] or rs["blooio_calls_excluding_list"]:
            lines.append(
                f"- restart window: Blooio {_breakdown(rs['blooio_calls'])}; writes "
                f"{_breakdown(rs['kube_writes']['by_verb_resource'])}"
            )
        lines.append("")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, axes = plt.subplots(len(runs), 3, figsize=(19, 4.2 * len(runs)), squeeze=False)
    for row, r in enumerate(runs):
        ax_lat, ax_ready, ax_rss = axes[row]
        series = [
            ("operator burst", r["operator"]["burst"]["latencies"], "tab:blue"),
            ("floor burst", r["floor"]["burst"]["latencies"], "tab:gray"),
        ]
        if r["operator"].get("steady"):
            st = r["operator"]["steady"]
            series.append(
                (f"operator steady ({st['rate_per_s']:g}/s)", st["latencies"], "tab:green")
            )
        for label, values, color in series:
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax_lat.step(values, ys, where="post", label=label, color=color)
        ax_lat.axvline(P50_LIMIT_S, color="tab:orange", ls=":", lw=1)
        ax_lat.axvline(P99_LIMIT_S, color="tab:red", ls=":", lw=1)
        ax_lat.set_xscale("log")
        ax_lat.set_xlabel("apply-to-Ready latency (s, log)")
        ax_lat.set_ylabel("fraction of resources")
        ax_lat.set_title(f"N={r['size']}: latency distribution (CDF)")
        ax_lat.grid(True, which="both", alpha=0.3)
        ax_lat.legend(loc="lower right")
        for label, times, color in (
            ("operator", r["operator"]["burst"]["ready_times"], "tab:blue"),
            ("floor", r["floor"]["burst"]["ready_times"], "tab:gray"),
        ):
            if times:
                ax_ready.step(
                    [0.0, *times], range(len(times) + 1), where="post", label=label, color=color
                )
        ax_ready.set_xlabel("seconds since the first create")
        ax_ready.set_ylabel("resources Ready")
        ax_ready.set_title(
            f"N={r['size']}: Ready over time (operator/floor = {_f(r['ratio_to_floor'])})"
        )
        ax_ready.grid(True, alpha=0.3)
        ax_ready.legend(loc="lower right")
        for label, phase, color in (
            ("operator", r["operator"]["burst"], "tab:blue"),
            ("floor", r["floor"]["burst"], "tab:gray"),
        ):
            points = (phase.get("process") or {}).get("rss_timeline") or []
            if points:
                ax_rss.plot(
                    [p[0] for p in points], [p[1] for p in points], label=label, color=color
                )
        ax_rss.axhline(RSS_LIMIT_MIB, color="tab:red", ls=":", lw=1)
        ax_rss.set_xlabel("seconds since the first create")
        ax_rss.set_ylabel("RSS (MiB)")
        ax_rss.set_title(f"N={r['size']}: process RSS during the burst")
        ax_rss.grid(True, alpha=0.3)
        ax_rss.legend(loc="lower right")
    fig.suptitle(f"blooio-operator bench {results['meta']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write(results: dict[str, Any], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = results["meta"]["date"].replace(":", "").replace("-", "").replace("+0000", "Z")
    base = out / f"bench-{stamp}"
    md = markdown(results)
    json_path = base.with_suffix(".json")
    json_path.write_text(json.dumps(_clean(results), indent=2) + "\n")
    md_path = base.with_suffix(".md")
    md_path.write_text(md + "\n")
    png_path = base.with_suffix(".png")
    chart(results, png_path)
    for src in (json_path, md_path, png_path):
        shutil.copyfile(src, out / f"latest{src.suffix}")
    return {"json": json_path, "md": md_path, "png": png_path, "md_text": md}
