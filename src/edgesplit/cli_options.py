"""Option groups the commands share, each parsed into a typed object the command is handed.

``options(Kind, *click_options)`` adds the options to a command and hands it one ``Kind`` made
of their values, under the group's name (``planning``, ``link``, ``profiles``, ``auth``), so a
command's signature says what it takes. ``plan`` and ``edge run`` take the same planning (an
objective, its prices and a predictor), link and profile options; ``edge run`` adds the auth
group. Choices come from the registries (strategies, predictors, edge modes). ``cloud serve``
makes its options from ``ServerSettings`` instead (``SettingsCommand``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from edgesplit.core.cost import EdgeMode, Prices
from edgesplit.core.planning import Objective
from edgesplit.core.policies import Strategy
from edgesplit.core.predictors import PREDICTORS
from edgesplit.errors import EdgesplitError, MissingLimit
from edgesplit.extras import needs_extra

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., Any])


class Number(click.FloatRange):
    """A float in a range, finite: click's ``FloatRange`` lets ``nan`` and ``inf`` through (they
    fail none of its comparisons), and the core would then refuse them naming its own field
    (``clock_ghz``), not the flag the user typed. Checked here, the message names the flag, and
    ``--help`` shows the range."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        number: float = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def write_problem(path: Path, *, folder: bool) -> str | None:
    """Why ``path`` (a file, or a ``folder``) cannot be written; None when it can.

    The only sure test is to try (permissions, a file where a folder is meant, a read-only or
    virtual file system such as /proc): the folders it lacks are made and a probe file written,
    then all of it is removed again, so a command that stops later leaves nothing behind. An
    existing file is opened for appending and closed, not changed.
    """
    target = path if folder else path.parent
    missing = [p for p in (target, *target.parents) if not p.exists()]
    made: list[Path] = []
    try:
        for missing_folder in reversed(missing):
            missing_folder.mkdir()
            made.append(missing_folder)
        if not folder and path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            probe = target / f".edgesplit-probe-{os.getpid()}" if folder else path
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for made_folder in reversed(made):
            made_folder.rmdir()
    return None


def require_writable(path: Path, *, folder: bool, hint: str) -> None:
    """``write_problem`` as one error line, for the paths a command writes without a flag."""
    problem = write_problem(path, folder=folder)
    if problem is not None:
        raise EdgesplitError(f"cannot write {path} ({problem}): {hint}")


class Writable(click.Path):
    """A path the command will write, checked when its flag is parsed: before the command
    measures or starts anything, and in one line naming the flag."""

    def __init__(self, *, folder: bool) -> None:
        super().__init__(file_okay=not folder, dir_okay=folder, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Path:
        path = Path(os.fsdecode(super().convert(value, param, ctx)))
        problem = write_problem(path, folder=not self.file_okay)
        if problem is not None:
            self.fail(f"cannot write '{path}' ({problem}); choose another path.", param, ctx)
        return path


def options(kind: type[Any], name: str, *click_options: Callable[[F], F]) -> Callable[[F], F]:
    """Add ``click_options`` (shown in ``--help`` in the order given) and hand the command one
    ``kind`` made of their values as the keyword ``name``."""
    fields = [f.name for f in dataclasses.fields(kind)]

    def apply(command: F) -> F:
        @functools.wraps(command)
        def collected(**values: Any) -> Any:
            mine = {field: values.pop(field) for field in fields}
            return command(**values, **{name: kind(**mine)})

        wrapped: Any = collected
        for option in reversed(click_options):
            wrapped = option(wrapped)
        return typing.cast(F, wrapped)
    return apply


def flag_of(field: str) -> str:
    """The option that gives an ``Objective`` field: ``deadline_ms`` is ``--deadline-ms``."""
    return f"--{field.replace('_', '-')}"


@dataclass(frozen=True)
class Planning:
    """What to optimise (strategy, weight, edge, limits, prices) and the predictor."""

    edge: str
    weight: float
    strategy: str
    predictor: str
    deadline_ms: float | None
    max_cost_usd: float | None
    edge_usd_per_hour: float
    cloud_usd_per_hour: float
    transfer_usd_per_gb: float
    edge_power_w: float
    energy_usd_per_kwh: float

    def objective(self) -> Objective:
        """The objective; a missing limit names its option."""
        prices = Prices(self.edge_usd_per_hour, self.cloud_usd_per_hour,
                        self.transfer_usd_per_gb, self.edge_power_w, self.energy_usd_per_kwh)
        try:
            return Objective(self.strategy, self.weight, self.edge, prices, self.deadline_ms,
                             self.max_cost_usd)
        except MissingLimit as exc:
            raise EdgesplitError(f"{str(exc).rpartition(': give ')[0]}: give "
                                 f"{flag_of(exc.needs)}") from None


PLANNING_OPTIONS = options(
    Planning, "planning",
    click.option("--edge", type=click.Choice([m.value for m in EdgeMode]), default="own",
                 show_default=True, help="Owned edge (its time is free) or rented."),
    click.option("--weight", type=Number(0, 1), default=0.5, show_default=True,
                 help="0 = latency only .. 1 = cost only."),
    click.option("--strategy", type=click.Choice([s.value for s in Strategy]), default="rank",
                 show_default=True, help="How to choose."),
    click.option("--predictor", type=click.Choice(list(PREDICTORS)), default="profile",
                 show_default=True, help="Latency predictor."),
    click.option("--deadline-ms", type=Number(min=0, min_open=True),
                 help="Deadline for --strategy slo."),
    click.option("--max-cost-usd", type=Number(min=0, min_open=True),
                 help="Cost cap per inference for --strategy budget."),
    click.option("--edge-usd-per-hour", type=Number(min=0), default=Prices().edge_usd_per_hour,
                 show_default=True, help="Rented edge price."),
    click.option("--cloud-usd-per-hour", type=Number(min=0), default=Prices().cloud_usd_per_hour,
                 show_default=True, help="Cloud price."),
    click.option("--transfer-usd-per-gb", type=Number(min=0), default=Prices().transfer_usd_per_gb,
                 show_default=True, help="Uplink data price."),
    click.option("--edge-power-w", type=Number(min=0), default=Prices().edge_power_w,
                 show_default=True, help="Owned edge's power draw while computing."),
    click.option("--energy-usd-per-kwh", type=Number(min=0), default=Prices().energy_usd_per_kwh,
                 show_default=True, help="Owned edge's energy price."),
)


@dataclass(frozen=True)
class Link:
    """The uplink assumed (``plan``), or assumed until measured (``edge run``)."""

    bandwidth_kbps: float
    rtt_ms: float


LINK_OPTIONS = options(
    Link, "link",
    click.option("--bandwidth-kbps", type=Number(min=0, min_open=True), default=7200,
                 show_default=True, help="Uplink bandwidth, kbit/s (edge run: until measured)."),
    click.option("--rtt-ms", type=Number(min=0), default=40, show_default=True,
                 help="Round-trip time to the cloud, ms (edge run: until measured)."),
)


@dataclass(frozen=True)
class Profiles:
    """Where the edge's and the cloud's profiles come from, and how to measure a missing one."""

    profile_file: Path | None
    cloud_profile: Path | None
    threads: int


PROFILE_OPTIONS = options(
    Profiles, "profiles",
    click.option("--profile", "profile_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Edge profile file (default: this machine's, cached)."),
    click.option("--cloud-profile", type=click.Path(dir_okay=False, path_type=Path),
                 help="Cloud profile file (default: the edge's: a cloud like this machine)."),
    click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                 help="torch threads when profiling."),
)


