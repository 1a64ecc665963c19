"""The model repository: model files by name and version, loaded and reloaded as they change.

The layout is Triton's: ``DIR/<name>/<version>/model.pt2`` (a ``torch.export`` program file;
versions are positive integers) with an optional ``DIR/<name>/config.toml`` for all its
versions::

    split_points = [0, 3, 5]       # the split points this server runs (default: every one)

    [input]                        # one sample, batch first (default: the program's own)
    shape = [1, 3, 32, 32]
    dtype = "float32"

    [batching]
    max_batch = 8                  # rows one request may carry (at most --max-batch)
    dynamic = true                 # false: never batch its tails with other requests'

``ModelRepository.refresh`` compares each version's files (size and modification time) with
what it loaded last, loads only what is new or changed, forgets what is gone, and returns the
catalog to serve (``catalog.py``). A version that cannot be loaded is kept as ``UNAVAILABLE``
with a one-line reason and logged once; it never stops the others. Names are letters, digits,
``_``, ``.`` and ``-``; anything else in ``DIR`` is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgesplit.cloud.catalog import Catalog, ServedModel, Unavailable
from edgesplit.cloud.service import CloudService
from edgesplit.core.splitting import SplitModel
from edgesplit.errors import first_validation_error
from edgesplit.models.digest import model_digest
from edgesplit.models.sources import load_program

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt2"
CONFIG_FILE = "config.toml"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
VERSION = re.compile(r"[1-9][0-9]{0,8}")


class InputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[int] = Field(min_length=1, max_length=8)
    dtype: str = "float32"


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_batch: int | None = Field(default=None, ge=1)
    dynamic: bool = True


class ModelConfig(BaseModel):
    """A model's ``config.toml``; unknown keys are refused, so a typo is not silently ignored."""

    model_config = ConfigDict(extra="forbid")
    split_points: list[int] | None = Field(default=None, min_length=1)
    input: InputConfig | None = None
    batching: BatchingConfig = BatchingConfig()


Loader = Callable[[Path, ModelConfig], SplitModel]  # a version's directory, its model's config
Stamp = tuple[tuple[str, int, int], ...]  # (file, size, mtime_ns) of what a version reads


@dataclass(frozen=True)
class Loaded:
    stamp: Stamp
    outcome: ServedModel | Unavailable


class ModelRepository:
    """One model repository directory and the versions loaded from it so far.

    ``load`` turns a version's directory and its model's config into a split (the default
    reads ``model.pt2``); ``taken`` are names served from elsewhere (the zoo's), which the
    repository may not reuse."""

    def __init__(self, root: Path, load: Loader, taken: Sequence[str] = (),
                 prepare: Callable[[SplitModel], object] | None = None) -> None:
        self.root = root
        self.load = load
        self.taken = frozenset(taken)
        self.prepare = prepare  # run on each split once its digest is taken (faster kernels)
        self._loaded: dict[tuple[str, str], Loaded] = {}

    def refresh(self, base: Sequence[ServedModel] = ()) -> Catalog | None:
        """Load what changed since the last call; the catalog of ``base`` and the repository's
        models, or None when nothing changed."""
        now = self.scan()
        if now == {key: loaded.stamp for key, loaded in self._loaded.items()}:
            return None
        for key in sorted(self._loaded.keys() - now.keys()):
            log.info("model repository: %s version %s removed", *key)
            del self._loaded[key]
        for key, stamp in sorted(now.items()):
            if key not in self._loaded or self._loaded[key].stamp != stamp:
                self._loaded[key] = Loaded(stamp, self._load(*key))
        outcomes = [loaded.outcome for loaded in self._loaded.values()]
        return Catalog.of([*base, *(o for o in outcomes if isinstance(o, ServedModel))],
                          tuple(o for o in outcomes if isinstance(o, Unavailable)))

    def scan(self) -> dict[tuple[str, str], Stamp]:
        """Every ``(name, version)`` directory in the repository and its files' stamps."""
        found: dict[tuple[str, str], Stamp] = {}
        try:
            for model in sorted(self.root.iterdir()):
                if not (NAME.fullmatch(model.name) and model.is_dir()):
                    continue
                config = _stamp(model / CONFIG_FILE)
                for version in model.iterdir():
                    if VERSION.fullmatch(version.name) and version.is_dir():
                        found[(model.name, version.name)] = (
                            *config, *_stamp(version / MODEL_FILE))
        except OSError as exc:  # unreadable now (permissions, a mount gone): keep serving
            log.warning("model repository %s cannot be read: %s", self.root, exc)
            return {key: loaded.stamp for key, loaded in self._loaded.items()}
        return found

    def _load(self, name: str, version: str) -> ServedModel | Unavailable:
        """One version, or why it cannot be served (logged once, in one line)."""
        try:
            if name in self.taken:
                raise ValueError(f"the name {name!r} is already served by --models (a zoo "
                                 "model or a file of that name)")
            config = read_config(self.root / name / CONFIG_FILE)
            split = self.load(self.root / name / version, config)
            served = ServedModel(
                split, name, version, model_digest(split),
                frozenset(config.split_points) if config.split_points else None,
                config.batching.max_batch, config.batching.dynamic, from_repository=True)
            for point in served.split_points or ():
                split.check_split_point(point)
            if self.prepare is not None:
                self.prepare(split)
        except Exception as exc:  # any failure of a user's file is that file's, in one line
            reason = one_line(exc)
            log.warning("model repository: %s version %s is UNAVAILABLE: %s", name, version,
                        reason)
            return Unavailable(name, version, reason)
        log.info("model repository: %s version %s loaded (%s)", name, version, served.digest)
        return served


def load_version(directory: Path, config: ModelConfig) -> SplitModel:
    """``model.pt2`` in a version's ``directory`` as a split: read and checked by
    ``models.sources`` (nothing in it is unpickled or run), its sample input the program's own
    or the config's ``[input]``."""
    path = directory / MODEL_FILE
    if not path.is_file():
        held = sorted(p.name for p in directory.iterdir())
        raise ValueError(
            f"no {MODEL_FILE} in {directory.parent.name}/{directory.name}/"
            + (f" (it holds {', '.join(held[:3])}{', ...' if held[3:] else ''}: a version's "
               f"program file must be named {MODEL_FILE})" if held else ""))
    given = config.input
    split, _ = load_program(path, given.shape if given else None, given.dtype if given else None)
    return split


def read_config(path: Path) -> ModelConfig:
    """A model's ``config.toml``, or the defaults when there is none."""
    if not path.is_file():
        return ModelConfig()
    try:
        return ModelConfig.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path.name} is not TOML: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"{path.name}: {first_validation_error(exc)}") from None


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its kind and its first line."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return first if isinstance(exc, ValueError) and first else f"{type(exc).__name__}: {first}"


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What decides whether ``path`` changed: its size and modification time (none: absent)."""
    try:
        info = path.stat()
    except OSError:
        return ()
    return ((path.name, info.st_size, info.st_mtime_ns),)


async def watch(repository: ModelRepository, service: CloudService, poll_s: float) -> None:
    """Serve the repository's changes as they come: every ``poll_s``, load what changed on a
    thread of its own (the event loop and the tails go on meanwhile) and swap the catalog."""
    base = [m for m in service.catalog.served.values() if not m.from_repository]
    while True:
        await asyncio.sleep(poll_s)
        try:
            catalog = await asyncio.to_thread(repository.refresh, base)
        except Exception:  # the poll outlives any one bad pass; the log says why
            log.exception("model repository %s: this check failed", repository.root)
            continue
        if catalog is not None:
            service.catalog = catalog
