"""The report's evidence, from ``runs.csv`` rows alone: each chooser's regret with its 95%
interval beside the baselines, paired comparisons, the held-out noise floor, the cost side,
prediction error and a verdict per model. Pure: rows (and a function that predicts) in,
records out; ``statistics`` does the numbers.

Choosers. A row of a predictor's strategy is the chooser ``"<predictor> <strategy>"`` (e.g.
``profile OL``); a row of ``strategy`` ``compressed-input`` is ``"compressed-input <codec>"``.
Derived from the oracle's rows (measured in the same rounds): ``all-edge`` (the last split
point), ``all-cloud`` (split 0), ``best-fixed`` (the one split point with the least mean regret
in hindsight, per objective); ``compressed-input (best)`` is the codec with the least mean
regret in hindsight; the ``oracle`` has no regret by definition. Each objective judges the
strategies built for it (``JUDGED``) beside every baseline.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgesplit.evaluation import statistics as st
from edgesplit.evaluation.tables import CL, COMPARISONS, OC, OL, Row, strategies

JUDGED = {"latency": (OL,), "cost": (OC,), "weighted": (CL, "weighted")}
COMPRESSED = "compressed-input"
FIXED = ("all-edge", "all-cloud", "best-fixed")
ORACLE = "oracle"
Predict = Callable[[str, str, float, float, float], Sequence[float] | None]
"""(model, predictor, bandwidth kbit/s, RTT ms, clock GHz) -> predicted latency per split
point, or None where that predictor cannot be fitted."""


def chooser_of(row: Row) -> str:
    if row["strategy"] == COMPRESSED:
        return f"{COMPRESSED} {row['codec']}"
    return f"{row['predictor']} {row['strategy']}"


def choice(split_point: int | str, codec: str = "raw") -> str:
    """What a chooser chose: ``"13"`` (split point 13, raw tensors) or ``"0 int8+zstd"``."""
    return f"{split_point}" if codec == "raw" else f"{split_point} {codec}"


@dataclass(frozen=True)
class Slice:
    """One model and edge: its settings (in order), the panel of measurements, each measured
    chooser's choice per setting (its most common over repeats, ``choice``; "": not
    measured), and the choosers whose rows are replayed (``evaluation.replay``)."""

    model: str
    edge: str
    settings: tuple[int, ...]
    panel: st.Panel
    choices: Mapping[str, tuple[str, ...]]
    replayed: frozenset[str] = frozenset()


def _choices(rows: Sequence[Row]) -> dict[tuple[str, str, str], dict[int, str]]:
    """(model, edge, chooser) -> setting -> what it chose most often over repeats."""
    per: dict[tuple[str, str, str, int], Counter[str]] = defaultdict(Counter)
    for r in rows:
        if r["strategy"] != ORACLE:
            per[(r["model"], r["edge"], chooser_of(r), int(r["setting"]))][
                choice(r["split_point"], r["codec"])] += 1
    out: dict[tuple[str, str, str], dict[int, str]] = defaultdict(dict)
    for (model, edge, name, setting), counts in per.items():
        out[(model, edge, name)][setting] = counts.most_common(1)[0][0]
    return out


def slices(rows: Sequence[Row]) -> list[Slice]:
    """Every (model, edge) the oracle measured, its rows gathered into arrays in one pass."""
    oracle: dict[tuple[str, str], list[tuple[int, int, int, float, float]]] = defaultdict(list)
    chosen: dict[tuple[str, str, str], list[tuple[int, int, float, float]]] = defaultdict(list)
    replayed: dict[tuple[str, str], set[str]] = defaultdict(set)  # (model, edge) -> choosers
    for r in rows:
        values = (int(r["setting"]), int(r["repeat"]), float(r["latency_s"]),
                  float(r["cost_usd"]))
        if r["strategy"] == ORACLE:
            oracle[(r["model"], r["edge"])].append(
                (values[0], int(r["split_point"]), values[1], values[2], values[3]))
        else:
            chosen[(r["model"], r["edge"], chooser_of(r))].append(values)
            if r.get("method") == "replayed":
                replayed[(r["model"], r["edge"])].add(chooser_of(r))
    out, picks = [], _choices(rows)
    for (model, edge), points in sorted(oracle.items()):
        settings = tuple(sorted({p[0] for p in points}))
        index = {s: i for i, s in enumerate(settings)}
        n_points = 1 + max(p[1] for p in points)
        n_repeats = 1 + max([p[2] for p in points]
                            + [v[1] for k, vs in chosen.items() if k[:2] == (model, edge)
                               for v in vs])
        lat, cost = (np.full((len(settings), n_points, n_repeats), np.nan) for _ in range(2))
        for s, sp, rep, latency, price in points:
            lat[index[s], sp, rep], cost[index[s], sp, rep] = latency, price
        choosers = {}
        for (m, e, name), runs in sorted(chosen.items()):
            if (m, e) != (model, edge):
                continue
            x, y = (np.full((len(settings), n_repeats), np.nan) for _ in range(2))
            for s, rep, latency, price in runs:
                if s in index:
                    x[index[s], rep], y[index[s], rep] = latency, price
            choosers[name] = (x, y)
        picked = {name: tuple(c.get(s, "") for s in settings) for (m, e, name), c in
                  picks.items() if (m, e) == (model, edge)}
        out.append(Slice(model, edge, settings, st.Panel(lat, cost, choosers), picked,
                         frozenset(replayed[(model, edge)])))
    return out


@dataclass(frozen=True)
class Judged:
    """One model, edge and objective: every chooser's regret, the pairs, the floor."""

    model: str
    edge: str
    objective: str
    regrets: tuple[st.ChooserRegret, ...]
    notes: Mapping[str, str]
    pairs: tuple[st.Paired, ...]
    floor: st.NoiseFloor
    choices: Mapping[str, tuple[str, ...]]
    replayed: frozenset[str] = frozenset()


