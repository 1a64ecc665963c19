"""``edgesplit report`` on an experiment folder with every kind of chooser: predictors
(``neurosurgeon`` included), compressed input with two codecs, and the baselines it derives."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesplit.evaluation.runs import COLUMNS

SETTINGS, REPEATS = 4, 5


def _latency(setting: int, sp: int) -> float:
    """Split 0 (all-cloud) slows with the setting, split 2 (all-edge) too, split 1 does not:
    the best split is 2 in setting 0 and 1 in the others."""
    return (1.0 + 0.5 * setting, 0.8, 0.6 + 0.3 * setting)[sp]


def _noise(repeat: int, sp: int) -> float:
    return 1 + 0.01 * ((repeat * 7 + sp * 3) % 5 - 2)  # within 2%, the same for every chooser


COST = {"rent": (1.0, 2.0, 3.0), "own": (1.0, 0.5, 0.1)}
CHOICE = {("profile", "OL"): lambda s: 2 if s == 0 else 1,  # always the best
          ("thesis", "OL"): lambda s: 0,  # always all-cloud: far behind
          ("neurosurgeon", "OL"): lambda s: 2,  # always all-edge
          ("profile", "OC"): None, ("thesis", "OC"): None, ("neurosurgeon", "OC"): None,
          ("profile", "CL"): lambda s: 1, ("thesis", "CL"): lambda s: 1,
          ("neurosurgeon", "CL"): lambda s: 1}
OVER = {"profile": 1.1, "thesis": 2.0, "neurosurgeon": 0.8}  # predicted / measured


def _row(**values: object) -> dict[str, object]:
    return {c: "0" for c in COLUMNS} | {"codec": "raw", "method": "e2e",
                                        "predicted_latency_s": ""} | values


def _experiment(directory: Path) -> None:
    rows = []
    for s in range(SETTINGS):
        for r in range(REPEATS):
            for edge, costs in COST.items():
                rows += [_row(model="alexnet", edge=edge, strategy="oracle", setting=s,
                              repeat=r, split_point=sp, latency_s=_latency(s, sp) * _noise(r, sp),
                              cost_usd=costs[sp]) for sp in range(3)]
                for (predictor, strategy), rule in CHOICE.items():
                    sp = rule(s) if rule else costs.index(min(costs))
                    latency = _latency(s, sp) * _noise(r, sp)
                    rows.append(_row(model="alexnet", edge=edge, predictor=predictor,
                                     strategy=strategy, setting=s, repeat=r, split_point=sp,
                                     latency_s=latency, cost_usd=costs[sp],
                                     predicted_latency_s=latency * OVER[predictor]))
                for codec, speed in (("png", 0.9), ("int8-zstd", 0.7)):
                    rows.append(_row(model="alexnet", edge=edge, predictor="none",
                                     strategy="compressed-input", codec=codec, setting=s,
                                     repeat=r, split_point=0,
                                     latency_s=_latency(s, 0) * speed * _noise(r, 0),
                                     cost_usd=costs[0]))
    with open(directory / "runs.csv", "w", newline="") as sink:
        writer = csv.DictWriter(sink, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    config = {"parameters": {"models": ["alexnet"], "settings": SETTINGS, "repeats": REPEATS,
                             "seed": 0, "rtt_ms": 20.0},
              "settings": [{"index": s, "bandwidth_kbps": 5000.0 + s, "clock_ghz": 1.0,
                            "rtt_ms": 10.0 * (s + 1)} for s in range(SETTINGS)]}
    (directory / "config.json").write_text(json.dumps(config))


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as source:
        return list(csv.DictReader(source))


def test_report_judges_every_chooser_with_intervals_and_a_generated_verdict(
        tmp_path: Path) -> None:
    _experiment(tmp_path)
    done = subprocess.run([sys.executable, "-m", "edgesplit.cli", "report", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = tmp_path / "report"
    regrets = {(r["edge"], r["objective"], r["chooser"]): r for r in _csv(report / "regrets.csv")}
    latency = {k[2]: r for k, r in regrets.items() if k[:2] == ("rent", "latency")}
    assert set(latency) == {"profile OL", "thesis OL", "neurosurgeon OL", "compressed-input png",
                            "compressed-input int8-zstd", "compressed-input (best)", "all-edge",
                            "all-cloud", "best-fixed", "oracle"}
    assert latency["compressed-input (best)"]["note"] == "int8-zstd"
    assert latency["all-edge"]["note"] == "split 2" and latency["best-fixed"]["note"] == "split 1"
    # profile chose the best split everywhere: its regret is noise, within 2% each way.
    profile = latency["profile OL"]
    assert abs(float(profile["mean_value"])) < 0.02
    assert float(profile["mean_low"]) <= float(profile["mean_value"]) <= float(
        profile["mean_high"])
    # thesis chose all-cloud, 1.0 / 0.6 - 1 in setting 0 to 2.5 / 0.8 - 1 in setting 3.
    assert float(latency["thesis OL"]["mean_value"]) == pytest.approx(
        (1 / 0.6 + 1.5 / 0.8 + 2 / 0.8 + 2.5 / 0.8) / 4 - 1, rel=0.03)
    assert ("own", "cost", "profile OC") in regrets and ("rent", "weighted", "thesis CL") in regrets

    pairs = {(r["edge"], r["objective"], r["a"], r["b"]): r for r in _csv(report / "paired.csv")}
    lost = pairs[("rent", "latency", "thesis OL", "profile OL")]  # the registry's order
    assert float(lost["difference_low"]) > 0 and (lost["wins"], lost["losses"]) == ("0", "4")
    floors = {(r["edge"], r["objective"]): r for r in _csv(report / "noise-floor.csv")}
    assert float(floors[("rent", "latency")]["held_out_value"]) >= 0

    errors = {(r["predictor"], r["where"]): r for r in _csv(report / "prediction-error.csv")}
    assert float(errors[("thesis", "chosen")]["median"]) == pytest.approx(1.0)
    assert float(errors[("profile", "chosen")]["median"]) == pytest.approx(0.1)
    assert float(errors[("neurosurgeon", "chosen")]["median"]) == pytest.approx(0.2)
    # thesis chose split 0 for OL on both edges and for OC on the rented one
    assert int(errors[("thesis", "chosen split 0")]["n"]) == 3 * SETTINGS * REPEATS
    hypervolume = {(r["edge"], r["points"]) for r in _csv(report / "hypervolume.csv")}
    assert ("rent", "profile (all its strategies)") in hypervolume

    text = (report / "report.md").read_text()
    assert "; RTT 10 to 40 ms by setting;" in text  # each setting's, not the parameter's 20
    assert "- rented edge, latency regret: **profile OL**" in text
    verdicts = {line.split("**")[1]: line for line in text.splitlines()
                if line.startswith("- rented edge, latency regret: **")}

    def clause(chooser: str, lead: str) -> str:
        """The comma-separated list after ``lead`` in the chooser's verdict."""
        return verdicts[chooser].split(lead)[1].split(";")[0]

    beats = clause("profile OL", "yes, it beats ")
    assert "neurosurgeon OL (" in beats and "compressed-input int8-zstd (" in beats
    assert "thesis OL (-" in beats
    assert "profile OL (" in clause("thesis OL", "no, it loses to ")
    assert ("the same choice in every setting as (a difference between runs, not choices) "
            "all-edge (") in verdicts["neurosurgeon OL"]
    assert "Target (profile OL: mean latency regret <= 3%" in text
    assert "## Table 7.1 beside the thesis, row by row" in text
    assert "The thesis's section 7.2: CL's latency +13.73% above OL's" in text
    assert "| alexnet | rent | profile | cost | CL vs OL |" in text
