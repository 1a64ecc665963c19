"""``edgesplit report`` on a dynamic suite's folder: metrics per chooser and a timeline per trace.

It reads only ``config.json`` (the traces as played), ``oracle.json`` and ``runs.csv``, so an
outside script can recompute every figure. It writes ``summary.csv`` (one row per model, trace,
edge, objective and chooser, the mean over repeats), ``report.md`` and
``timeline_<trace>_<edge>_<objective>.png`` (the first repeat).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from edgesplit.core import zoo
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation.dynamic_metrics import (
    CHOOSERS,
    FORMAT,
    HINDSIGHT,
    Change,
    key,
    oracle_table,
    replay_metrics,
    top_splits,
    with_regret,
)
from edgesplit.evaluation.traces import Trace, change_times, parse_trace

ORDER = [*CHOOSERS, HINDSIGHT]
NUMBERS = ("t_s", "latency_s", "cost_usd", "split_point", "oracle_split", "lost", "probe_bytes",
           "bandwidth_kbps", "clock_ghz", "rtt_ms", "cloud_up", "repeat", "sent_bytes")


def is_dynamic(directory: Path) -> bool:
    try:
        return bool(json.loads((directory / "config.json").read_text()).get("format") == FORMAT)
    except (OSError, ValueError):
        return False


def read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as source:
        rows = list(csv.DictReader(source))
    for row in rows:
        for name in NUMBERS:
            row[name] = float(row[name]) if row[name] != "" else math.nan
        row["lost"] = int(row["lost"])
        if not row["lost"]:
            row["split_point"] = int(row["split_point"])
    return rows


def trace_changes(trace: Trace, oracle: dict[str, Any], model: str, edge: str,
                  objective: str) -> list[Change]:
    """Every change of the trace with the best splits the oracle measured after it."""
    n = zoo.get_spec(model).split_points
    times = change_times(trace)
    ends = [*times[1:], trace.duration_s][:len(times)]  # a still trace has no change
    changes = []
    for t, until in zip(times, ends, strict=True):
        latency, cost = oracle_table(oracle[model][key(trace.at(t).condition())], n, edge)
        changes.append(Change(t, until, frozenset(top_splits(latency, cost, objective))))
    return changes


def summarise(folder: Path) -> list[dict[str, Any]]:
    """The summary rows: every chooser of every group, the mean over repeats."""
    config = json.loads((folder / "config.json").read_text())
    traces = {t["name"]: parse_trace(t, t["name"]) for t in config["traces"]}
    oracle = json.loads((folder / "oracle.json").read_text())
    replays: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in read_rows(folder / "runs.csv"):
        replays[(row["model"], row["trace"], row["edge"], row["objective"], row["repeat"],
                 row["strategy"])].append(row)
    if not replays:
        raise InvalidArgument(f"{folder / 'runs.csv'} holds no inferences: run the suite again")
    per: dict[tuple[Any, ...], list[dict[str, float]]] = defaultdict(list)
    for (model, name, edge, objective, repeat, chooser), rows in replays.items():
        trace = traces[name]
        changes = trace_changes(trace, oracle, model, edge, objective)
        metrics = replay_metrics(rows, changes, trace.duration_s, edge)
        hindsight = replays.get((model, name, edge, objective, repeat, HINDSIGHT))
        if hindsight:
            metrics = with_regret(metrics, replay_metrics(hindsight, changes, trace.duration_s,
                                                          edge))
        per[(model, name, edge, objective, chooser)].append(metrics)
    summary = []
    for group, runs in sorted(per.items(), key=lambda kv: (*kv[0][:4], ORDER.index(kv[0][4]))):
        mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
        summary.append(dict(zip(("model", "trace", "edge", "objective", "strategy"), group,
                                strict=True)) | {"repeats": len(runs)} | mean)
    return summary


def write_dynamic_report(folder: Path, out_dir: Path | None = None) -> Path:
    missing = [n for n in ("runs.csv", "oracle.json") if not (folder / n).is_file()]
    if missing:
        raise InvalidArgument(f"{folder} holds no {' or '.join(missing)}: the dynamic run "
                              "stopped before it measured; run it again into a new --out")
    summary = summarise(folder)
    out_dir = out_dir or folder / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "summary.csv", "w", newline="") as sink:
        writer = csv.DictWriter(sink, list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    figures = draw_timelines(folder, out_dir)
    checks = json.loads((folder / "config.json").read_text()).get("self_checks", [])
    (out_dir / "report.md").write_text(markdown(summary, figures) + targets(summary)
                                       + self_checks(checks))
    return out_dir


def targets(summary: list[dict[str, Any]]) -> str:
    """edgesplit as shipped (``replan``) against the issue's targets, group by group."""
    lines = ["", "## edgesplit (replan) against the targets", "",
             "| model | trace | edge | obj. | vs hindsight (<= +10%) | vs plan-once (<= -20%) | "
             "reaction inf. (<= 3) | flaps/min (still: < 2) | lost (0) |", "|" + "---|" * 9]
    by = {(s["model"], s["trace"], s["edge"], s["objective"], s["strategy"]): s
          for s in summary}
    for (model, trace, edge, objective, chooser), s in by.items():
        if chooser != "replan":
            continue
        once = by.get((model, trace, edge, objective, "plan-once"))
        versus = s["mean_latency_s"] / once["mean_latency_s"] - 1 if once else math.nan
        lines.append(f"| {model} | {trace} | {edge} | {objective} | "
                     f"{_percent(s.get('latency_regret'))} | {_percent(versus)} | "
                     f"{s['reaction_inferences']:.1f} (max {s['reaction_max_inferences']:.0f}) "
                     f"| {s['flaps_per_min']:.1f} | {s['lost']:.0f} |")
    return "\n".join(lines) + "\n"


