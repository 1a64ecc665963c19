"""edgesplit: split a PyTorch model between an edge and a cloud server, cost-aware.

The names a program needs, importable from here; each is imported when first used, so
``import edgesplit`` (and the ``edgesplit`` command) stays instant and imports no torch::

    from edgesplit import Conditions, Objective, build_planner, load_or_profile

    profile = load_or_profile("alexnet")
    planner = build_planner("alexnet", profile, Objective("rank", weight=0.5, edge="rent"))
    planner.plan(Conditions(bandwidth_kbps=7200, rtt_ms=40, clock_ghz=1.5)).split_point

The packages, from the floor up (``docs/design.md`` section 8): ``errors``, ``wire`` (the
format on the wire), ``core`` (splitting, the zoo and pure planning), ``measuring`` (profiling
this machine, the profile cache), ``edge`` and ``cloud``, ``testbed`` (emulated links and
clocks), ``evaluation`` (the thesis's experiment, reports, the demo), and the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgesplit.cloud import CloudService, ServerSettings, create_app
    from edgesplit.core import zoo
    from edgesplit.core.fitted import build_planner
    from edgesplit.core.planning import Objective, Planner, SplitPlan
    from edgesplit.core.predictors import Conditions
    from edgesplit.core.profiles import Profile
    from edgesplit.core.splitting import SplitModel
    from edgesplit.core.zoo import build_model, sample_input
    from edgesplit.edge.client import CloudClient
    from edgesplit.edge.factory import EdgeOptions, build_runtime
    from edgesplit.edge.runtime import EdgeRuntime
    from edgesplit.errors import EdgesplitError
    from edgesplit.measuring.profiler import load_or_profile, profile_model
    from edgesplit.measuring.store import read_profile

__all__ = ["CloudClient", "CloudService", "Conditions", "EdgeOptions", "EdgeRuntime",
           "EdgesplitError", "Objective", "Planner", "Profile", "ServerSettings", "SplitModel",
           "SplitPlan", "build_model", "build_planner", "build_runtime", "create_app",
           "load_or_profile", "profile_model", "read_profile", "sample_input", "zoo"]

_HOME = {
    "CloudService": "cloud", "ServerSettings": "cloud", "create_app": "cloud",
    "build_planner": "core.fitted",
    "Objective": "core.planning", "Planner": "core.planning", "SplitPlan": "core.planning",
    "Conditions": "core.predictors", "Profile": "core.profiles", "SplitModel": "core.splitting",
    "build_model": "core.zoo", "sample_input": "core.zoo",
    "CloudClient": "edge.client", "EdgeOptions": "edge.factory", "build_runtime": "edge.factory",
    "EdgeRuntime": "edge.runtime", "EdgesplitError": "errors",
    "load_or_profile": "measuring.profiler", "profile_model": "measuring.profiler",
    "read_profile": "measuring.store",
}


def __getattr__(name: str) -> Any:
    if name == "zoo":
        return importlib.import_module("edgesplit.core.zoo")
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgesplit.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
