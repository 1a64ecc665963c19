"""Predictors and planners fitted for a model: what both ``plan`` and the edge runtime use.

``fit_predictor`` chooses what a predictor learns from (the edge's profile, the cloud's, and the
thesis predictor's peers, other networks' profiles of the same machine) and how a power law is
fitted (``law``); ``build_planner`` makes a ``Planner`` of it. Pure: every profile is passed in;
``edgesplit.measuring.store`` finds them in this machine's cache and remembers fitted laws.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgesplit.core.fitting import LawFitter, fit_power_law
from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import Predictor, make_predictor
from edgesplit.core.profiles import Profile


def fit_predictor(name: str, edge: Profile, cloud: Profile | None = None,
                  peers: Sequence[Profile] = (), law: LawFitter = fit_power_law) -> Predictor:
    """Predictor ``name`` (a ``PREDICTORS`` entry) fitted on ``edge`` (and ``cloud``, and
    ``peers`` where it uses them)."""
    return make_predictor(name).fit(edge, cloud, peers=peers, law=law)


def build_planner(model: str, profile: Profile, objective: Objective, *,
                  predictor: str = "profile", codecs: Sequence[str] = ("raw",),
                  cloud_profile: Profile | None = None, peers: Sequence[Profile] = (),
                  law: LawFitter = fit_power_law) -> Planner:
    """A planner for ``model`` with predictor ``predictor`` fitted on ``profile`` (and the
    cloud's and ``peers`` where the predictor uses them)."""
    fitted = fit_predictor(predictor, profile, cloud_profile, peers, law)
    return Planner(model, [layer.name for layer in profile.layers], fitted, objective, codecs)