def _order(names: Iterable[str], predictors: Sequence[str]) -> list[str]:
    """Predictors' choosers first (registry order), then compressed input, then the rest."""
    def key(name: str) -> tuple[int, int, str]:
        head = name.split(" ")[0]
        if head in predictors:
            return (0, predictors.index(head), name)
        return (1 if head == COMPRESSED else 2, 0, name)
    return sorted(names, key=key)


def draw(piece: Slice, seed: int, draws: int = st.DRAWS) -> tuple[st.Medians, st.Medians]:
    """The medians of ``piece`` and their bootstrap draws, shared by the three objectives."""
    return st.draw_medians(piece.panel, st.seed_of(piece.model, piece.edge, base=seed), draws)


def judge(piece: Slice, objective: str, predictors: Sequence[str],
          medians: tuple[st.Medians, st.Medians], seed: int,
          draws: int = st.DRAWS) -> Judged:
    """Every chooser of ``piece`` judged on ``objective`` (see the module's docstring), from
    its medians (``draw``)."""
    panel, (point, boot) = piece.panel, medians
    last, fixed = panel.oracle_latency.shape[1] - 1, st.best_fixed(objective, panel)
    notes = {"all-edge": f"split {last}", "all-cloud": "split 0", "best-fixed": f"split {fixed}"}
    notes |= dict.fromkeys(piece.replayed, "replayed")
    measured = [name for name in panel.choosers
                if name.split(" ")[-1] in JUDGED[objective] or name.startswith(COMPRESSED)]
    names = _order([*measured, *FIXED], predictors)
    codecs = [n for n in names if n.startswith(COMPRESSED)]
    source: dict[str, str | int] = {n: n for n in measured} | dict(
        zip(FIXED, (last, 0, fixed), strict=True))
    if codecs:
        each = point.regrets(objective, codecs)[0]
        best = codecs[int(np.argmin([np.nanmean(v) if np.isfinite(v).any() else np.inf
                                     for v in each]))]
        notes[f"{COMPRESSED} (best)"] = best.split(" ", 1)[1]
        names.insert(names.index(codecs[-1]) + 1, f"{COMPRESSED} (best)")
        source[f"{COMPRESSED} (best)"] = best
    p_reg = point.regrets(objective, [source[n] for n in names])[0]
    b_reg = boot.regrets(objective, [source[n] for n in names])
    names.append(ORACLE)
    p_reg = np.concatenate([p_reg, np.zeros((1, p_reg.shape[1]))])
    b_reg = np.concatenate([b_reg, np.zeros((b_reg.shape[0], 1, b_reg.shape[2]))], axis=1)
    floor = st.noise_floor(objective, panel.oracle_latency, panel.oracle_cost,
                           st.seed_of(piece.model, piece.edge, objective, "floor", base=seed),
                           draws)
    band = floor.held_out.value if floor.held_out else floor.in_sample.value
    every = len(piece.settings)
    choices = dict(piece.choices) | {name: (choice(sp),) * every for name, sp in
                                     (("all-edge", last), ("all-cloud", 0), ("best-fixed", fixed))}
    if codecs:
        choices[f"{COMPRESSED} (best)"] = choices.get(str(source[f"{COMPRESSED} (best)"]), ())
    return Judged(piece.model, piece.edge, objective,
                  tuple(st.summarise(names, p_reg, b_reg)), notes,
                  tuple(st.paired(names, p_reg, b_reg, band)), floor, choices, piece.replayed)