def self_checks(checks: list[dict[str, Any]]) -> str:
    lines = ["", "## Self-checks: a step shows up in the first measurement after it", ""]
    lines += [f"- {c['check']}: error {c['error']:+.1%} "
              f"({'passed' if c['passed'] else 'FAILED'})" for c in checks]
    return "\n".join(lines) + "\n"


def markdown(summary: list[dict[str, Any]], figures: list[Path]) -> str:
    head = ("| model | trace | edge | obj. | chooser | inferences | mean ms | p95 ms | p99 ms | "
            "µ$ | latency regret | reaction (inf.) | reaction s | flaps/min | lost | "
            "probing share |")
    lines = ["# edgesplit dynamic suite", "", head, "|" + "---|" * 16]
    for s in summary:
        lines.append(
            f"| {s['model']} | {s['trace']} | {s['edge']} | {s['objective']} | {s['strategy']} "
            f"| {s['inferences']:.0f} | {s['mean_latency_s'] * 1e3:.1f} | {s['p95_s'] * 1e3:.1f} "
            f"| {s['p99_s'] * 1e3:.1f} | {s['total_cost_usd'] * 1e6:.2f} | "
            f"{_percent(s.get('latency_regret'))} | {s['reaction_inferences']:.1f} | "
            f"{s['reaction_s']:.2f} | {s['flaps_per_min']:.1f} | {s['lost']:.0f} | "
            f"{s['probe_share']:.1%} |")
    lines += ["", "Regret: the mean latency per inference against the oracle in hindsight's in "
              "the same replays. Reaction: per change of the trace, the inferences (and seconds) "
              "until the split is among the best three the oracle measured there.", ""]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    return "\n".join(lines) + "\n"


def _percent(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.0%}"