@dataclass(frozen=True)
class Auth:
    """How the edge proves itself to the cloud and checks the cloud's certificate."""

    token: str | None
    token_file: Path | None
    hmac_key_id: str | None
    hmac_key_file: Path | None
    cacert: Path | None

    def resolve(self) -> tuple[str | None, tuple[str, bytes] | None, bool | str]:
        """(bearer token, HMAC signing key, TLS verification), secrets read from their files
        or variables."""
        from edgesplit.wire.auth import secret_from

        token = secret_from(self.token, self.token_file, "EDGESPLIT_TOKEN")
        signing = None
        if self.hmac_key_id:
            secret = secret_from(None, self.hmac_key_file, "EDGESPLIT_HMAC_KEY")
            if secret is None:
                raise EdgesplitError("--hmac-key-id needs a secret: give --hmac-key-file or "
                                     "set EDGESPLIT_HMAC_KEY")
            signing = (self.hmac_key_id, secret.encode())
        return token, signing, str(self.cacert) if self.cacert else True


AUTH_OPTIONS = options(
    Auth, "auth",
    click.option("--token", envvar="EDGESPLIT_TOKEN", help="Bearer token (or EDGESPLIT_TOKEN)."),
    click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Read the bearer token from this file."),
    click.option("--hmac-key-id", envvar="EDGESPLIT_HMAC_KEY_ID",
                 help="Sign requests with this key id (or EDGESPLIT_HMAC_KEY_ID)..."),
    click.option("--hmac-key-file", type=click.Path(dir_okay=False, path_type=Path),
                 help="...and the secret in this file (or EDGESPLIT_HMAC_KEY)."),
    click.option("--cacert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="CA bundle (or the pinned certificate) to verify an HTTPS cloud with."),
)


class SettingsCommand(click.Command):
    """A command with one option per ``ServerSettings`` field (type, default and help from the
    field), made when first needed, so ``edgesplit --help`` imports no pydantic-settings."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not any(isinstance(p, SettingsOption) for p in self.params):
            with needs_extra("edgesplit cloud serve"):
                from edgesplit.cloud.settings import ServerSettings
            self.params[:0] = [SettingsOption(name, field)
                               for name, field in ServerSettings.model_fields.items()]
        return super().get_params(ctx)


class SettingsOption(click.Option):
    """``--max-pending`` for the field ``max_pending``. It defaults to None (not given), so the
    settings fill it from ``EDGESPLIT_MAX_PENDING`` or their own default."""

    def __init__(self, name: str, field: FieldInfo) -> None:
        kind = click_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        self.shown_default = (",".join(default) if isinstance(default, list)
                              else None if default in (None, False) else default)
        super().__init__([f"--{name.replace('_', '-')}", name], is_flag=kind is None,
                         type=kind, default=None, show_default=True, help=field.description)

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        """None (not given) when parsing; the setting's own default where help shows it."""
        return super().get_default(ctx, call) if call else self.shown_default


def click_type(annotation: Any) -> click.ParamType[Any] | None:
    """The click type for a settings field's annotation (None: a flag)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return click.Choice([str(arg) for arg in typing.get_args(annotation)])
    if origin is typing.Annotated and any(getattr(m, "path_type", None) == "dir"
                                          for m in annotation.__metadata__):
        return click.Path(exists=True, file_okay=False, path_type=Path)  # DirectoryPath
    given = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if origin is not list and given:  # X | None
        return click_type(given[0])
    if annotation is bool:
        return None
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return click.Path(dir_okay=False, path_type=Path)
    simple: dict[Any, click.ParamType[Any]] = {int: click.INT, float: click.FLOAT}
    return simple.get(annotation, click.STRING)
