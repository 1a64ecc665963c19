"""The public face: ``from edgesplit import ...`` gives the names a program needs, each the very
object its home module defines, imported only when first used."""

from __future__ import annotations

import importlib

import pytest

import edgesplit

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


@pytest.mark.parametrize("name", edgesplit.__all__)
def test_every_public_name_is_its_home_modules_own(name: str) -> None:
    value = getattr(edgesplit, name)
    if name == "zoo":
        assert value is importlib.import_module("edgesplit.core.zoo")
    else:  # the definition itself, where it was defined
        assert (value.__name__, value.__module__.split(".")[0]) == (name, "edgesplit")
        assert getattr(importlib.import_module(value.__module__), name) is value
    assert name in dir(edgesplit)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        edgesplit.Nonesuch  # noqa: B018


def test_the_readme_example_plans_with_the_public_names() -> None:
    from edgesplit import Conditions, Objective, Planner, build_planner

    from .helpers import make_profile

    profile = make_profile("m", times=[0.01, 0.02, 0.03], sizes=[4000, 3000, 2000, 10])
    planner = build_planner("m", profile, Objective("rank", weight=0.5, edge="rent"))
    assert isinstance(planner, Planner)
    assert planner.plan(Conditions(7200, 40, 1.5)).split_point in range(4)