def hypervolumes(piece: Slice, predictors: Sequence[str], seed: int,
                 draws: int = st.DRAWS) -> dict[str, st.Interval]:
    """Per predictor (its strategies' points together), per single chooser and for the fixed
    splits, the share of the measured front's hypervolume (``statistics.hypervolume_shares``).
    """
    panel = piece.panel
    lat, cost = st.median_of(panel.oracle_latency), st.median_of(panel.oracle_cost)
    points = {name: (st.median_of(x), st.median_of(y)) for name, (x, y) in panel.choosers.items()}
    points |= {"all-edge": (lat[:, -1], cost[:, -1]), "all-cloud": (lat[:, 0], cost[:, 0])}
    sets: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {
        f"{p} (all its strategies)": [v for n, v in points.items() if n.split(" ")[0] == p]
        for p in predictors if any(n.split(" ")[0] == p for n in points)}
    sets |= {name: [v] for name, v in points.items()}
    sets["all-edge and all-cloud"] = [points["all-edge"], points["all-cloud"]]
    return st.hypervolume_shares(lat, cost, sets, st.seed_of(piece.model, piece.edge,
                                                             "hv", base=seed), draws)


@dataclass(frozen=True)
class PredictionError:
    """Absolute percentage error of a predictor's latency, at one split point (``split``),
    over every split point (``every``) or at the splits the strategies chose (``chosen``)."""

    model: str
    predictor: str
    where: str
    spread: st.Spread


def chosen_errors(rows: Iterable[Row]) -> list[PredictionError]:
    """At the chosen splits: each strategy row's predicted latency against its own
    measured latency, per model and predictor (``chosen``) and per split it chose
    (``chosen split K``)."""
    pairs: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["strategy"] not in (ORACLE, COMPRESSED) and r["predicted_latency_s"]:
            measured = (float(r["predicted_latency_s"]), float(r["latency_s"]))
            pairs[(r["model"], r["predictor"], "chosen")].append(measured)
            pairs[(r["model"], r["predictor"], f"chosen split {r['split_point']}")].append(
                measured)
    out = []
    for (model, predictor, where), values in sorted(
            pairs.items(), key=lambda kv: (kv[0][:2], len(kv[0][2]), kv[0][2])):
        spread = st.percentage_error([p for p, _ in values], [m for _, m in values])
        if spread is not None:
            out.append(PredictionError(model, predictor, where, spread))
    return out


def conditions_of(rows: Iterable[Row]) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(model, setting) -> (bandwidth kbit/s, RTT ms, clock GHz) as the oracle measured it."""
    return {(r["model"], int(r["setting"])): (float(r["bandwidth_kbps"]), float(r["rtt_ms"]),
                                              float(r["clock_ghz"]))
            for r in rows if r["strategy"] == ORACLE}


def split_errors(pieces: Sequence[Slice], conditions: Mapping[tuple[str, int],
                                                              tuple[float, float, float]],
                 predictors: Sequence[str], predict: Predict) -> list[PredictionError]:
    """Per model, predictor and split point (and over every split point), the predictor's
    latency against the oracle's median in each setting."""
    out = []
    for piece in (p for p in pieces if p.edge == "rent"):
        measured = st.median_of(piece.panel.oracle_latency)  # [S, P]
        for name in predictors:
            rows = [predict(piece.model, name, *conditions[(piece.model, s)])
                    for s in piece.settings]
            if any(r is None or len(r) != measured.shape[1] for r in rows):
                continue
            predicted = np.asarray(rows, dtype=float)
            every = st.percentage_error(predicted.ravel(), measured.ravel())
            if every is not None:
                out.append(PredictionError(piece.model, name, "every split", every))
            for sp in range(measured.shape[1]):
                spread = st.percentage_error(predicted[:, sp], measured[:, sp])
                if spread is not None:
                    out.append(PredictionError(piece.model, name, f"split {sp}", spread))
    return out


