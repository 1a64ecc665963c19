"""The replayed chooser of split point and codec together (``evaluation.replay``): pure, on
rows and a profile with round numbers."""

from __future__ import annotations

import pytest

from edgesplit.evaluation import evidence as evd
from edgesplit.evaluation.replay import REPLAYED, REPLAYED_RAW, codec_chooser_rows
from edgesplit.evaluation.runs import COLUMNS

from .helpers import make_profile

pytestmark = pytest.mark.fast

SIZES = (4000, 3000, 2000, 1000)  # what each split point sends, raw
HEADER = 100  # a request's own bytes beyond its tensors
# setting -> (bandwidth kbit/s, clock GHz of the compressed runs): at 8 kbit/s the raw input
# takes 4.6 s and int8 (100 bytes) 0.5 s; at 80 Mbit/s both take well under a millisecond.
SETTINGS = {"0": (8.0, 2.0), "1": (80_000.0, 1.0)}


def _row(**values: object) -> dict[str, str]:
    row = {c: "0" for c in COLUMNS} | {"model": "toy", "codec": "raw", "method": "e2e",
                                        "rtt_ms": "0", "predicted_latency_s": ""}
    return row | {k: str(v) for k, v in values.items()}


def _rows(compressed_in: tuple[str, ...] = ("0", "1")) -> list[dict[str, str]]:
    rows = []
    for setting, (bandwidth, clock) in SETTINGS.items():
        for repeat in range(2):
            for edge in ("rent", "own"):
                at = {"setting": setting, "repeat": repeat, "edge": edge,
                      "bandwidth_kbps": bandwidth, "clock_ghz": 2.0}
                rows += [_row(strategy="oracle", split_point=sp, sent_bytes=size + HEADER,
                              latency_s=10 + sp + repeat / 10, **at)
                         for sp, size in enumerate(SIZES)]
                if setting in compressed_in:  # encoding took 0.01 s at 2 GHz, 0.02 s at 1 GHz
                    rows.append(_row(strategy="compressed-input", predictor="none",
                                     codec="int8+zstd", split_point=0, sent_bytes=100 + HEADER,
                                     edge_s=0.01 * 2.0 / clock, latency_s=1 + repeat / 10,
                                     **at | {"clock_ghz": clock}))
    return rows


def test_it_takes_the_codec_where_it_pays_and_the_run_of_what_it_chose() -> None:
    rows = codec_chooser_rows(_rows(), {"toy": make_profile(sizes=SIZES)})
    assert all((r["strategy"], r["method"]) == ("OL", "replayed") for r in rows)
    replayed = [r for r in rows if r["predictor"] == REPLAYED]
    assert sorted((r["setting"], r["repeat"], r["edge"]) for r in replayed) == sorted(
        (s, str(rep), e) for s in SETTINGS for rep in range(2) for e in ("rent", "own"))
    slow = [r for r in replayed if r["setting"] == "0"]
    # 8 kbit/s: int8 at split 0, its own runs' latencies; predicted from setting 1's runs:
    # encoding 0.02 s at 1 GHz is 0.01 s at the profile's 2 GHz, then (100 + 400 request
    # bytes) x 1.045 at 1 byte per ms, then the whole model in the cloud (0.6 s).
    assert {(r["codec"], r["split_point"], r["latency_s"]) for r in slow} == {
        ("int8+zstd", "0", "1.0"), ("int8+zstd", "0", "1.1")}
    assert float(slow[0]["predicted_latency_s"]) == pytest.approx(0.01 + 0.5 * 1.045 + 0.6)
    fast = [r for r in replayed if r["setting"] == "1"]
    # 80 Mbit/s: no codec pays for its encoding; raw at split 3 (the edge's 0.6 s against
    # the cloud's, sending the fewest bytes), the oracle's runs of it.
    assert {(r["codec"], r["split_point"], r["latency_s"]) for r in fast} == {
        ("raw", "3", "13.0"), ("raw", "3", "13.1")}
    # The twin chooses among the raw split points only: split 3 at 8 kbit/s too.
    twin = {(r["setting"], r["codec"], r["split_point"]) for r in rows
            if r["predictor"] == REPLAYED_RAW}
    assert twin == {("0", "raw", "3"), ("1", "raw", "3")}


def test_a_codec_is_part_of_the_choice_and_replayed_choosers_are_no_baselines() -> None:
    measured = _rows()
    rows = [*measured, *codec_chooser_rows(measured, {"toy": make_profile(sizes=SIZES)})]
    (piece,) = (p for p in evd.slices(rows) if p.edge == "rent")
    judged = evd.judge(piece, "latency", ["profile"], evd.draw(piece, 0, draws=50), 0, draws=50)
    assert judged.choices[f"{REPLAYED} OL"] == ("0 int8+zstd", "3")
    assert judged.choices["compressed-input int8+zstd"] == ("0 int8+zstd",) * 2
    assert judged.choices["all-cloud"] == ("0",) * 2  # split 0 with raw tensors: another choice
    assert judged.notes[f"{REPLAYED} OL"] == judged.notes[f"{REPLAYED_RAW} OL"] == "replayed"
    aim = evd.target(judged, f"{REPLAYED} OL")
    assert aim is not None and REPLAYED_RAW not in aim


def test_without_codec_runs_in_another_setting_it_has_nothing_to_learn_from() -> None:
    profile = make_profile(sizes=SIZES)
    assert codec_chooser_rows(_rows(compressed_in=("0",)), {"toy": profile}) == []
    assert codec_chooser_rows(_rows(), {}) == []  # no profile: no predictor to plan with
