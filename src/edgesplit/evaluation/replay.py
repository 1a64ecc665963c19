"""A chooser that plans the split point and the codec together, replayed on a run's rows.

The experiment's choosers plan raw tensors, as the thesis did; ``edge run --codec auto``
plans the split point and the codec together. This replays that choice on what a run
measured, held out by setting: for each setting, the ``profile`` predictor (fitted on the
model's profile, as the experiment's is) learns each compressed-input codec's encoded size and
encoding time from the compressed-input runs of the *other* settings (the encoding time
brought back to the profile's clock by the clock law), then predicts every raw split point and
every codec at split point 0 under the setting's conditions and takes the fastest. Its latency
in round r is the run of what it chose measured in round r: the oracle's at that split point,
or the compressed-input baseline's with that codec. It has no runs of its own; its rows say so
(``method`` ``replayed``), and they are made by the report, never written to ``runs.csv``.

Priced at the oracle's runs, a choice has none of a live chooser's own noise, so it is not
compared with the live choosers alone: its twin ``profile+raw`` replays the same predictor's
choice among the raw split points (the live ``profile`` OL chooser's choice) priced the same
way, and the two differ only in the codec.

Pure: rows and profiles in, rows out.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence

from edgesplit.core.predictors import Conditions, ProfilePredictor
from edgesplit.core.profiles import Profile
from edgesplit.evaluation.tables import OL, Row

REPLAYED = "profile+codecs"
"""The replayed chooser's predictor column (its chooser: ``profile+codecs OL``)."""
REPLAYED_RAW = "profile+raw"
"""Its twin's: the raw split the ``profile`` predictor chooses, priced the same way."""
ORACLE, COMPRESSED = "oracle", "compressed-input"


def codec_chooser_rows(rows: Sequence[Row], profiles: Mapping[str, Profile]) -> list[Row]:
    """The replayed chooser's rows and its twin's (see the module's docstring), for every
    model with a profile and compressed-input runs in at least two settings; none for any
    other."""
    out: list[Row] = []
    for model, profile in profiles.items():
        mine = [r for r in rows if r["model"] == model]
        measured = {(r["edge"], r["setting"], r["repeat"], int(r["split_point"]), r["codec"]): r
                    for r in mine if r["strategy"] in (ORACLE, COMPRESSED)}
        encoded = _encodings(mine, profile)
        if len({setting for setting, _ in encoded}) < 2:
            continue
        for setting in sorted({r["setting"] for r in mine if r["strategy"] == ORACLE}, key=int):
            options = _options(profile, encoded, setting, _conditions(mine, setting))
            for name, pick in ((REPLAYED, min(options, key=lambda o: options[o])),
                               (REPLAYED_RAW, min((o for o in options if o[1] == "raw"),
                                                  key=lambda o: options[o]))):
                out += [{**r, "predictor": name, "strategy": OL, "predicted_latency_s":
                         repr(options[pick]), "method": "replayed"}
                        for (edge, s, _, sp, codec), r in sorted(measured.items())
                        if s == setting and (sp, codec) == pick]
    return out


def _encodings(rows: Sequence[Row], profile: Profile) -> dict[tuple[str, str],
                                                                list[tuple[int, float, float]]]:
    """(setting, codec) -> each compressed-input run's (encoded bytes, encoding seconds, clock
    GHz), from the rented edge's rows (the owned edge's are the same runs). The request's
    own bytes (what the oracle's split point 0 sends beyond the raw input) are taken off."""
    raw = [int(r["sent_bytes"]) for r in rows
           if (r["strategy"], r["edge"], r["split_point"]) == (ORACLE, "rent", "0")]
    header = statistics.median(raw) - profile.split_points[0].offload_bytes if raw else 0
    out: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for r in rows:
        if (r["strategy"], r["edge"]) == (COMPRESSED, "rent"):
            out[(r["setting"], r["codec"])].append(
                (max(1, round(int(r["sent_bytes"]) - header)), float(r["edge_s"]),
                 float(r["clock_ghz"])))
    return out


def _conditions(rows: Sequence[Row], setting: str) -> Conditions:
    r = next(r for r in rows if (r["setting"], r["strategy"]) == (setting, ORACLE))
    return Conditions(float(r["bandwidth_kbps"]), float(r["rtt_ms"]), float(r["clock_ghz"]))


def _options(profile: Profile,
             encoded: Mapping[tuple[str, str], list[tuple[int, float, float]]], setting: str,
             conditions: Conditions) -> dict[tuple[int, str], float]:
    """(split point, codec) -> predicted latency in ``setting``: every raw split point, and
    each codec at split point 0 as learned from the other settings' runs."""
    predictor = ProfilePredictor(learning_rate=1.0).fit(profile)
    reference = profile.machine.clock_ghz
    options = {(sp, "raw"): latency
               for sp, latency in enumerate(predictor.predict(conditions).latency_s)}
    for codec in sorted({c for _, c in encoded}):
        runs = [run for (s, c), some in encoded.items() if c == codec and s != setting
                for run in some]
        if not runs:
            continue
        predictor.partial_fit(
            clock_ghz=reference, codec=codec, split_point=0,
            encoded_bytes=round(statistics.median(b for b, _, _ in runs)),
            codec_s=statistics.median(t / predictor.edge_scale(g) for _, t, g in runs))
        options[(0, codec)] = predictor.predict(conditions, codec).latency_s[0]
    return options
