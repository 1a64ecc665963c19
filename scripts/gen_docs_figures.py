"""Write the figures that the docs take from committed data into the docs' marked regions.

A region is ``<!-- generated: KIND FOLDER ARGS -->text<!-- /generated -->`` anywhere in README.md
or docs/*.md (inline or around a table; one quoted in backticks is left alone). KIND names a
function below that computes the text from the committed run in ``docs/results/FOLDER/``
(``experiment``, ``experiment-wide``: ``runs.csv``, ``config.json``, ``profiles/``, ``report/``;
``dynamic``: its ``config.json`` and ``report/summary.csv``). Run
``python scripts/gen_docs_figures.py`` after re-running an experiment and its report; ``--check``
changes nothing and exits 1 naming every stale file (``tests/test_docs.py`` makes the same
check), so a number in the docs cannot drift from its source.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
REGION = re.compile(r"(?<!`)(<!-- generated: ([^>]*?) -->)(.*?)(<!-- /generated -->)", re.DOTALL)
NAMES = {"alexnet": "AlexNet", "vgg16": "VGG16", "mnist_cnn": "MNIST CNN",
         "resnet18": "ResNet-18"}
OBJECTIVES = {"latency": "OL", "cost": "OC", "weighted": "CL"}
BASELINES = ("compressed-input (best)", "all-edge", "all-cloud", "best-fixed")
REPLAYED = ("profile+raw", "profile+codecs")  # edgesplit.evaluation.replay's choosers


def pct(value: float, digits: int = 2) -> str:
    return f"{value * 100:.{digits}f}%"


class Results:
    """The committed runs' files, each read once."""

    def __init__(self, root: Path = RESULTS) -> None:
        self.root = root

    @cache  # noqa: B019 - one Results per run of the script, read once
    def csv(self, folder: str, name: str) -> list[dict[str, str]]:
        with (self.root / folder / name).open(newline="") as f:
            return list(csv.DictReader(f))

    @cache  # noqa: B019 - as above
    def config(self, folder: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.root / folder / "config.json").read_text())
        return result


def _interval(row: dict[str, str], key: str, scale: float = 100, unit: str = "%") -> str:
    value, low, high = (float(row[f"{key}_{p}"]) * scale for p in ("value", "low", "high"))
    digits = 2 if unit == "%" else 3
    return f"{value:.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}]"


def _span(values: list[float]) -> str:
    return f"{min(values):g}" if min(values) == max(values) else \
        f"{min(values):g} to {max(values):g}"


def counts(res: Results, folder: str) -> str:
    """How much a static run measured, in how long and in what conditions."""
    rows, config = res.csv(folder, "runs.csv"), res.config(folder)
    oracle = sum(r["strategy"] == "oracle" for r in rows) // 2  # own and rent: one measurement
    compressed = sum(r["strategy"] == "compressed-input" for r in rows) // 2
    measured = oracle + compressed + sum(r["strategy"] not in ("oracle", "compressed-input")
                                         for r in rows)
    parts = sum(r["method"] == "parts" for r in rows) // 2
    settings = config["settings"]
    bw = [s["bandwidth_kbps"] / 1000 for s in settings]
    clocks = [s["clock_ghz"] for s in settings]
    rtts = [s.get("rtt_ms", config["parameters"]["rtt_ms"]) for s in settings]
    minutes = sum(r["seconds"] for r in config["runs"]) / 60
    checks = [c for s in config["self_checks"] for c in s["checks"]]
    models = ", ".join(NAMES.get(m, m) for m in config["parameters"]["models"])
    rounds = len({r["repeat"] for r in rows})
    return (f"{measured:,} measured inferences ({measured - parts:,} end to end, {parts:,} "
            f"split points composed from measured parts) of {models} in {minutes:.1f} minutes; "
            f"{len(settings)} settings of {min(bw):g} to {max(bw):g} Mbit/s, "
            f"{min(clocks):g} to {max(clocks):g} GHz and a round trip of {_span(rtts)} ms, "
            f"{rounds} rounds; the self-checks within "
            f"{max(abs(c['error']) for c in checks) * 100:.1f}%")


