"""Write the figures that the docs take from committed data into the docs' marked regions.

A region is ``<!-- generated: KIND ARGS -->text<!-- /generated -->`` anywhere in README.md or
docs/*.md (inline or around a table; one quoted in backticks is left alone). KIND names a
function below that computes the text from the committed experiment
(``docs/results/experiment/``: ``runs.csv``, ``config.json``, ``profiles/``, ``report/``).
Run ``python scripts/gen_docs_figures.py`` after re-running the experiment; ``--check`` changes
nothing and exits 1 naming every stale file (``tests/test_docs.py`` makes the same check), so
a number in the docs cannot drift from its source.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "docs" / "results" / "experiment"
REGION = re.compile(r"(?<!`)(<!-- generated: ([^>]*?) -->)(.*?)(<!-- /generated -->)", re.DOTALL)
NAMES = {"alexnet": "AlexNet", "vgg16": "VGG16", "mnist_cnn": "MNIST CNN"}


def pct(value: float, digits: int = 2) -> str:
    return f"{value * 100:.{digits}f}%"


class Experiment:
    """The committed experiment's files, read once."""

    def __init__(self, folder: Path = EXPERIMENT) -> None:
        self.folder = folder

    def _csv(self, name: str) -> list[dict[str, str]]:
        with (self.folder / name).open(newline="") as f:
            return list(csv.DictReader(f))

    @cached_property
    def rows(self) -> list[dict[str, str]]:
        return self._csv("runs.csv")

    @cached_property
    def config(self) -> dict[str, object]:
        result: dict[str, object] = json.loads((self.folder / "config.json").read_text())
        return result

    def oracle_medians(self, model: str) -> dict[tuple[int, int], float]:
        """(setting, split point) -> median measured latency over the repeats."""
        seen: dict[tuple[int, int], list[float]] = defaultdict(list)
        for r in self.rows:  # oracle rows come twice (own and rent edge): one copy is enough
            if r["model"] == model and r["strategy"] == "oracle" and r["edge"] == "own":
                seen[(int(r["setting"]), int(r["split_point"]))].append(float(r["latency_s"]))
        return {key: statistics.median(v) for key, v in seen.items()}

    def choices(self, model: str, predictor: str, strategy: str = "OL") -> dict[int, int]:
        """setting -> the split the strategy chose (the rented edge's runs)."""
        return {int(r["setting"]): int(r["split_point"]) for r in self.rows
                if r["model"] == model and r["predictor"] == predictor
                and r["strategy"] == strategy and r["edge"] == "rent"}

    @property
    def settings(self) -> int:
        return len(self.config["settings"])  # type: ignore[arg-type]


def counts(exp: Experiment) -> str:
    """How much the experiment measured, and in what conditions."""
    rows = exp.rows
    oracle = sum(r["strategy"] == "oracle" for r in rows) // 2
    measured = oracle + sum(r["strategy"] != "oracle" for r in rows)
    parts = sum(r["method"] == "parts" for r in rows) // 2
    repeats = {r["repeat"] for r in rows}
    part_units = len({(r["setting"], r["repeat"]) for r in rows if r["method"] == "parts"})
    settings: list[dict[str, float]] = exp.config["settings"]  # type: ignore[assignment]
    bw = [s["bandwidth_kbps"] / 1000 for s in settings]
    clocks = [s["clock_ghz"] for s in settings]
    runs: list[dict[str, float]] = exp.config["runs"]  # type: ignore[assignment]
    checks = [c for s in exp.config["self_checks"] for c in s["checks"]]  # type: ignore[attr-defined]
    worst = max(abs(c["error"]) for c in checks)
    rtt = exp.config["parameters"]["rtt_ms"]  # type: ignore[index]
    return (f"{measured - parts + part_units:,} units, {measured:,} measured inferences "
            f"({measured - parts:,} end to end and {parts:,} VGG16 split points composed from "
            f"measured parts; `runs.csv` has {len(rows):,} rows because each oracle measurement "
            f"is written twice, priced for an owned and a rented edge) in "
            f"{sum(r['seconds'] for r in runs) / 60:.1f} minutes (both self-checks within "
            f"{worst * 100:.1f}%; {len(settings)} settings of {min(bw):g} to {max(bw):g} Mbit/s "
            f"and {min(clocks):g} to {max(clocks):g} GHz, RTT "
            f"{rtt:g} ms, "
            f"{len(repeats)} repeats)")


