"""Predictors fitted for a model: the one function both ``plan`` and the edge runtime use.

``fit_predictor`` chooses what a predictor learns from (the edge's profile, the cloud's, and this
machine's other cached profiles as the thesis predictor's peers) and hands it ``LawMemo``: the
power-law fit (scipy's ``curve_fit``) remembered on disk by its exact inputs, beside the profiles.
``store_profile`` writes a profile and fits every predictor it supports at once, so planning later
finds every law it needs already fitted and imports neither scipy nor numpy. A remembered law is
the very float pair the fit returned (JSON keeps floats exact), so plans do not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from edgesplit.core.fitting import PowerLaw, fit_power_law
from edgesplit.core.predictors import PREDICTORS, Predictor, make_predictor
from edgesplit.core.profiles import Profile, cache_dir, cached_profiles, write_profile
from edgesplit.errors import CalibrationError

log = logging.getLogger(__name__)


class LawMemo:
    """``fit_power_law`` remembered in a JSON file, keyed by a hash of its exact inputs."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "laws.json"

    def __call__(self, x: Sequence[float], y: Sequence[float]) -> PowerLaw:
        key = hashlib.sha256(json.dumps([list(map(float, x)), list(map(float, y))])
                             .encode()).hexdigest()[:24]
        known = self._read()
        if key in known:
            a, b = known[key]
            return PowerLaw(a, b)
        law = fit_power_law(x, y)
        self._write(known | {key: [law.a, law.b]})
        return law

    def _read(self) -> dict[str, list[float]]:
        try:
            laws = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return laws if isinstance(laws, dict) else {}

    def _write(self, laws: dict[str, list[float]]) -> None:
        """Atomically; a lost race only means fitting again later."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.partial")
            partial.write_text(json.dumps(laws))
            os.replace(partial, self.path)
        except OSError as exc:
            log.warning("cannot remember a fitted law in %s: %s", self.path, exc.strerror or exc)


def fit_predictor(name: str, edge: Profile, cloud: Profile | None = None,
                  peers: Sequence[Profile] | None = None) -> Predictor:
    """Predictor ``name`` fitted on ``edge`` (and ``cloud``); peers default to every cached
    profile of the edge's machine."""
    if peers is None:
        peers = cached_profiles(edge.machine)
    return make_predictor(name).fit(edge, cloud, peers=peers, law=LawMemo())


def store_profile(profile: Profile, path: Path) -> Path:
    """Write ``profile`` and fit every predictor that can use it, remembering their laws."""
    written = write_profile(profile, path)
    for name in PREDICTORS:
        try:
            fit_predictor(name, profile)
        except CalibrationError:
            continue  # e.g. the thesis predictor on a profile without a clock calibration
    return written