def evidence(res: Results, folder: str, model: str, edge: str, objective: str) -> str:
    """Each predictor's chooser and each baseline for one objective: mean and median regret."""
    rows = {r["chooser"]: r for r in res.csv(folder, "report/regrets.csv")
            if (r["model"], r["edge"], r["objective"]) == (model, edge, objective)}
    label = OBJECTIVES[objective]
    wanted = [f"{p} {label}" for p in ("profile", "thesis", "neurosurgeon", *REPLAYED)]
    wanted += BASELINES
    unit, scale = ("", 1.0) if objective == "weighted" else ("%", 100.0)
    lines = ["| chooser | mean regret [95% CI] | median [95% CI] |", "|---|---|---|"]
    for chooser in (c for c in wanted if c in rows):
        note = f" ({rows[chooser]['note']})" if rows[chooser]["note"] else ""
        lines.append(f"| {chooser}{note} | {_interval(rows[chooser], 'mean', scale, unit)} | "
                     f"{_interval(rows[chooser], 'median', scale, unit)} |")
    return "\n".join(lines)


def headline(res: Results, folder: str, edge: str) -> str:
    """Per model: each predictor's OL latency regret and the best baseline's, mean [95% CI]."""
    rows = [r for r in res.csv(folder, "report/regrets.csv")
            if (r["edge"], r["objective"]) == (edge, "latency")]
    predictors = ["profile", "thesis", "neurosurgeon"]
    predictors += [p for p in REPLAYED if any(r["chooser"] == f"{p} OL" for r in rows)]
    head = [f"`{p}`" + (" (replayed)" if p in REPLAYED else "") for p in predictors]
    lines = [f"| model | {' | '.join(head)} | the best baseline |",
             "|---|" + "---|" * (len(predictors) + 1)]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["chooser"]: r for r in rows if r["model"] == model}
        cells = [_interval(mine[f"{p} OL"], "mean") if f"{p} OL" in mine else ""
                 for p in predictors]
        best = min((mine[b] for b in BASELINES if b in mine),
                   key=lambda r: float(r["mean_value"]))
        name = best["chooser"] + (f" ({best['note']})" if best["note"] else "")
        lines.append(f"| {NAMES.get(model, model)} | {' | '.join(cells)} | "
                     f"{name}: {_interval(best, 'mean')} |")
    return "\n".join(lines)


def floor(res: Results, folder: str, model: str, edge: str, objective: str) -> str:
    """The held-out noise floor, with the in-sample one beside it."""
    for r in res.csv(folder, "report/noise-floor.csv"):
        if (r["model"], r["edge"], r["objective"]) == (model, edge, objective):
            return (f"{_interval(r, 'held_out')} held out (in-sample "
                    f"{float(r['in_sample_value']) * 100:.2f}%)")
    raise KeyError(f"no noise floor for {folder} {model} {edge} {objective}")


def prederr(res: Results, folder: str) -> str:
    """Median absolute prediction error at the chosen splits and over every split point."""
    found = {(r["model"], r["predictor"], r["where"]): r
             for r in res.csv(folder, "report/prediction-error.csv")}
    lines = ["| model | predictor | at the chosen splits: median [IQR] | every split point |",
             "|---|---|---|---|"]
    for (model, predictor, where), r in sorted(found.items()):
        if where != "chosen":
            continue
        every = found.get((model, predictor, "every split"))
        rest = pct(float(every["median"]), 1) if every else ""
        lines.append(f"| {NAMES.get(model, model)} | {predictor} | {pct(float(r['median']), 1)} "
                     f"[{pct(float(r['q25']), 1)}, {pct(float(r['q75']), 1)}] | {rest} |")
    return "\n".join(lines)


