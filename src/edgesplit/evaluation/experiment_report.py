"""``edgesplit report DIR`` for an experiment folder: ``DIR/report/`` with tables and figures.

Tables come from ``evaluation`` (pure); this module writes them as CSV and markdown and draws
the figures of the thesis's chapters 4 and 7 from ``runs.csv``, ``config.json`` and the profiles
the planners used (``DIR/profiles``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgesplit.core.fitted import build_planner, fit_predictor
from edgesplit.core.planning import Objective, Planner
from edgesplit.core.policies import Strategy
from edgesplit.core.predictors import Conditions, ThesisPredictor
from edgesplit.core.profiles import Profile
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation import evidence as evd
from edgesplit.evaluation import statistics as st
from edgesplit.evaluation import tables as ev
from edgesplit.evaluation.replay import codec_chooser_rows
from edgesplit.evaluation.runs import THESIS_LABELS, WEIGHT, predictors, read_runs, strategies
from edgesplit.measuring.store import read_profile

THESIS_COLOURS = {Strategy.COST: "tab:green", Strategy.LATENCY: "tab:red",
                  Strategy.RANK: "tab:blue"}
MARKERS = "s^Dvo*"


def _colour(label: str) -> str:
    """The thesis's colours for its three strategies, matplotlib's cycle for any other."""
    strategy = strategies()[label]
    return THESIS_COLOURS.get(strategy, f"C{4 + list(strategies()).index(label)}")


def _measured(s: ev.Strategies) -> tuple[list[str], list[str]]:
    """The strategies and predictors of the registries that ``runs.csv`` holds rows of, in the
    registries' order (a folder measured before one was added has none of its rows)."""
    found = {(k[2], k[3]) for k in s.split}
    return ([label for label in strategies() if label in {st for _, st in found}],
            [name for name in predictors() if name in {p for p, _ in found}])


def write_experiment_report(directory: Path, out_dir: Path | None = None) -> Path:
    """Write the report of the experiment in ``directory``; returns the path of report.md."""
    if not ev.is_experiment(directory):
        raise InvalidArgument(f"{directory} is not an experiment folder (no runs.csv and "
                              "config.json): run `edgesplit experiment --out DIR` first")
    out = Path(out_dir or directory / "report")
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    rows = read_runs(directory / "runs.csv")
    if not rows:
        raise InvalidArgument(f"{directory / 'runs.csv'} has no rows yet: let the experiment "
                              "run (it resumes where it stopped)")
    thesis = ev.thesis_figures()
    s, o = ev.strategies(rows), ev.oracle(rows)
    table = ev.table_7_1(s, thesis["table_7_1"])
    effect = ev.effectiveness(s, o, thesis["prediction_effectiveness_section_7_1"],
                              ev.noise_floor(rows, o))
    pareto = ev.pareto_checks(s, o)
    checks = ev.consistency(rows, o)
    _write_csv(out / "table-7-1.csv", ev.as_dicts(table))
    _write_csv(out / "consistency.csv", ev.as_dicts(checks))
    _write_csv(out / "effectiveness.csv", ev.as_dicts(effect))
    _write_csv(out / "pareto.csv", ev.as_dicts(pareto))
    profiles = _profiles(directory)
    figures = draw_figures(out, config, s, o, profiles)
    text = (_markdown(config, rows, table, effect, pareto, figures) + _consistency_md(checks)
            + "\n".join(_evidence(out, config, rows, profiles, thesis)) + "\n")
    path = out / "report.md"
    path.write_text(text)
    return path