def modal_choices(rows: Iterable[Row]) -> dict[tuple[str, str, str, str], tuple[int, int, int]]:
    """(model, edge, predictor, strategy) -> (most chosen split, in how many settings, of how
    many settings), a setting's choice being its most common over repeats."""
    per: dict[tuple[str, str, str, str, int], Counter[int]] = defaultdict(Counter)
    for r in rows:
        if r["strategy"] not in (ORACLE, COMPRESSED):
            per[(r["model"], r["edge"], r["predictor"], r["strategy"], int(r["setting"]))][
                int(r["split_point"])] += 1
    settings: dict[tuple[str, str, str, str], Counter[int]] = defaultdict(Counter)
    for key, counts in per.items():
        settings[key[:4]][counts.most_common(1)[0][0]] += 1
    return {k: (*c.most_common(1)[0], sum(c.values())) for k, c in settings.items()}


@dataclass(frozen=True)
class ThesisRow:
    """A Table 7.1 cell: ours with its interval beside the thesis's, printed and read in our
    convention (``THESIS_READING``), and a generated sentence on the difference."""

    model: str
    edge: str
    predictor: str
    metric: str
    comparison: str
    ours: st.Interval
    thesis_printed: float | None
    thesis: float | None
    explanation: str


THESIS_READING = (
    "Convention, once for every row: `X vs Y` = (sum over settings of X's median) / (sum of "
    "Y's) - 1, in percent; positive means X is slower (or dearer) than Y. The thesis prints "
    "its Table 7.1 with the opposite sign: its section 7.4.1 reads the AlexNet/rented column "
    "(printed CL vs OL cost +60.84, CL vs OC cost -39.77) as 'CL is 60.84% cheaper than OL "
    "and 39.77% more expensive than OC'. Its values are shown here negated into our "
    "convention, every row alike (the printed value beside). Intervals: 95% bootstrap over "
    "settings.")


def table_7_1(rows: Iterable[Row], thesis: Mapping[str, object], seed: int,
              draws: int = st.DRAWS) -> list[ThesisRow]:
    """Every Table 7.1 cell measured (see ``tables.table_7_1``) with its interval and the
    thesis's figure beside, each difference explained from the choices behind it."""
    rows = list(rows)
    s, modes = strategies(rows), modal_choices(rows)
    out = []
    for model, edge, predictor in sorted({k[:3] for k in s.latency}):
        for metric, pairs in COMPARISONS.items():
            values = s.latency if metric == "latency" else s.cost
            for x, y in pairs:
                common = sorted({k[4] for k in values if k[:4] == (model, edge, predictor, x)}
                                & {k[4] for k in values if k[:4] == (model, edge, predictor, y)})
                ours = st.ratio_of_sums(
                    np.array([values[(model, edge, predictor, x, i)] for i in common]),
                    np.array([values[(model, edge, predictor, y, i)] for i in common]),
                    st.seed_of(model, edge, predictor, metric, x, y, base=seed), draws)
                printed = _thesis_cell(thesis, model, edge, metric, f"{x}_vs_{y}")
                reading = None if printed is None else (-printed or 0.0)
                why = _explain(ours, reading, [(z, modes.get((model, edge, predictor, z)))
                                               for z in (x, y)])
                out.append(ThesisRow(model, edge, predictor, metric, f"{x} vs {y}", ours,
                                     printed, reading, why))
    return out


def _thesis_cell(thesis: Mapping[str, object], *keys: str) -> float | None:
    node: object = thesis
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return float(node) if isinstance(node, int | float) else None