def table71(res: Results, folder: str, edge: str, predictor: str) -> str:
    """Table 7.1 for one edge and predictor, with the thesis's AlexNet row."""
    columns = [("cost", "CL_vs_OC"), ("latency", "CL_vs_OC"), ("cost", "CL_vs_OL"),
               ("latency", "CL_vs_OL"), ("cost", "OC_vs_OL"), ("latency", "OL_vs_OC")]
    cells = {(r["model"], r["metric"], r["comparison"]): (r["measured_pct"], r["thesis_pct"])
             for r in res.csv(folder, "report/table-7-1.csv")
             if (r["edge"], r["predictor"]) == (edge, predictor)}
    head = " | ".join(f"{c.replace('_vs_', ' vs ')}, {m}" for m, c in columns)
    lines = [f"| model | {head} |", "|---|" + "---|" * len(columns)]
    for model in dict.fromkeys(m for m, _, _ in cells):
        lines.append(f"| {NAMES.get(model, model)} | " + " | ".join(
            f"{float(cells[(model, m, c)][0]):+.2f}%" for m, c in columns) + " |")
    lines.append("| the thesis, AlexNet | " + " | ".join(
        f"{float(cells[('alexnet', m, c)][1]):+.2f}%" for m, c in columns) + " |")
    return "\n".join(lines)


def dynamic(res: Results, folder: str) -> str:
    """Per trace: edgesplit (replan) against the oracle in hindsight and plan-once, its reaction,
    flapping and losses, and every chooser's mean latency."""
    rows = res.csv(folder, "report/summary.csv")
    choosers = ("replan", "plan-once", "every", "interval", "hindsight")
    lines = ["| trace | edgesplit vs hindsight | vs plan-once | reaction (inferences) | "
             "flaps/min | lost | mean ms: " + " / ".join(choosers) + " |",
             "|---|---|---|---|---|---|---|"]
    by = {(r["trace"], r["strategy"]): r for r in rows}
    for trace in dict.fromkeys(r["trace"] for r in rows):
        mine, once = by[(trace, "replan")], by[(trace, "plan-once")]
        versus = float(mine["mean_latency_s"]) / float(once["mean_latency_s"]) - 1
        means = " / ".join(f"{float(by[(trace, c)]['mean_latency_s']) * 1000:.1f}"
                           for c in choosers if (trace, c) in by)
        lines.append(f"| {trace} | {float(mine['latency_regret']) * 100:+.0f}% | "
                     f"{versus * 100:+.0f}% | {float(mine['reaction_inferences']):.1f} | "
                     f"{float(mine['flaps_per_min']):.1f} | {int(float(mine['lost']))} | "
                     f"{means} |")
    return "\n".join(lines)


def dynamic_minutes(res: Results, folder: str) -> str:
    """How long the dynamic run took."""
    return f"{res.config(folder)['seconds'] / 60:.1f} minutes"


def forward_ms(res: Results, folder: str, model: str) -> str:
    """A whole forward on one full core of the testbed's machine (its committed profile)."""
    profile = json.loads((res.root / folder / "profiles" / f"{model}.json").read_text())
    ms = profile["forward_s"] * 1000
    return f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def _best_splits(res: Results, folder: str, model: str) -> list[int]:
    """The split point with the least median oracle latency in each setting (rented edge)."""
    by: dict[tuple[str, int], list[float]] = {}
    for r in res.csv(folder, "runs.csv"):
        if (r["model"], r["edge"], r["strategy"]) == (model, "rent", "oracle"):
            by.setdefault((r["setting"], int(r["split_point"])), []).append(float(r["latency_s"]))
    best: dict[str, tuple[float, int]] = {}
    for (setting, split), latencies in by.items():
        best[setting] = min(best.get(setting, (float("inf"), -1)), (median(latencies), split))
    return [split for _, split in best.values()]