def _evidence(out: Path, config: dict[str, Any], rows: Sequence[Mapping[str, str]],
              profiles: dict[str, Profile], thesis: dict[str, Any]) -> list[str]:
    """Every chooser judged with its interval (``evidence``), with the replayed chooser of
    split and codec together beside them (``replay``): CSVs in ``out`` and the report's
    sections."""
    seed = int(config["parameters"].get("seed", 0))
    thesis_rows = evd.table_7_1(rows, thesis["table_7_1"], seed)  # the measured rows alone
    rows = [*rows, *codec_chooser_rows(rows, profiles)]
    found = {r["predictor"] for r in rows} - {"", "none"}
    names = [p for p in predictors() if p in found] + sorted(found - set(predictors()))
    pieces = evd.slices(rows)
    judged: list[evd.Judged] = []
    for piece in pieces:
        medians = evd.draw(piece, seed)  # once per model and edge: the costly part
        judged += [evd.judge(piece, objective, names, medians, seed)
                   for objective in st.OBJECTIVES]
    shares = {(p.model, p.edge): evd.hypervolumes(p, names, seed) for p in pieces}
    errors = evd.chosen_errors(rows) + evd.split_errors(
        pieces, evd.conditions_of(rows), [n for n in names if n in predictors()],
        _predict(profiles))
    _write_csv(out / "regrets.csv", [
        {"model": j.model, "edge": j.edge, "objective": j.objective, "note":
         j.notes.get(r.chooser, ""), **_flat(asdict(r))} for j in judged for r in j.regrets])
    _write_csv(out / "paired.csv", [
        {"model": j.model, "edge": j.edge, "objective": j.objective, **_flat(asdict(p))}
        for j in judged for p in j.pairs])
    _write_csv(out / "noise-floor.csv", [
        {"model": j.model, "edge": j.edge, "objective": j.objective,
         **_flat({"held_out": asdict(j.floor.held_out) if j.floor.held_out  # one repeat:
                  else dict.fromkeys(("value", "low", "high"), ""),  # nothing held out
                  "in_sample": asdict(j.floor.in_sample)})} for j in judged])
    _write_csv(out / "hypervolume.csv", [
        {"model": m, "edge": e, "points": name, **_flat({"share": asdict(i)})}
        for (m, e), by in shares.items() for name, i in by.items()])
    _write_csv(out / "prediction-error.csv", [
        {"model": e.model, "predictor": e.predictor, "where": e.where, **asdict(e.spread)}
        for e in errors])
    _write_csv(out / "table-7-1-thesis.csv", [_flat(asdict(r)) for r in thesis_rows])
    return [*_evidence_md(config, judged, shares, errors, thesis_rows, names), "",
            *evd.section_7_2(thesis_rows, thesis.get("strategies_section_7_2", {}))]


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested records (an interval's value, low and high) as columns ``name_value`` ..."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}_")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _predict(profiles: dict[str, Profile]) -> evd.Predict:
    """Each predictor fitted once per model on its profile (peers: the other models'), as the
    experiment's planners were."""
    fitted: dict[tuple[str, str], Any] = {}

    def predict(model: str, name: str, bandwidth: float, rtt: float,
                clock: float) -> list[float] | None:
        if model not in profiles:
            return None
        if (model, name) not in fitted:
            peers = [p for m, p in profiles.items() if m != model]
            try:
                fitted[(model, name)] = fit_predictor(name, profiles[model], peers=peers)
            except (InvalidArgument, ValueError):
                fitted[(model, name)] = None
        predictor = fitted[(model, name)]
        if predictor is None:
            return None
        return list(predictor.predict(Conditions(bandwidth, rtt, clock)).latency_s)
    return predict


def _evidence_md(config: dict[str, Any], judged: Sequence[evd.Judged],
                 shares: dict[tuple[str, str], Any], errors: Sequence[evd.PredictionError],
                 thesis_rows: Sequence[evd.ThesisRow], names: Sequence[str]) -> list[str]:
    suite = config.get("suite") or config["parameters"].get("suite")
    lines = ["", "## Evidence: every chooser with its 95% interval", "",
             *([f"Suite: `{suite}`.", ""] if suite else []), *evd.definitions()]
    for model in sorted({j.model for j in judged}):
        lines += [f"### {model}", "", "Verdict, generated from the paired intervals (yes: the "
                  "whole 95% CI of the regret difference a - b is below 0; no: above 0; "
                  "each difference in the objective's units):", "",
                  *evd.verdict(model, judged, names), ""]
        aim = [t for j in judged if j.model == model and j.edge == "rent"
               if (t := evd.target(j)) is not None]
        lines += [*aim, ""] if aim else []
        for edge in sorted({j.edge for j in judged if j.model == model}):
            mine = [j for j in judged if (j.model, j.edge) == (model, edge)]
            lines += [f"#### {model}, {edge}ed edge", "", evd.floors(mine), "",
                      *evd.regret_table(mine), "", "Paired, each predictor's chooser against "
                      "every other (all pairs in paired.csv):", "",
                      *evd.paired_table(mine, names), "",
                      "Hypervolume (per setting, both axes min-max scaled over the split "
                      "points, reference (1.1, 1.1); 1 = every split point together):", "",
                      *evd.hypervolume_table(shares[(model, edge)]), ""]
    lines += ["## Prediction error (the thesis's question ii)", "",
              "Absolute percentage error |predicted / measured - 1| of each predictor's "
              "latency: over every split point and setting (predicted from the profiles "
              "against the oracle's median, rented edge) and at the splits the strategies chose "
              "(each run's prediction against its own measurement); per split point in "
              "prediction-error.csv.", "", *evd.errors_table(errors), "",
              "## Table 7.1 beside the thesis, row by row", "", evd.THESIS_READING, "",
              *evd.thesis_table(thesis_rows)]
    return lines


def _profiles(directory: Path) -> dict[str, Profile]:
    return {p.stem: read_profile(p) for p in sorted((directory / "profiles").glob("*.json"))}


def _write_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as sink:
        if not records:
            return
        writer = csv.DictWriter(sink, list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _table_7_1_md(table: Sequence[ev.Comparison]) -> list[str]:
    by = {(c.model, c.edge, c.metric, c.comparison, c.predictor): c for c in table}
    names = [p for p in predictors() if any(c.predictor == p for c in table)]
    lines = ["| model | edge | metric | comparison | "
             + "".join(f"{p} predictor | " for p in names) + "the thesis reported |",
             "|---|---|---|---|" + "---|" * (len(names) + 1)]
    for model, edge, metric, comparison in sorted({k[:4] for k in by}):
        cells = [by.get((model, edge, metric, comparison, p)) for p in names]
        reported = next((c.thesis_pct for c in cells if c is not None), None)
        lines.append(f"| {model} | {edge} | {metric} | {comparison.replace('_vs_', ' vs ')} | "
                     + " | ".join(_pct(c.measured_pct) if c else "" for c in cells)
                     + f" | {_pct(reported) if reported is not None else ''} |")
    return lines


def _effectiveness_md(effect: Sequence[ev.Effectiveness]) -> list[str]:
    lines = ["| model | predictor | objective | settings | mean regret | worst regret | best | "
             "top 3 | top 5 | noise floor | the thesis reported (regret, top 5) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in effect:
        reported = (f"{e.thesis_mean_regret:.2%}, {_share(e.thesis_top5_share)}"
                    if e.thesis_mean_regret is not None else "")
        floor = "" if e.noise_floor is None else f"{e.noise_floor:.2%}"
        lines.append(f"| {e.model} | {e.predictor} | {e.objective} | {e.settings} | "
                     f"{e.mean_regret:.2%} | {e.worst_regret:.2%} | {_share(e.best_share)} | "
                     f"{_share(e.top3_share)} | {_share(e.top5_share)} | {floor} | {reported} |")
    lines += ["", "Noise floor: the latency regret of choosing, in each setting and repeat, the "
              "split that was fastest in that one repeat of the oracle, judged against the "
              "medians. Those medians contain that repeat, so this in-sample floor understates "
              "the noise; the held-out floor (judged on the other repeats) is in the evidence "
              "section below, and is what the paired comparisons' tie band uses."]
    return lines


def _pareto_md(pareto: Sequence[ev.ParetoCheck]) -> list[str]:
    groups: dict[tuple[str, str, str], list[bool]] = {}
    for p in pareto:
        groups.setdefault((p.model, p.edge, p.predictor), []).append(p.on_front)
    lines = ["| model | edge | predictor | CL on the measured front |", "|---|---|---|---|"]
    lines += [f"| {m} | {e} | {p} | {sum(v)} of {len(v)} settings |"
              for (m, e, p), v in sorted(groups.items())]
    return lines


def _consistency_md(checks: Sequence[ev.Consistency]) -> str:
    lines = ["", "## The oracle against the strategies' own runs", "",
             "Each strategy row is an end-to-end inference at the split it chose; its latency "
             "over the oracle's median at the same split and setting shows how far the oracle "
             "can be trusted (for a composed oracle: whether head + transfer + tail adds up).",
             "", "| model | oracle | pairs | median ratio | within 10% |", "|---|---|---|---|---|"]
    lines += [f"| {c.model} | {c.method} | {c.pairs} | {c.median_ratio:.3f} | "
              f"{_share(c.within_10pct)} |" for c in checks]
    return "\n".join(lines) + "\n"


def _self_checks_md(checks: Sequence[dict[str, Any]]) -> str:
    """What the testbed's self-checks say of the measurements: every run measures only after an
    attempt passes (a failed attempt is retried once; a second failure stops the run before it
    measures anything), so a failed attempt before a passed one is noise the retry cleared."""
    failed = [c for c in checks if not c["passed"]]
    if not checks:
        return "Self-checks: none recorded."
    if not failed:
        return f"Self-checks: all {len(checks)} passed (details in config.json)."
    what = "; ".join(sorted({
        f"{r['check']}" + (f" at {r['clock_ghz']:g} GHz" if "clock_ghz" in r else "")
        + f" off by {r['error']:+.1%} (tolerance {r['tolerance']:.0%})"
        for c in failed for r in c["checks"] if not r["passed"]}))
    return (f"Self-checks: {len(checks) - len(failed)} of {len(checks)} attempts passed. A "
            "run measures only after an attempt passes (a failed attempt is retried once; a "
            "second failure stops the run before it measures anything), so every row was "
            "measured on a testbed that had just passed: the failed attempts were noise the "
            f"retry cleared, and the measurements are trusted. Failed: {what} (details in "
            "config.json).")


def _markdown(config: dict[str, Any], rows: Sequence[dict[str, str]],
              table: Sequence[ev.Comparison], effect: Sequence[ev.Effectiveness],
              pareto: Sequence[ev.ParetoCheck], figures: Sequence[Path]) -> str:
    testbed = config.get("testbed", {})
    checks = config.get("self_checks", [])
    methods = config.get("oracle_methods", {})
    runs = config.get("runs", [])
    p = config["parameters"]
    lines = [
        "# The thesis's evaluation on this testbed", "",
        f"Models {', '.join(p['models'])}; {p['settings']} settings x {p['repeats']} repeats, "
        f"seed {p['seed']}; {len(rows)} rows in runs.csv. Testbed: {testbed.get('mode')} "
        f"({testbed.get('uplink')}; {testbed.get('clock')}; {_rtt_md(config)}; "
        f"{testbed.get('cores')}).",
        _self_checks_md(checks) + " Run time: "
        + (", ".join(f"{r['seconds'] / 60:.1f} min ({r['started']})" for r in runs) or "n/a")
        + ".", "",
        "Oracle per model: " + ", ".join(
            f"{m}: {'every split point measured end to end' if v == 'e2e' else 'composed from measured parts (head on the throttled edge, transfer of each payload size on the shaped link once per setting, tail from the cloud per-layer times)'}"  # noqa: E501
            for m, v in methods.items()) + ".", "",
        "Definitions are in `edgesplit/evaluation/tables.py`: values are medians over repeats; "
        "`X vs Y` = sum over settings of X / sum of Y - 1 (positive: X is slower or dearer); "
        "regret = oracle value of the chosen split / best oracle value - 1; best, top 3, top 5: "
        "how often the chosen split ranks there among all split points measured.", "",
        "## Table 7.1: strategies against each other", "", *_table_7_1_md(table), "",
        "The thesis's table mixes sign conventions (see `_reading` in "
        "`edgesplit/data/thesis_figures.json`); ours are as defined above.", "",
        "## Effectiveness of the predictions (section 7.1)", "", *_effectiveness_md(effect), "",
        "## CL and the measured Pareto front", "", *_pareto_md(pareto), "",
        "## Figures", "", *[f"![{f.stem}]({f.name})" for f in figures], ""]
    return "\n".join(lines)


def _rtt_md(config: dict[str, Any]) -> str:
    """The round trip: the thesis suite's one, or the wide suite's range over its settings."""
    rtts = sorted({float(d.get("rtt_ms", config["parameters"]["rtt_ms"]))
                   for d in config["settings"]})
    return (f"RTT {rtts[0]:g} ms" if len(rtts) == 1 else
            f"RTT {rtts[0]:g} to {rtts[-1]:g} ms by setting")


def draw_figures(out: Path, config: dict[str, Any], s: ev.Strategies, o: ev.Oracle,
                 profiles: dict[str, Profile]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    settings = {d["index"]: d for d in config["settings"]}
    rtt = float(config["parameters"]["rtt_ms"])
    figures: list[Path] = []
    for model, edge in sorted({(k[0], k[1]) for k in s.latency}):
        figures.append(_bars(out, model, edge, s, o, settings))
    for model in sorted({k[0] for k in o.latency}):
        figures.append(_pareto(out, model, s, o, settings))
    if profiles:
        figures.append(_slopes(out, profiles))
        for model in sorted(set(profiles) & {k[0] for k in o.latency}):
            figures.append(_predicted_vs_measured(out, model, profiles, o, settings, rtt))
        focus = "alexnet" if "alexnet" in profiles else sorted(profiles)[0]
        figures.append(_clock_choices(out, focus, profiles, rtt))
        figures.append(_weights(out, focus, profiles, rtt))
    return figures


def _setting_label(setting: dict[str, Any]) -> str:
    return f"{setting['bandwidth_kbps'] / 1000:g} Mbit/s\n{setting['clock_ghz']:g} GHz"


def _median_setting(settings: dict[int, dict[str, Any]], available: set[int]) -> int:
    ordered = sorted(available, key=lambda i: (settings[i]["bandwidth_kbps"], i))
    return ordered[len(ordered) // 2]


def _plain(axis: Any) -> None:
    """Plain numbers on a log axis at 1, 2 and 5 of each decade (20, 50, 100, not 2x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _spread(points: Sequence[tuple[float, float]], x_range: tuple[float, float],
            y_range: tuple[float, float]) -> list[int]:
    """Indices of the points to label so that no two labels sit on each other: a point is
    skipped when it is within 4% of the (log) x range and 4% of the y range of a labelled one."""
    import math

    x_span = max(math.log10(x_range[1] / x_range[0]), 1e-9)
    y_span = max(y_range[1] - y_range[0], 1e-12)
    kept: list[int] = []
    for i, (x, y) in enumerate(points):
        if all(abs(math.log10(x / points[j][0])) / x_span > 0.04
               or abs(y - points[j][1]) / y_span > 0.04 for j in kept):
            kept.append(i)
    return kept


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(out: Path, model: str, edge: str, s: ev.Strategies, o: ev.Oracle,
          settings: dict[int, dict[str, Any]]) -> Path:
    """Figures 7.2 to 7.8: per-setting latency and cost of every strategy (OC, OL and CL in
    the thesis), one column per predictor."""
    import matplotlib.pyplot as plt
    import numpy as np

    indices = sorted({k[4] for k in s.latency if k[:2] == (model, edge)})
    width = max(10.0, 1.5 * len(indices))
    labels, names = _measured(s)
    bar = 0.8 / len(labels)
    fig, axes = plt.subplots(2, len(names), figsize=(width * len(names) / 2, 7.5), sharex=True,
                             squeeze=False)
    x = np.arange(len(indices))
    for col, predictor in enumerate(names):
        for row, (values, unit, scale) in enumerate(((s.latency, "latency (ms)", 1e3),
                                                     (s.cost, "cost per inference (µ$)", 1e6))):
            ax = axes[row][col]
            for i, strategy in enumerate(labels):
                heights = [values.get((model, edge, predictor, strategy, j), np.nan) * scale
                           for j in indices]
                ax.bar(x + (i - (len(labels) - 1) / 2) * bar, heights, bar, label=strategy,
                       color=_colour(strategy))
            if row == 0:
                best = [min(o.latency[(model, edge, j)].values()) * 1e3
                        if (model, edge, j) in o.latency else np.nan for j in indices]
                ax.plot(x, best, "k_", markersize=14, mew=2, label="best measured split")
            ax.set_ylabel(unit)
            ax.set_title(f"{predictor} predictor", fontsize=10)
            ax.legend(fontsize=7, ncol=4, loc="upper right")
            ax.set_xticks(x, [_setting_label(settings[j]) for j in indices], fontsize=7)
            ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
        axes[1][col].set_xlabel("setting (uplink bandwidth, edge clock)")
    fig.suptitle(f"{model}, {edge}ed edge, w = 0.5: measured median per setting", fontsize=11)
    return _save(fig, out / f"bars-{model}-{edge}.png")


def _pareto(out: Path, model: str, s: ev.Strategies, o: ev.Oracle,
            settings: dict[int, dict[str, Any]]) -> Path:
    """Figure 7.9: measured latency and cost of every split point in the median setting."""
    import matplotlib.pyplot as plt

    from edgesplit.core.policies import pareto_front

    setting = _median_setting(settings, {k[2] for k in o.latency if k[0] == model})
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, edge in zip(axes, ("own", "rent"), strict=True):
        key = (model, edge, setting)
        sps = sorted(o.latency[key])
        lat = [o.latency[key][sp] * 1e3 for sp in sps]
        cost = [o.cost[key][sp] * 1e6 for sp in sps]
        ax.scatter(lat, cost, color="grey", s=18, label="split points (measured)")
        front = pareto_front(lat, cost)
        ax.plot([lat[i] for i in front], [cost[i] for i in front], "o-", color="black",
                label="measured Pareto front")
        labelled = _spread([(lat[i], cost[i]) for i in front], (min(lat), max(lat)),
                           (min(cost), max(cost)))
        for i in (front[k] for k in labelled):
            ax.annotate(str(sps[i]), (lat[i], cost[i]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        for strategy, marker in zip(_measured(s)[0], MARKERS, strict=False):
            chosen = s.split.get((model, edge, "profile", strategy, setting))
            if chosen is not None:
                i = sps.index(chosen)
                ax.scatter([lat[i]], [cost[i]], s=110, marker=marker, facecolors="none",
                           edgecolors=_colour(strategy), linewidths=2,
                           label=f"{strategy} (profile predictor): split {chosen}")
        ax.set_xscale("log")
        _plain(ax.xaxis)
        ax.set_xlabel("measured latency (ms, log scale)")
        ax.set_ylabel("measured cost per inference (µ$)")
        ax.set_title(f"{edge}ed edge", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    label = _setting_label(settings[setting]).replace("\n", ", ")
    fig.suptitle(f"{model}: every split point, setting {setting} ({label})", fontsize=11)
    return _save(fig, out / f"pareto-{model}.png")


def _slopes(out: Path, profiles: dict[str, Profile]) -> Path:
    """Figure 4.1: normalised slopes of every calibrated model and the fitted power law."""
    import matplotlib.pyplot as plt
    import numpy as np

    fitted = fit_predictor("thesis", next(iter(profiles.values())),
                           peers=list(profiles.values())[1:])
    assert isinstance(fitted, ThesisPredictor)  # this figure is the thesis predictor's law
    fig, ax = plt.subplots(figsize=(7, 5))
    for model, profile in profiles.items():
        points = sorted((c.clock_ghz, c.latency_s / profile.n_layers)
                        for c in profile.calibration)
        slopes = [v for _, v in points]
        low, high = min(slopes), max(slopes)
        ax.scatter([c for c, _ in points],
                   [(v - low) / (high - low) if high > low else 0.0 for v in slopes],
                   label=model, s=30)
    clocks = np.linspace(0.55, 1.55, 100)
    ax.plot(clocks, [fitted.law_(c) for c in clocks], color="black",
            label=f"power law {fitted.law_.a:.3g} x CS^{fitted.law_.b:.3g}")
    ax.set_xlabel("clock speed CS (GHz)")
    ax.set_ylabel("normalised slope (0: fastest, 1: slowest)")
    ax.set_title("Normalised edge slopes measured on the testbed, with the fitted law",
                 fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out / "slopes.png")


def _predicted_vs_measured(out: Path, model: str, profiles: dict[str, Profile], o: ev.Oracle,
                           settings: dict[int, dict[str, Any]], rtt: float) -> Path:
    """Figure 4.3: predicted (every predictor) against measured latency per split point."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    setting = _median_setting(settings, {k[2] for k in o.latency if k[0] == model})
    st = settings[setting]
    rtt = float(st.get("rtt_ms", rtt))  # the wide suite's settings each have their own
    conditions = Conditions(st["bandwidth_kbps"], rtt, st["clock_ghz"])
    profile = profiles[model]
    peers = [p for m, p in profiles.items() if m != model]
    measured = o.latency[(model, "rent", setting)]
    sps = sorted(measured)
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot(sps, [measured[sp] * 1e3 for sp in sps], "o-", color="black",
            label="measured (median)")
    for i, name in enumerate(predictors()):
        predicted = fit_predictor(name, profile, peers=peers).predict(conditions).latency_s
        colour = ("tab:orange", "tab:blue", "tab:purple", "tab:brown")[i % 4]
        ax.plot(sps, [predicted[sp] * 1e3 for sp in sps], "--", color=colour,
                label=f"predicted, {name} predictor")
    best = min(sps, key=lambda sp: measured[sp])
    ax.scatter([best], [measured[best] * 1e3], s=140, facecolors="none", edgecolors="red",
               linewidths=2, label=f"best measured: split {best}", zorder=3)
    ax.set_yscale("log")
    _plain(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # split points are whole numbers
    ax.set_xlabel("split point (layers run on the edge)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(f"{model}: {st['bandwidth_kbps'] / 1000:g} Mbit/s, {st['clock_ghz']:g} GHz, "
                 f"RTT {rtt:g} ms", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out / f"predicted-vs-measured-{model}.png")


def _planner(model: str, profiles: dict[str, Profile], strategy: Strategy | str, weight: float,
             edge: str = "rent") -> Planner:
    return build_planner(model, profiles[model], Objective(strategy, weight, edge))


def _clock_choices(out: Path, model: str, profiles: dict[str, Profile], rtt: float) -> Path:
    """Figure 4.5: the split each strategy chooses as the clock changes, at three bandwidths."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    clocks = np.round(np.arange(0.6, 1.501, 0.05), 2)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5), sharey=True)
    for ax, bandwidth in zip(axes, (7200, 20_000, 50_000), strict=True):
        for i, (name, strategy) in enumerate(strategies().items()):
            planner = _planner(model, profiles, strategy, WEIGHT)
            chosen = [planner.plan(Conditions(bandwidth, rtt, float(c))).split_point
                      for c in clocks]
            offset = 0.2 * (i - (len(strategies()) - 1) / 2)
            ax.plot(clocks, np.array(chosen) + offset, "o-", color=_colour(name),
                    label=name, markersize=3)
        ax.set_title(f"{bandwidth / 1000:g} Mbit/s", fontsize=10)
        ax.set_xlabel("edge clock speed (GHz)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("chosen split point")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{model}, rented edge, profile predictor: the split chosen as the clock "
                 "changes (lines offset by 0.2 to show overlaps)", fontsize=11)
    return _save(fig, out / "clock-choices.png")


def _weights(out: Path, model: str, profiles: dict[str, Profile], rtt: float) -> Path:
    """Figure 7.1: predicted latency per split point and the choices at four weights."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    conditions = Conditions(7200, rtt, 1.5)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, sharey=True)
    for ax, weight in zip(axes.flat, (0.0, 0.33, 0.67, 1.0), strict=True):
        plan = _planner(model, profiles, "rank", weight).plan(conditions)
        latency = [v * 1e3 for v in plan.latency_s]
        ax.plot(range(len(latency)), latency, "-", color="grey", label="predicted latency")
        fastest = _planner(model, profiles, "latency", weight).plan(conditions).split_point
        cheapest = _planner(model, profiles, "cost", weight).plan(conditions).split_point
        for sp, strategy, what, size in ((cheapest, Strategy.COST, "cheapest", 150),
                                         (fastest, Strategy.LATENCY, "fastest", 110),
                                         (plan.split_point, Strategy.RANK, "rank", 60)):
            colour, label = THESIS_COLOURS[strategy], f"{what} ({THESIS_LABELS[strategy]})"
            ax.scatter([sp], [latency[sp]], color=colour, s=size, zorder=3,
                       label=f"{label}: split {sp}")
        ax.set_title(f"w = {weight:g}", fontsize=10)
        ax.set_yscale("log")
        _plain(ax.yaxis)
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("split point")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted latency (ms, log)")
    fig.suptitle(f"{model}, rented edge, 7.2 Mbit/s, 1.5 GHz: choices by weight", fontsize=11)
    return _save(fig, out / "weights.png")