def _explain(ours: st.Interval, theirs: float | None,
             choices: Sequence[tuple[str, tuple[int, int, int] | None]]) -> str:
    """One sentence on how our cell stands to the thesis's, and the choices behind ours."""
    known = [(z, c) for z, c in choices if c is not None]
    behind = "; ".join(f"{z} chose split {c[0]} in {c[1]} of {c[2]} settings" for z, c in known)
    if len(known) == 2 and known[0][1][0] == known[1][1][0] and all(c[1] == c[2]
                                                                     for _, c in known):
        behind += (": the same split everywhere, so ours is the noise between their runs at "
                   "one split")
    if theirs is None:
        return f"The thesis reports no figure here. Behind ours: {behind}."
    if not (math.isfinite(ours.low) and math.isfinite(ours.high)):
        return f"Not measurable here. Behind ours: {behind}."
    if ours.low == ours.value == ours.high == 0:
        head = f"Ours shows no difference at all (0.00%); the thesis {theirs:+.2f}%"
    elif ours.low <= theirs <= ours.high:
        head = (f"The thesis's {theirs:+.2f}% lies inside our interval: this run cannot tell "
                "them apart")
    elif theirs == 0:
        head = ("The thesis reports no difference (0.00%); ours differs by "
                f"{ours.value:+.2f} points, and its interval excludes 0")
    elif ours.value == 0 or (theirs > 0) != (ours.value > 0):
        head = (f"Opposite in direction to the thesis's {theirs:+.2f}% (by "
                f"{ours.value - theirs:+.2f} points, outside our interval)")
    else:
        head = (f"Same direction as the thesis's {theirs:+.2f}%, {abs(ours.value / theirs):.2g}x "
                f"its size (by {ours.value - theirs:+.2f} points, outside our interval)")
    return f"{head}. Behind ours: {behind}."


UNITS = {"latency": "latency regret", "cost": "cost regret",
         "weighted": "CL's objective (w = 0.5) regret"}