def pairs(res: Results, folder: str, model: str, predictor: str) -> str:
    """``predictor``'s OL chooser paired with every other chooser on the rented edge's latency
    regret: the mean difference [95% CI] and its wins, ties and losses over the settings."""
    chooser = f"{predictor} OL"
    lines = ["| against | its regret minus theirs, mean [95% CI] | wins / ties / losses |",
             "|---|---|---|"]
    for r in res.csv(folder, "report/paired.csv"):
        if (r["model"], r["edge"], r["objective"]) != (model, "rent", "latency") or \
                chooser not in (r["a"], r["b"]) or "oracle" in (r["a"], r["b"]) or \
                BASELINES[0] in (r["a"], r["b"]):
            continue
        sign, other = (1, r["b"]) if r["a"] == chooser else (-1, r["a"])
        value, low, high = (sign * float(r[f"difference_{p}"]) * 100
                            for p in ("value", "low", "high"))
        wins, losses = (r["wins"], r["losses"]) if sign == 1 else (r["losses"], r["wins"])
        low, high = min(low, high), max(low, high)
        lines.append(f"| {other} | {value:+.2f} points [{low:+.2f}, {high:+.2f}] | "
                     f"{wins} / {r['ties']} / {losses} |")
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def targets(res: Results, folder: str, predictor: str = "profile") -> str:
    """Issue 16's targets for ``predictor``'s OL chooser on the rented edge, per model: where
    the best split moves, mean regret <= 3%, its interval clear of every baseline's, median
    absolute prediction error <= 10% at the chosen splits."""
    chooser = f"{predictor} OL"
    rows = [r for r in res.csv(folder, "report/regrets.csv")
            if (r["edge"], r["objective"]) == ("rent", "latency")]
    errors = {(r["model"], r["predictor"], r["where"]): r
              for r in res.csv(folder, "report/prediction-error.csv")}
    lines = [f"| model | the best split moves (splits) | `{chooser}` mean regret <= 3% | its "
             "95% CI clear of every baseline's (the ones it is not, with their lower ends) | "
             "median absolute prediction error at the chosen splits <= 10% |",
             "|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = {r["chooser"]: r for r in rows if r["model"] == model}
        own = mine.get(chooser)
        if own is None:
            continue
        splits = sorted(set(_best_splits(res, folder, model)))
        high = float(own["mean_high"])
        skip = (chooser, "oracle", BASELINES[0])  # (best) repeats one codec's row
        above = [(name, float(r["mean_low"])) for name, r in mine.items()
                 if name not in skip and r["note"] != "replayed"
                 and not high < float(r["mean_low"])]
        error = float(errors[(model, predictor, "chosen")]["median"])
        clear = (f"met (upper end {high * 100:.2f}%)" if not above else
                 f"missed (upper end {high * 100:.2f}%; " + ", ".join(
                     f"{n}{' ' + mine[n]['note'] if mine[n]['note'] else ''} {low * 100:.2f}%"
                     for n, low in above) + ")")
        lines.append(
            f"| {NAMES.get(model, model)} | {'yes' if len(splits) > 1 else 'no'} "
            f"({', '.join(map(str, splits))}) | {_met(float(own['mean_value']) <= 0.03)} "
            f"({_interval(own, 'mean')}) | {clear} | {_met(error <= 0.10)} ({pct(error, 1)}) |")
    return "\n".join(lines)


KINDS: dict[str, Callable[..., str]] = {
    "counts": counts, "evidence": evidence, "headline": headline, "floor": floor,
    "prederr": prederr, "dynamic": dynamic, "dynamic_minutes": dynamic_minutes,
    "table71": table71, "forward_ms": forward_ms, "targets": targets,
    "pairs": pairs,
}


def render(text: str, res: Results) -> str:
    """The text with every generated region recomputed."""
    def fill(match: re.Match[str]) -> str:
        kind, *args = match.group(2).split()
        if kind not in KINDS:
            raise SystemExit(f"unknown generated region {kind!r}: one of {', '.join(KINDS)}")
        body = KINDS[kind](res, *args)
        if "\n" in body:  # a table stands on lines of its own
            body = f"\n{body}\n"
        return f"{match.group(1)}{body}{match.group(4)}"
    return REGION.sub(fill, text)


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a region differs from its source")
    args = parser.parse_args(argv)
    res, stale = Results(), []
    for path in doc_files():
        text = path.read_text()
        new = render(text, res)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    verb = "stale (run python scripts/gen_docs_figures.py)" if args.check else "rewritten"
    for path in stale:
        print(f"{path}: {verb}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