def draw_trace(trace: Trace, out_dir: Path) -> Path:
    """The trace's bandwidth, round trip and clock over time, the cloud's outages shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    points = trace.sample(trace.duration_s / 400)
    t = [p.t_s for p in points]
    fig, axes = plt.subplots(3, 1, figsize=(8, 5.5), sharex=True)
    for ax, name, label in zip(axes, ("bandwidth_kbps", "rtt_ms", "clock_ghz"),
                               ("uplink kbit/s", "round trip ms", "clock GHz"), strict=True):
        ax.step(t, [getattr(p, name) for p in points], where="post", color="tab:blue")
        ax.set_ylabel(label)
        _shade_outages(ax, trace)
    axes[0].set_yscale("log")
    axes[0].set_title(textwrap.fill(f"trace {trace.name}: {trace.description}", 95), fontsize=9,
                      loc="left")
    axes[-1].set_xlabel("seconds since the trace began (cloud down: shaded)")
    fig.tight_layout()
    path = out_dir / f"trace_{trace.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shade_outages(ax: Any, trace: Trace) -> None:
    ends = [*(p.t_s for p in trace.points[1:]), trace.duration_s]
    for point, end in zip(trace.points, ends, strict=True):
        if not point.cloud_up:
            ax.axvspan(point.t_s, end, color="grey", alpha=0.25)


def draw_timelines(folder: Path, out_dir: Path) -> list[Path]:
    """One timeline per trace, edge and objective (the first repeat, every chooser)."""
    config = json.loads((folder / "config.json").read_text())
    traces = {t["name"]: parse_trace(t, t["name"]) for t in config["traces"]}
    groups: dict[tuple[str, str, str, str], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list))
    for row in read_rows(folder / "runs.csv"):
        if row["repeat"] == 0:
            groups[(row["model"], row["trace"], row["edge"], row["objective"])][
                row["strategy"]].append(row)
    return [_timeline(traces[g[1]], g, choosers, out_dir) for g, choosers in groups.items()]


def _timeline(trace: Trace, group: tuple[str, str, str, str],
              choosers: dict[str, list[dict[str, Any]]], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = trace.sample(trace.duration_s / 400)
    t = [p.t_s for p in points]
    fig, (bw, rtt, split, lat) = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    bw.step(t, [p.bandwidth_kbps for p in points], where="post", color="black", label="true")
    rtt.step(t, [p.rtt_ms for p in points], where="post", color="black", label="true")
    clock = rtt.twinx()
    clock.step(t, [p.clock_ghz for p in points], where="post", color="tab:grey", ls=":")
    clock.set_ylabel("clock GHz (dotted)")
    believer = choosers.get("replan", [])
    bw.plot([r["t_s"] for r in believer], [float(r["believed_bandwidth_kbps"] or "nan")
                                           for r in believer], ".", label="replan believed")
    rtt.plot([r["t_s"] for r in believer], [float(r["believed_rtt_ms"] or "nan")
                                            for r in believer], ".", label="replan believed")
    hindsight = choosers.get(HINDSIGHT, [])
    split.step([r["t_s"] for r in hindsight], [r["oracle_split"] for r in hindsight],
               where="post", color="black", lw=3, alpha=0.3, label="oracle")
    for name in ORDER:
        rows = [r for r in choosers.get(name, []) if not r["lost"]]
        split.step([r["t_s"] for r in rows], [r["split_point"] for r in rows], where="post",
                   label=name)
        lat.plot([r["t_s"] for r in rows], [r["latency_s"] * 1e3 for r in rows], ".-", ms=3,
                 lw=0.6, label=name)
    bw.set_yscale("log")
    lat.set_yscale("log")
    for ax, label in ((bw, "uplink kbit/s"), (rtt, "round trip ms"), (split, "split point"),
                      (lat, "latency ms")):
        ax.set_ylabel(label)
        ax.legend(fontsize=7, loc="upper right", ncol=3)
        _shade_outages(ax, trace)
    model, name, edge, objective = group
    bw.set_title(f"{name}: {model}, {edge} edge, {objective} (cloud down: shaded)", loc="left",
                 fontsize=10)
    lat.set_xlabel("seconds since the trace began")
    fig.tight_layout()
    path = out_dir / f"timeline_{name}_{edge}_{objective}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