def show(value: float, objective: str) -> str:
    """A regret as the report writes it: percent, or scaled units for CL's objective."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if objective == "weighted" else f"{value * 100:.2f}%"


def interval(i: st.Interval, objective: str) -> str:
    return f"{show(i.value, objective)} [{show(i.low, objective)}, {show(i.high, objective)}]"


def definitions(draws: int = st.DRAWS) -> list[str]:
    return [
        "Each chooser's regret per setting, from the medians over repeats: latency (cost) "
        "regret = its median measured latency (cost) / the best split point's median oracle "
        "latency (cost) - 1; CL's objective regret = the weighted score (w = 0.5, "
        "`core.policies.weighted_choice`: latency and cost each min-max scaled between the "
        "measured front's extremes) of its point minus the best split point's, in scaled "
        "units (0: the best split point; 1: a whole span). OL is judged on latency, OC on "
        "cost, CL on its own objective; every baseline on all three. `all-edge`, `all-cloud` "
        "and `best-fixed` (the one split with the least mean regret, in hindsight) are the "
        "oracle's rows at those splits; `compressed-input (best)` is the codec with the least "
        "mean regret, in hindsight. A negative regret means the chooser's own runs measured "
        "below the best split point's oracle median: noise, or, in a run measured before the "
        "interleaved protocol, the order bias that the section above shows.",
        "",
        f"Intervals: 95% percentile bootstrap over settings, {draws} draws, seeded (the same "
        "run gives the same numbers); each draw resamples the settings, the same ones for the "
        "oracle and every chooser. Repeats are not resampled (the least of the split points' "
        "resampled medians is biased low and would shift every interval up); measurement "
        "noise is judged by the noise floor below. Unlike the section 7.1 table above, which "
        "prices a chosen split at the oracle's median there, a chooser is judged here by its "
        "own runs. Paired: the mean over settings of the "
        "regret difference (a - b; negative: a is better), and per setting a win (a better by "
        "more than the tie band), tie or loss; the tie band is the held-out noise floor of that "
        "model, edge and objective: a difference smaller than what choosing by one repeat "
        "costs, judged on the other repeats, is not told apart from noise.",
        "",
        "Noise floor: per setting and repeat, the split point that one repeat of the oracle "
        "picks, judged against the medians of the OTHER repeats (leave one out); the in-sample "
        "floor (judged against medians that contain that repeat) is shown beside, for "
        "contrast.", "",
        "Replayed choosers (note `replayed`; `evaluation.replay`): `profile+codecs` chooses "
        "the split point and the codec together, as `edge run --codec auto` does, learning "
        "each compressed-input codec from the other settings' runs; `profile+raw` is the "
        "`profile` predictor's raw choice. Neither has runs of its own: each is priced at the "
        "run of what it chose in the same round (the oracle's, or the compressed-input "
        "baseline's), so compare them with each other (they differ only in the codec) rather "
        "than with the live choosers, whose own runs carry their own noise. They are no "
        "baselines of the target.", ""]


def regret_table(judged: Sequence[Judged]) -> list[str]:
    """One model and edge: a row per chooser, a column pair per objective (mean, median)."""
    names: list[str] = []
    for j in judged:
        names += [r.chooser for r in j.regrets if r.chooser not in names]
    by = {(j.objective, r.chooser): r for j in judged for r in j.regrets}
    per: dict[str, dict[str, str]] = defaultdict(dict)  # a hindsight pick differs by objective
    for j in judged:
        for name, note in j.notes.items():
            per[name][j.objective] = note
    notes = {name: next(iter(by.values())) if len(set(by.values())) == 1
             else ", ".join(f"{o}: {n}" for o, n in by.items()) for name, by in per.items()}
    head = "".join(f" {UNITS[j.objective]}: mean [95% CI] | median [95% CI] |" for j in judged)
    lines = [f"| chooser |{head}", "|---|" + "---|---|" * len(judged)]
    for name in names:
        note = notes.get(name, "")
        cells = "".join(
            f" {interval(r.mean, j.objective)} | {interval(r.median, j.objective)} |"
            if (r := by.get((j.objective, name))) else " | |" for j in judged)
        lines.append(f"| {name}{f' ({note})' if note else ''} |{cells}")
    return lines


def floors(judged: Sequence[Judged]) -> str:
    parts = []
    for j in judged:
        held = interval(j.floor.held_out, j.objective) if j.floor.held_out else "n/a (1 repeat)"
        parts.append(f"{UNITS[j.objective]} {held} held out (in-sample "
                     f"{interval(j.floor.in_sample, j.objective)})")
    return "Noise floor: " + "; ".join(parts) + "."


def _is_predictor(name: str, predictors: Sequence[str]) -> bool:
    return name.split(" ")[0] in predictors


def paired_table(judged: Sequence[Judged], predictors: Sequence[str]) -> list[str]:
    lines = ["| objective | a | b | mean difference a - b [95% CI] | a wins / ties / loses "
             "(tie band) |", "|---|---|---|---|---|"]
    for j in judged:
        for p in j.pairs:
            if _is_predictor(p.a, predictors) and p.b != ORACLE:
                lines.append(f"| {j.objective} | {p.a} | {p.b} | "
                             f"{interval(p.difference, j.objective)} | {p.wins} / {p.ties} / "
                             f"{p.losses} ({show(p.tie_band, j.objective)}) |")
    return lines


def _judgement(d: st.Interval, objective: str) -> int:
    """-1: better (the whole interval of a - b below 0), 1: worse, 0: cannot tell."""
    return -1 if d.high < 0 else (1 if d.low > 0 else 0)


def verdict(model: str, judged: Sequence[Judged], predictors: Sequence[str]) -> list[str]:
    """Generated from the paired intervals: for each predictor's chooser, which choosers it
    beats (the whole 95% CI of the regret difference below 0), loses to (above 0) and cannot
    be told from; a chooser that made the same choice in every setting is named apart (any
    difference is between runs, not choices)."""
    lines = []
    words = {-1: "yes, it beats", 1: "no, it loses to", 0: "cannot tell, against",
             2: "the same choice in every setting as (a difference between runs, not choices)"}
    for j in judged:
        if j.model != model or (j.objective == "latency" and j.edge != "rent"):
            continue
        for name in (r.chooser for r in j.regrets if _is_predictor(r.chooser, predictors)):
            against = [(p.b, p.difference) for p in j.pairs if p.a == name and p.b != ORACLE]
            against += [(p.a, _negate(p.difference)) for p in j.pairs if p.b == name]
            kinds = [(b, d, 2 if j.choices.get(b, ()) == j.choices.get(name) else
                      _judgement(d, j.objective)) for b, d in against]
            said = [f"{words[k]} " + ", ".join(
                f"{b} ({show(d.value, j.objective)}, CI [{show(d.low, j.objective)}, "
                f"{show(d.high, j.objective)}])" for b, d, kind in kinds if kind == k)
                for k in (-1, 1, 0, 2) if any(kind == k for _, _, kind in kinds)]
            own = next(r for r in j.regrets if r.chooser == name)
            lines.append(f"- {j.edge}ed edge, {UNITS[j.objective]}: **{name}** "
                         f"{interval(own.mean, j.objective)} (mean): " + "; ".join(said) + ".")
    return lines


def _negate(i: st.Interval) -> st.Interval:
    return st.Interval(-i.value, -i.high, -i.low)


def target(j: Judged, chooser: str = "profile OL") -> str | None:
    """The issue's target for a latency chooser: mean regret <= 3% and its interval's upper end
    below the lower end of every baseline's (fixed splits, other predictors, compressed
    input; not the replayed choosers, which are no baselines); None where the chooser was not
    measured."""
    own = next((r for r in j.regrets if r.chooser == chooser), None)
    if own is None or j.objective != "latency":
        return None
    others = [r for r in j.regrets if r.chooser not in (chooser, ORACLE, *j.replayed)]
    above = [r.chooser for r in others if not own.mean.high < r.mean.low]
    small = own.mean.value <= 0.03
    met = small and not above
    return (f"Target ({chooser}: mean latency regret <= 3% and the upper end of its CI below "
            f"the lower end of every baseline's): {'met' if met else 'missed'} (mean "
            f"{interval(own.mean, 'latency')}"
            + ("" if small else ", above 3%")
            + (f"; not separated from {', '.join(above)}" if above else "") + ").")


def hypervolume_table(shares: Mapping[str, st.Interval]) -> list[str]:
    lines = ["| points | share of the measured front's hypervolume [95% CI] (above 1: beyond "
             "the front, as compressed input can be) |", "|---|---|"]
    lines += [f"| {name} | {i.value:.3f} [{i.low:.3f}, {i.high:.3f}] |"
              for name, i in shares.items()]
    return lines


def errors_table(errors: Sequence[PredictionError]) -> list[str]:
    """Per model and predictor: over every split point and at the chosen ones; the worst
    split point by median error."""
    by: dict[tuple[str, str], dict[str, st.Spread]] = defaultdict(dict)
    for e in errors:
        by[(e.model, e.predictor)][e.where] = e.spread
    lines = ["| model | predictor | every split point: median APE (IQR) | at the chosen splits: "
             "median APE (IQR) | worst split point, of every or of the chosen (median APE) |",
             "|---|---|---|---|---|"]
    for (model, predictor), where in sorted(by.items()):
        splits = {k: v for k, v in where.items() if k.startswith(("split ", "chosen split "))}
        worst = max(splits, key=lambda k: splits[k].median) if splits else None
        lines.append(f"| {model} | {predictor} | {_spread(where.get('every split'))} | "
                     f"{_spread(where.get('chosen'))} | "
                     + (f"{worst} ({splits[worst].median:.1%})" if worst else "") + " |")
    return lines


def _spread(s: st.Spread | None) -> str:
    return "" if s is None else f"{s.median:.1%} ({s.q25:.1%} to {s.q75:.1%}; n = {s.n})"


def thesis_table(rows: Sequence[ThesisRow]) -> list[str]:
    lines = ["| model | edge | predictor | metric | comparison | ours [95% CI] | the thesis, in "
             "our convention (printed) | the difference |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        theirs = ("" if r.thesis is None or r.thesis_printed is None
                  else f"{r.thesis:+.2f}% ({r.thesis_printed:+.2f})")
        lines.append(f"| {r.model} | {r.edge} | {r.predictor} | {r.metric} | {r.comparison} | "
                     f"{r.ours.value:+.2f}% [{r.ours.low:+.2f}, {r.ours.high:+.2f}] | {theirs} | "
                     f"{r.explanation} |")
    return lines


def section_7_2(rows: Sequence[ThesisRow], figures: Mapping[str, float]) -> list[str]:
    """The thesis's section 7.2 trade-off (CL's latency above OL's, its cost above OC's) beside
    ours, per model, edge and predictor (the matching Table 7.1 cells)."""
    latency = figures.get("trade_off_latency_above_OL_pct")
    cost = figures.get("trade_off_cost_above_OC_pct")
    cells = {(r.model, r.edge, r.predictor, r.metric, r.comparison): r.ours for r in rows}
    lines = [f"The thesis's section 7.2: CL's latency {latency:+.2f}% above OL's and its cost "
             f"{cost:+.2f}% above OC's. Ours, the same two cells of Table 7.1:", "",
             "| model | edge | predictor | CL vs OL, latency [95% CI] | CL vs OC, cost [95% CI] |",
             "|---|---|---|---|---|"] if latency is not None and cost is not None else []
    for model, edge, predictor in sorted({k[:3] for k in cells}) if lines else []:
        pair = [cells.get((model, edge, predictor, metric, name))
                for metric, name in (("latency", "CL vs OL"), ("cost", "CL vs OC"))]
        lines.append(f"| {model} | {edge} | {predictor} | " + " | ".join(
            "" if i is None else f"{i.value:+.2f}% [{i.low:+.2f}, {i.high:+.2f}]"
            for i in pair) + " |")
    return lines
