"""Profiles and fitted laws on disk: the I/O side of ``core.profiles`` and ``core.fitted``.

``read_profile``/``write_profile`` load and save one profile file; the cache holds this machine's
profiles (``cached_profile_path``, ``cached_profiles``: the thesis predictor's peers) and
``LawMemo``, the power-law fit (scipy's ``curve_fit``) remembered by its exact inputs beside the
profiles. ``store_profile`` writes a profile and fits every predictor it supports at once, so
planning later finds every law it needs already fitted and imports neither scipy nor numpy. A
remembered law is the very float pair the fit returned (JSON keeps floats exact), so plans do not
change. ``cached_predictor`` and ``cached_planner`` are ``core.fitted``'s with these defaults:
this machine's cached profiles as peers, and the remembered laws.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from edgesplit.core.fitted import build_planner, fit_predictor
from edgesplit.core.fitting import PowerLaw, fit_power_law
from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import PREDICTORS, Predictor
from edgesplit.core.profiles import Machine, Profile, cache_dir
from edgesplit.errors import CalibrationError, ProfileError, first_validation_error

log = logging.getLogger(__name__)


def read_profile(path: Path) -> Profile:
    """Load and validate a profile file; any problem is one ``ProfileError`` line."""
    try:
        return Profile.model_validate_json(Path(path).read_bytes())
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise ProfileError(
            f"{path} is not a valid edgesplit profile ({first_validation_error(exc)}); "
            "re-create it with `edgesplit profile`"
        ) from exc


def write_profile(profile: Profile, path: Path) -> Path:
    """Write atomically, so a crash never leaves a half-written profile in the cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(profile.model_dump_json(indent=1))
    os.replace(partial, path)
    return path


def cached_profile_path(model: str, machine: Machine, digest: str | None = None) -> Path:
    """Where this machine's profile of ``model`` is cached; a model of one's own (a file, a
    factory) is cached per ``digest``, so a changed model is profiled again, never planned
    from the profile of its former self."""
    version = f"-{digest.removeprefix('sha256:')[:16]}" if digest else ""
    return cache_dir() / "profiles" / f"{model}{version}-{machine.fingerprint()}.json"


def cached_profiles(machine: Machine) -> list[Profile]:
    """Every readable cached profile of this machine (the thesis predictor's peers)."""
    folder = cache_dir() / "profiles"
    found = []
    for path in sorted(folder.glob(f"*-{machine.fingerprint()}.json")):
        try:
            found.append(read_profile(path))
        except ProfileError:
            continue  # a stale or foreign file is not a reason to stop planning
    return found


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


def cached_predictor(name: str, edge: Profile, cloud: Profile | None = None,
                     peers: Sequence[Profile] | None = None) -> Predictor:
    """Predictor ``name`` fitted on ``edge`` (and ``cloud``) with remembered laws; peers default
    to every cached profile of the edge's machine."""
    if peers is None:
        peers = cached_profiles(edge.machine)
    return fit_predictor(name, edge, cloud, peers=peers, law=LawMemo())


def cached_planner(model: str, profile: Profile, objective: Objective, *,
                   predictor: str = "profile", codecs: Sequence[str] = ("raw",),
                   cloud_profile: Profile | None = None,
                   peers: Sequence[Profile] | None = None) -> Planner:
    """``core.fitted.build_planner`` as ``edgesplit plan`` and the edge use it: peers default
    to this machine's cached profiles, laws are remembered."""
    if peers is None:
        peers = cached_profiles(profile.machine)
    return build_planner(model, profile, objective, predictor=predictor, codecs=codecs,
                         cloud_profile=cloud_profile, peers=peers, law=LawMemo())


def store_profile(profile: Profile, path: Path) -> Path:
    """Write ``profile`` and fit every predictor that can use it, remembering their laws."""
    written = write_profile(profile, path)
    for name in PREDICTORS:
        try:
            cached_predictor(name, profile)
        except CalibrationError:
            continue  # e.g. the thesis predictor on a profile without a clock calibration
    return written