def effectiveness(exp: Experiment) -> str:
    """Each predictor's regret when choosing the fastest split, as a table."""
    lines = ["| model | predictor | mean regret | worst | best | top 3 | top 5 | noise floor "
             "| the thesis reported |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [r for r in exp._csv("report/effectiveness.csv") if r["objective"] == "latency"]
    for r in sorted(rows, key=lambda r: (list(NAMES).index(r["model"]), r["predictor"])):
        thesis = pct(float(r["thesis_mean_regret"])) if r["thesis_mean_regret"] else ""
        if thesis and r["model"] == "mnist_cnn":
            thesis += f" (top 5: {pct(float(r['thesis_top5_share']))})"
        shares = [f"{float(r[k]) * 100:.0f}%" for k in ("best_share", "top3_share", "top5_share")]
        mean = pct(float(r["mean_regret"]))
        lines.append(f"| {NAMES[r['model']]} | {r['predictor']} | "
                     f"{f'**{mean}**' if r['predictor'] == 'profile' else mean} | "
                     f"{pct(float(r['worst_regret']))} | {' | '.join(shares)} | "
                     f"{pct(float(r['noise_floor']))} | {thesis} |")
    return "\n".join(lines)


def regret(exp: Experiment, model: str, predictor: str) -> str:
    """One predictor's mean regret choosing the fastest split."""
    for r in exp._csv("report/effectiveness.csv"):
        if (r["model"], r["predictor"], r["objective"]) == (model, predictor, "latency"):
            return pct(float(r["mean_regret"]))
    raise KeyError(f"no regret for {model} {predictor}")


def table71(exp: Experiment, edge: str, predictor: str) -> str:
    """Table 7.1 for one edge and predictor, with the thesis's AlexNet row."""
    columns = [("cost", "CL_vs_OC"), ("latency", "CL_vs_OC"), ("cost", "CL_vs_OL"),
               ("latency", "CL_vs_OL"), ("cost", "OC_vs_OL"), ("latency", "OL_vs_OC")]
    cells = {(r["model"], r["metric"], r["comparison"]): (r["measured_pct"], r["thesis_pct"])
             for r in exp._csv("report/table-7-1.csv")
             if (r["edge"], r["predictor"]) == (edge, predictor)}
    head = " | ".join(f"{c.replace('_vs_', ' vs ')}, {m}" for m, c in columns)
    lines = [f"| model | {head} |", "|---|" + "---|" * len(columns)]
    for model, name in NAMES.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{float(cells[(model, m, c)][0]):+.2f}%" for m, c in columns) + " |")
    lines.append("| the thesis, AlexNet | " + " | ".join(
        f"{float(cells[('alexnet', m, c)][1]):+.2f}%" for m, c in columns) + " |")
    return "\n".join(lines)


def table71_size(exp: Experiment, model: str, edge: str, predictor: str, metric: str,
                 comparison: str, column: str) -> str:
    """One cell of Table 7.1 as a rounded magnitude ("80%"), ours or the thesis's."""
    for r in exp._csv("report/table-7-1.csv"):
        if (r["model"], r["edge"], r["predictor"], r["metric"], r["comparison"]) == (
                model, edge, predictor, metric, comparison):
            return f"{abs(float(r[f'{column}_pct'])):.0f}%"
    raise KeyError(f"no Table 7.1 cell {model} {edge} {predictor} {metric} {comparison}")


def pareto(exp: Experiment, edge: str, predictor: str) -> str:
    """In how many settings CL's choice lay on the measured front."""
    on: dict[str, int] = defaultdict(int)
    for r in exp._csv("report/pareto.csv"):
        if (r["edge"], r["predictor"]) == (edge, predictor):
            on[r["model"]] += r["on_front"] == "True"
    return ", ".join(f"{NAMES[m]} {on[m]} of {exp.settings}" for m in NAMES)


def forward_ms(exp: Experiment, model: str) -> str:
    """A whole forward on one full core of the testbed's machine (its committed profile)."""
    profile = json.loads((exp.folder / "profiles" / f"{model}.json").read_text())
    ms = profile["forward_s"] * 1000
    return f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def head_to_head(exp: Experiment, model: str, a: str, b: str) -> str:
    """Per setting, split a's median against split b's."""
    med = exp.oracle_medians(model)
    n = exp.settings
    won = sum(med[(s, int(a))] < med[(s, int(b))] for s in range(n))
    lost = sum(med[(s, int(a))] > med[(s, int(b))] for s in range(n))
    return f"beat {b}'s in {won} settings, lost in {lost} and tied in {n - won - lost}"


def median_range(exp: Experiment, model: str, first: str, last: str) -> str:
    """The lowest and highest setting median of splits first..last."""
    values = [v for (_, k), v in exp.oracle_medians(model).items()
              if int(first) <= k <= int(last)]
    return f"{min(values) * 1000:.1f} to {max(values) * 1000:.1f} ms"


def worst_gap(exp: Experiment, model: str, a: str, b: str) -> str:
    """The setting where split a's median lost most to split b's."""
    med = exp.oracle_medians(model)
    clocks = {int(s["index"]): s["clock_ghz"]
              for s in exp.config["settings"]}  # type: ignore[attr-defined]
    worst = max(range(exp.settings), key=lambda s: med[(s, int(a))] - med[(s, int(b))])
    return (f"{med[(worst, int(a))] * 1000:.1f} against {med[(worst, int(b))] * 1000:.1f} ms "
            f"at {clocks[worst]:g} GHz")


def fixed_regrets(exp: Experiment, model: str, first: str, last: str) -> str:
    """The range of mean regrets of always choosing one split, for splits first..last."""
    med = exp.oracle_medians(model)
    n = exp.settings
    best = {s: min(v for (t, _), v in med.items() if t == s) for s in range(n)}
    means = [statistics.mean(med[(s, k)] / best[s] - 1 for s in range(n))
             for k in range(int(first), int(last) + 1)]
    return f"{pct(min(means), 1)} to {pct(max(means), 1)}"


def chose_where_faster(exp: Experiment, model: str, predictor: str, chosen: str,
                       faster: str) -> str:
    """How often the predictor chose one split, and in how many of those another was faster."""
    med = exp.oracle_medians(model)
    picks = [s for s, k in exp.choices(model, predictor).items() if k == int(chosen)]
    quicker = sum(med[(s, int(faster))] < med[(s, int(chosen))] for s in picks)
    return (f"picks split {chosen} in {len(picks)} of {exp.settings} settings, and in "
            f"{quicker} of those {len(picks)} split {faster} is faster")


KINDS: dict[str, Callable[..., str]] = {
    "counts": counts, "effectiveness": effectiveness, "regret": regret, "table71": table71,
    "pareto": pareto, "forward_ms": forward_ms, "head_to_head": head_to_head,
    "fixed_regrets": fixed_regrets, "median_range": median_range, "worst_gap": worst_gap,
    "chose_where_faster": chose_where_faster, "table71_size": table71_size,
}


def render(text: str, exp: Experiment) -> str:
    """The text with every generated region recomputed."""
    def fill(match: re.Match[str]) -> str:
        kind, *args = match.group(2).split()
        if kind not in KINDS:
            raise SystemExit(f"unknown generated region {kind!r}: one of {', '.join(KINDS)}")
        body = KINDS[kind](exp, *args)
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
    exp, stale = Experiment(), []
    for path in doc_files():
        text = path.read_text()
        new = render(text, exp)
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
