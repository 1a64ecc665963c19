"""What the cloud serves: every model version by name, with its digest and what its config allows.

A ``Catalog`` is immutable and swapped whole when the model repository changes
(``repository.py``), so a request resolves its model once against one consistent catalog and a
tail already running keeps the version it started with. Zoo models and models handed to
``CloudService`` are served under their name as version 1; a repository's are keyed
``name@version`` (no model name holds ``@``), and the name alone means its newest ready version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgesplit.core.splitting import SplitModel
from edgesplit.errors import (
    InvalidSplitPoint,
    ModelVersionMismatch,
    UnknownModel,
    WireFormatError,
)

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class ServedModel:
    """One model version the cloud serves, and what its ``config.toml`` allows."""

    split: SplitModel
    name: str
    version: str = "1"
    digest: str = ""  # ``model_digest`` of the split as loaded, before any kernel is swapped
    split_points: frozenset[int] | None = None  # the allowed ones; None: every one
    max_batch: int | None = None  # rows one request may carry; None: the server's limit
    batching: bool = True  # whether its tails may run together with other requests'
    from_repository: bool = False

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}" if self.from_repository else self.name


@dataclass(frozen=True)
class Unavailable:
    """A version the repository holds but cannot serve, and why (one line)."""

    name: str
    version: str
    reason: str


@dataclass(frozen=True)
class Catalog:
    """The versions served (by key), the newest ready one of each name, and the broken ones."""

    served: Mapping[str, ServedModel] = field(default_factory=dict)
    latest: Mapping[str, str] = field(default_factory=dict)  # name -> key
    unavailable: tuple[Unavailable, ...] = ()

    @classmethod
    def of(cls, models: list[ServedModel], unavailable: tuple[Unavailable, ...] = ()
           ) -> Catalog:
        """The catalog of ``models``; a name's latest is its highest version (as a number)."""
        latest: dict[str, ServedModel] = {}
        for model in models:
            best = latest.get(model.name)
            if best is None or _number(model.version) > _number(best.version):
                latest[model.name] = model
        return cls({m.key: m for m in models}, {n: m.key for n, m in latest.items()},
                   unavailable)

    def resolve(self, name: str, version: str | None = None) -> str:
        """The key of ``name``'s ``version`` (its latest when None), or ``UnknownModel``."""
        if version is None:
            key = self.latest.get(name)
            if key is not None:
                return key
        else:
            key = next((m.key for m in self.served.values()
                        if m.name == name and m.version == version), None)
            if key is not None:
                return key
            broken = next((u for u in self.unavailable
                           if u.name == name and u.version == version), None)
            if broken is not None:
                raise UnknownModel(f"version {version} of {name} is {UNAVAILABLE}: "
                                   f"{broken.reason}")
            if name in self.latest:
                raise UnknownModel(f"model {name!r} has no version {version!r}: it has "
                                   f"{', '.join(self.versions(name))}")
        raise UnknownModel(f"model {name!r} is not served here: expected one of "
                           f"{', '.join(sorted(self.latest)) or '(none yet)'}")

    def entry(self, key_or_name: str) -> ServedModel:
        """A served version by its key, or a name's latest."""
        found = self.served.get(key_or_name)
        return found if found is not None else self.served[self.resolve(key_or_name)]

    def versions(self, name: str) -> list[str]:
        """``name``'s ready versions, oldest first."""
        return sorted((m.version for m in self.served.values() if m.name == name), key=_number)

    def index(self) -> list[dict[str, Any]]:
        """Every version with its state, Triton's repository index with each digest added."""
        rows: list[dict[str, Any]] = [
            {"name": m.name, "version": m.version, "state": READY, "reason": "",
             "digest": m.digest} for m in self.served.values()]
        rows += [{"name": u.name, "version": u.version, "state": UNAVAILABLE,
                  "reason": u.reason, "digest": None} for u in self.unavailable]
        return sorted(rows, key=lambda r: (r["name"], _number(r["version"])))


def check_split_point(model: ServedModel, value: object) -> int:
    """``value`` as a split point ``model`` has and its config allows."""
    split_point = model.split.check_split_point(value)
    if model.split_points is not None and split_point not in model.split_points:
        raise InvalidSplitPoint(
            f"split point {split_point} of {model.name} is not allowed here: this server "
            f"allows {', '.join(map(str, sorted(model.split_points)))}")
    return split_point


def check_digest(model: ServedModel, given: object) -> None:
    """Refuse (409) a request that names another version's digest (``model_digest``); a
    request without one is not checked (a plain OIP client)."""
    if given is None:
        return
    if not isinstance(given, str):
        raise WireFormatError("the parameter model_digest must be a string (sha256:<hex>)")
    if given != model.digest:
        raise ModelVersionMismatch(
            f"the edge's {model.name} ({given[:80]}) is not the version served here (version "
            f"{model.version}, {model.digest}): the edge and the cloud hold different models; "
            "serve the same model file on both sides")


def _number(version: str) -> tuple[int, str]:
    """Versions order as numbers (Triton's are integers), any other text after them."""
    return (int(version), "") if version.isdigit() else (-1, version)
