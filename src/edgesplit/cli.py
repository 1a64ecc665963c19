"""The ``edgesplit`` command. Subcommands wire files, profiles and the terminal to the pure core.

Every user mistake ends as one line on stderr and exit code 2; ``--json`` prints one object.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from edgesplit.cli_dynamic import traces
from edgesplit.cli_export import export
from edgesplit.cli_options import (
    AUTH_OPTIONS,
    LINK_OPTIONS,
    PLANNING_OPTIONS,
    PROFILE_OPTIONS,
    Auth,
    Link,
    Number,
    Planning,
    Profiles,
    SettingsCommand,
    Writable,
    require_writable,
)
from edgesplit.cli_testbed import experiment, testbed
from edgesplit.core import zoo
from edgesplit.core.planning import Planner, SplitPlan
from edgesplit.core.policies import STRATEGIES
from edgesplit.core.predictors import Conditions
from edgesplit.errors import EdgesplitError
from edgesplit.extras import needs_extra, require_extra

if TYPE_CHECKING:
    from torch import Tensor

    from edgesplit.cloud.settings import ServerSettings
    from edgesplit.core.profiles import Profile
    from edgesplit.core.zoo import ModelSpec
    from edgesplit.edge.runtime import InferenceResult
    from edgesplit.measuring.profiler import Progress as ProgressReport
    from edgesplit.models.sources import LoadedModel

out = Console()
err = Console(stderr=True)

@contextmanager
def progress_bar(quiet: bool) -> Iterator[ProgressReport | None]:
    """A rich progress bar for profiling (on stderr, so --json output stays clean)."""
    if quiet:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(f"profiling: {what}", total=total)
            bar.update(tasks[what], completed=done)

        yield report


def get_profile(model: str, path: Path | None, threads: int, quiet: bool,
                own: LoadedModel | None = None) -> Profile:
    """The profile in ``path``, else this machine's cached one (profiling only when missing:
    reading a cached profile imports no torch). A model of one's own (``own``) is cached per
    digest: a changed model is profiled again, and a ``path`` of another version refused."""
    from edgesplit.measuring.machine import describe_machine
    from edgesplit.measuring.store import cached_profile_path, read_profile

    if path is not None:
        profile = read_profile(path)
        if profile.model != model:
            raise EdgesplitError(f"{path} profiles {profile.model!r}, not {model!r}")
        if own is not None and profile.digest != own.digest:
            raise EdgesplitError(f"{path} profiles another version of {model} (digest "
                                 f"{str(profile.digest)[:19]}..., this one {own.digest[:19]}...)"
                                 ": profile this one")
        return profile
    cached = cached_profile_path(model, describe_machine(threads),
                                 own.digest if own else None)
    if own is not None:
        return _own_profile(own, cached, threads, quiet)
    if cached.exists():
        try:
            return read_profile(cached)
        except EdgesplitError:
            pass  # load_or_profile warns and measures again
    require_writable(cached.parent, folder=True, hint=CACHE_HINT)  # before, not after, measuring
    from edgesplit.measuring.profiler import load_or_profile

    if not quiet and not cached.exists():
        err.print(f"profiling {model} on this machine (once; cached for later)...",
                  highlight=False)
    with progress_bar(quiet) as report:
        return load_or_profile(model, threads=threads, progress=report)


CACHE_HINT = "set EDGESPLIT_CACHE_DIR to a folder you can write, or give --profile FILE"


def _own_profile(own: LoadedModel, cached: Path, threads: int, quiet: bool) -> Profile:
    """A model of one's own: its cached profile, else measured now and cached (without clock
    calibration, which rebuilds a zoo model in a worker: time is taken as 1/clock)."""
    from edgesplit.measuring.profiler import profile_model
    from edgesplit.measuring.store import read_profile, store_profile

    if cached.exists():
        try:
            return read_profile(cached)
        except EdgesplitError:
            pass  # measured again below
    require_writable(cached.parent, folder=True, hint=CACHE_HINT)
    if not quiet:
        err.print(f"profiling {own.name} on this machine (once per version; cached for "
                  "later)...", highlight=False)
    with progress_bar(quiet) as report:
        result = profile_model(own.name, threads=threads, clocks_ghz=(), progress=report,
                               split=own.split, sample=own.sample)
    store_profile(result, cached)
    return result


def own_model(source: str, input_shape: str | None, input_dtype: str | None
              ) -> LoadedModel | None:
    """None for a zoo name (the zoo's paths build nothing before they must); else the model
    of one's own that ``source`` names, loaded (a program file, a factory)."""
    from edgesplit.models.names import is_zoo

    if is_zoo(source) and input_shape is None and input_dtype is None:
        return None
    from edgesplit.models.sources import load_model

    shape = None
    if input_shape is not None:
        try:
            shape = [int(part) for part in input_shape.replace("x", ",").split(",")]
        except ValueError:
            raise EdgesplitError(f"--input-shape takes sizes separated by commas (batch first, "
                                 f"e.g. 1,3,32,32), got {input_shape!r}") from None
    return load_model(source, input_shape=shape, input_dtype=input_dtype)


def input_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--input-shape`` and ``--input-dtype``: the sample input of a factory that returns
    none (a program file knows its own)."""
    command = click.option("--input-dtype", help="The input's dtype (default float32) for a "
                           "factory that returns no sample input.")(command)
    return click.option("--input-shape", help="The input's shape, batch first (e.g. 1,3,32,32), "
                        "for a factory that returns no sample input.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgesplit")
def app() -> None:
    """Split a PyTorch model between an edge and a cloud server, cost-aware."""


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
CODEC_OPTION = click.option(
    "--codec", default="raw", show_default=True,
    help="raw, float16, int8, each optionally +lz4 or +zstd; a comma list; 'lossless'; or "
    "'auto' (edge run: lossy ones only where they keep the top-1 answer). With several, each "
    "split point gets its fastest.")
THREADS_OPTION = click.option("--threads", type=click.IntRange(min=1), default=1,
                              show_default=True, help="torch threads when profiling.")


@app.command()
@JSON_OPTION
def models(as_json: bool) -> None:
    """List the model zoo: layers, split points, parameters and weights (trained or synthetic:
    deterministic but untrained, so their answers are not real classes)."""
    rows: list[dict[str, Any]] = [{
        "model": name,
        "layers": spec.layers,
        "split_points": spec.split_points,
        "parameters": spec.parameters,
        "input_shape": list(spec.input_shape),
        "weights": "trained" if spec.trained else "synthetic",
        "description": spec.description,
    } for name, spec in zoo.MODELS.items()]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(*(Column(name, no_wrap=True) for name in (
                  "model", "weights", "layers", "parameters", "input")),
                  "description", box=box.SIMPLE, pad_edge=False, caption="synthetic weights: "
                  "deterministic, untrained; their answers are not real classes (codecs on "
                  "real digits: edgesplit codecs)")
    for row in rows:
        table.add_row(row["model"],
                      row["weights"] if row["weights"] == "trained" else "[yellow]synthetic[/]",
                      str(row["layers"]), f"{row['parameters']:,}",
                      "x".join(map(str, row["input_shape"][1:])), row["description"])
    out.print(table)


@app.command()
@click.option("--split-point", type=click.IntRange(min=0),
              help="Only this split point (default: every one that sends something).")
@JSON_OPTION
def codecs(split_point: int | None, as_json: bool) -> None:
    """Each codec's bytes and accuracy on real held-out digits (the trained MNIST CNN), against
    raw float32 tensors."""
    from edgesplit.core.codec_accuracy import codec_accuracy

    n = zoo.get_spec("mnist_cnn").layers
    if split_point is not None and split_point >= n:
        raise EdgesplitError(f"--split-point must be 0..{n - 1} for mnist_cnn (at {n} nothing "
                             f"is sent), got {split_point}")
    rows = codec_accuracy(split_points=None if split_point is None else [split_point])
    if as_json:
        print(json.dumps([r.to_dict() for r in rows]))
        return
    count = len(zoo.test_set("mnist_cnn")[1])
    where = "every split point" if split_point is None else f"split point {split_point}"
    table = Table("codec", Column("bytes × raw", justify="right"),
                  Column("accuracy", justify="right"),
                  Column("answers changed vs raw", justify="right"),
                  title=f"mnist_cnn on {count} held-out digits, {where}",
                  caption="bytes: per input, over raw float32's (a range over split points); "
                  "accuracy and changed answers: the worst split point")
    for codec in dict.fromkeys(r.codec for r in rows):
        mine = [r for r in rows if r.codec == codec]
        ratios = [r.bytes_per_input / r.raw_bytes for r in mine]
        span = f"{min(ratios):.2f}" + (f"-{max(ratios):.2f}" if max(ratios) > min(ratios)
                                       else "")
        table.add_row(codec, span, f"{min(r.accuracy for r in mine):.1%}",
                      f"{max(1 - r.agrees_with_raw for r in mine) * count:.0f} of {count}")
    out.print(table)


@app.command()
@click.argument("model")
@input_options
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed runs (median taken).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed runs first.")
@THREADS_OPTION
@click.option("--clocks", default="0.6,0.9,1.2,1.5", show_default=True,
              help="Emulated clock speeds (GHz) to calibrate at, comma-separated; '' for none.")
@click.option("--out", "out_file", type=Writable(folder=False),
              help="Write here, not to the cache.")
@JSON_OPTION
def profile(model: str, input_shape: str | None, input_dtype: str | None, repeats: int,
            warmup: int, threads: int, clocks: str, out_file: Path | None,
            as_json: bool) -> None:
    """Measure per-layer times and sizes on this machine (and calibrate the clock law).

    MODEL is a zoo name, a torch.export program file (.pt2) or package.module:factory; a model
    of one's own is not clock-calibrated (its time is taken as 1/clock) and is cached per
    version (digest)."""
    from edgesplit.core.profiles import cache_dir
    from edgesplit.measuring.store import cached_profile_path, store_profile
    from edgesplit.models.names import model_name

    model_name(model)  # an unknown name fails here, before anything loads
    clock_list = _floats(clocks, "--clocks")
    if out_file is None:  # the cache, checked before the measuring (and torch), not after
        require_writable(cache_dir() / "profiles", folder=True,
                         hint="set EDGESPLIT_CACHE_DIR to a folder you can write, or give --out")
    own = own_model(model, input_shape, input_dtype)
    from edgesplit.measuring.profiler import profile_model

    with progress_bar(as_json) as report:
        if own is None:
            result = profile_model(model, repeats=repeats, warmup=warmup, threads=threads,
                                   clocks_ghz=clock_list, progress=report)
        else:
            model = own.name
            result = profile_model(model, repeats=repeats, warmup=warmup, threads=threads,
                                   clocks_ghz=(), progress=report, split=own.split,
                                   sample=own.sample)
    path = store_profile(result, out_file or cached_profile_path(
        model, result.machine, own.digest if own else None))
    if as_json:
        print(result.model_dump_json())
        return
    table = Table("layer", "name", "type", "ms", "sends", title=f"{model} on "
                  f"{result.machine.cpu} at {result.machine.clock_ghz} GHz, "
                  f"{result.machine.threads} thread(s)")
    for layer, sp in zip(result.layers, result.split_points[1:], strict=True):
        table.add_row(str(layer.index), layer.name, layer.type, f"{layer.time_s * 1e3:.3f}",
                      _size(sp.offload_bytes))
    out.print(table)
    out.print(f"whole forward {result.forward_s * 1e3:.2f} ms (median of {repeats})")
    for point in result.calibration:
        out.print(f"  at {point.clock_ghz:g} GHz (emulated): {point.latency_s * 1e3:.2f} ms")
    out.print(f"saved {path}", soft_wrap=True)  # a path broken over lines cannot be copied


@app.command()
@click.argument("model")
@input_options
@LINK_OPTIONS
@click.option("--clock-ghz", type=Number(min=0, min_open=True), default=1.5,
              show_default=True, help="Edge clock speed, GHz.")
@PLANNING_OPTIONS
@CODEC_OPTION
@PROFILE_OPTIONS
@JSON_OPTION
@click.option("--indent", type=click.IntRange(min=0),
              help="Indent --json by N spaces (default: 2 on a terminal, one line when piped).")
def plan(model: str, input_shape: str | None, input_dtype: str | None, clock_ghz: float,
         codec: str, as_json: bool, indent: int | None, link: Link, planning: Planning,
         profiles: Profiles) -> None:
    """Predict latency and cost at every split point and choose one.

    MODEL is a zoo name, a torch.export program file (.pt2) or package.module:factory."""
    from edgesplit.measuring.store import cached_predictor, read_profile
    from edgesplit.models.names import model_name

    name = model_name(model)
    conditions = Conditions(link.bandwidth_kbps, link.rtt_ms, clock_ghz)
    objective, predictor = planning.objective(), planning.predictor
    own = own_model(model, input_shape, input_dtype)
    model = name
    edge_profile = get_profile(model, profiles.profile_file, profiles.threads, as_json, own)
    cloud = read_profile(profiles.cloud_profile) if profiles.cloud_profile else None
    estimator = cached_predictor(predictor, edge_profile, cloud)
    result = Planner(model, [layer.name for layer in edge_profile.layers], estimator,
                     objective, _codec_list(codec)).plan(conditions)
    if as_json:
        if indent is None and sys.stdout.isatty():
            indent = 2
        print(json.dumps(result.to_dict() | {"predictor": predictor}, indent=indent))
    else:
        print_plan(result, predictor)


def print_plan(result: SplitPlan, predictor: str) -> None:
    c = result.conditions
    o = result.objective
    title = (f"{result.model}: {c.bandwidth_kbps:g} kbit/s, RTT {c.rtt_ms:g} ms, "
             f"{c.clock_ghz:g} GHz; {o.edge} edge; {o.strategy} w={o.weight:g}; "
             f"{predictor} predictor")
    table = Table("sp", Column("layer", no_wrap=True, min_width=14), "edge", "comm", "cloud",
                  "total", "µ$", "sends", "codec", "",
                  title=title, caption="times in ms, cost in millionths of a dollar per "
                  "inference; ◀ chosen, * on the Pareto front")
    pareto = set(result.pareto)
    for row in result.candidates:
        is_chosen = row.split_point == result.split_point
        table.add_row(str(row.split_point), row.layer, f"{row.edge_s * 1e3:.2f}",
                      f"{row.comm_s * 1e3:.2f}", f"{row.cloud_s * 1e3:.2f}",
                      f"{row.latency_s * 1e3:.2f}", f"{row.cost_usd * 1e6:.4f}",
                      _size(row.offload_bytes), row.codec,
                      ("◀" if is_chosen else "") + ("*" if row.split_point in pareto else ""),
                      style="bold green" if is_chosen else None)
    out.print(table)
    chosen = result.chosen
    note = "" if result.constraint_met else f" ({STRATEGIES[o.strategy].unmet})"
    out.print(f"split after layer {chosen.split_point} ({chosen.layer}), {chosen.codec}: "
              f"{chosen.latency_s * 1e3:.1f} ms, {chosen.cost_usd * 1e6:.4f} µ$ per inference"
              f"{note}; Pareto front {list(result.pareto)}")


@app.command()
@click.option("--model", default="alexnet", show_default=True, help="A zoo model name.")
@click.option("--out", "out_dir", type=Writable(folder=True),
              help="Report folder (default: ./edgesplit-report-<time>).")
def demo(model: str, out_dir: Path | None) -> None:
    """A minute of a real edge and cloud under changing bandwidth, RTT, clock and an outage."""
    if out_dir is None:  # the default folder goes here
        require_writable(Path.cwd(), folder=True, hint="give --out DIR")
    require_extra("edgesplit demo", "all")  # it runs a cloud and an edge and draws plots
    from edgesplit.evaluation.demo import run_demo

    zoo.get_spec(model)
    run_demo(model=model, out_dir=out_dir, console=out)


@app.command()
@click.argument("log_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=Writable(folder=True),
              help="Where to write the report (default: LOG_DIR/report; what a demo wrote in "
              "LOG_DIR stays as it is).")
def report(log_dir: Path, out_dir: Path | None) -> None:
    """Plots and a summary from a measurement log (edge run --log, or a demo's folder), or the
    report of an experiment folder (edgesplit experiment --out)."""
    from edgesplit.evaluation.dynamic_report import is_dynamic
    from edgesplit.evaluation.tables import is_experiment

    if out_dir is None:
        require_writable(log_dir / "report", folder=True, hint="give --out DIR")
    if is_dynamic(log_dir):
        from edgesplit.evaluation.dynamic_report import write_dynamic_report

        out.print(f"report: {write_dynamic_report(log_dir, out_dir)}")
        return
    if is_experiment(log_dir):
        from edgesplit.evaluation.experiment_report import write_experiment_report

        out.print(f"report: {write_experiment_report(log_dir, out_dir)}")
        return
    from edgesplit.evaluation.report import build_report

    out.print(f"report: {build_report(log_dir, out_dir, warn=_warn)}")


app.add_command(testbed)
app.add_command(experiment)
app.add_command(traces)
# The options every command that loads a model has (click adds them to a made command too).
app.add_command(cast(click.Command, input_options(export)))


@app.group()
def cloud() -> None:
    """The cloud server."""


@cloud.command(cls=SettingsCommand)
def serve(**given: Any) -> None:
    """Serve split models over HTTP (Open Inference Protocol v2 and the thesis's /offload).

    Every option can also be set with an EDGESPLIT_<OPTION> variable (EDGESPLIT_MAX_PENDING...).
    """
    import logging

    from edgesplit.cloud import create_app
    from edgesplit.cloud.serving import head_limits
    from edgesplit.cloud.serving import serve as serve_app
    from edgesplit.wire.auth import read_keys

    settings = server_settings(given)
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise EdgesplitError("--tls-cert and --tls-key go together: give both or neither")
    if settings.hmac_keys is not None:
        read_keys(settings.hmac_keys)  # a bad key file fails here, before models load
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(message)s")
    host = settings.host
    if not _is_loopback(host):
        if settings.token is None and settings.hmac_keys is None:
            if not settings.allow_unauthenticated:
                raise EdgesplitError(
                    f"refusing to serve on {host} without authentication: give --token, "
                    "--token-file or --hmac-keys (or --allow-unauthenticated to take the risk)")
            logging.getLogger("edgesplit").warning(
                "SERVING ON %s WITHOUT AUTHENTICATION: anyone who can reach this port can use "
                "the models", host)
        if settings.tls_cert is None:
            logging.getLogger("edgesplit").warning(
                "serving on %s without TLS: tensors and credentials travel in clear text", host)
    scaling = _ray_scaling(settings)
    _check_port_free(host, settings.port)  # before minutes of model loading, not after
    if scaling is not None:
        from edgesplit.cloud.ray_backend import serve_on_ray

        _load_own_models(settings)  # one line here, not a failure in every replica
        tls = ((str(settings.tls_cert), str(settings.tls_key))
               if settings.tls_cert and settings.tls_key else None)
        serve_on_ray(settings, host=host, port=settings.port, scaling=scaling,
                     ray_address=settings.ray_address, tls=tls)
        return
    serve_app(create_app(settings, service=_own_service(settings)), host, settings.port,
              limits=head_limits(settings), log_level=settings.log_level,
              tls_cert=settings.tls_cert, tls_key=settings.tls_key)


def _own_service(settings: ServerSettings) -> Any:
    """With a model of one's own among ``--models``, every model loaded now, so that a file
    that cannot be served is one line and exit 2 before the server starts; else None (the
    server loads the zoo's as it starts)."""
    from edgesplit.models.names import is_zoo

    if all(is_zoo(source) for source in settings.models):
        return None
    import torch

    from edgesplit.cloud.service import CloudService

    torch.set_num_threads(settings.tail_threads)
    return CloudService.from_zoo(settings.models, settings.max_batch, settings.device)


def _load_own_models(settings: ServerSettings) -> None:
    """Each model of one's own among ``--models`` loaded once in this process (then dropped),
    so that a file that cannot be served is one line and exit 2 before Ray starts."""
    from edgesplit.models.names import is_zoo
    from edgesplit.models.sources import load_model

    for source in settings.models:
        if not is_zoo(source):
            load_model(source)


def _ray_scaling(settings: ServerSettings) -> Any:
    """The Ray backend's scaling (Ray checked to be installed), or None for the built-in one."""
    if settings.backend != "ray":
        if settings.replicas or settings.autoscale or settings.ray_address:
            raise EdgesplitError("--replicas, --autoscale and --ray-address go with "
                                 "--backend ray")
        return None
    from edgesplit.cloud.ray_backend import Scaling, import_ray

    import_ray(settings.ray_address)
    return Scaling.parse(settings.replicas, settings.autoscale)


def server_settings(given: dict[str, Any]) -> ServerSettings:
    """The settings from the options given (the rest from EDGESPLIT_* variables or defaults);
    a bad value is one line naming the option and its variable."""
    from pydantic import SecretStr, ValidationError

    from edgesplit.cloud.settings import ServerSettings
    from edgesplit.wire.auth import read_secret

    try:
        settings = ServerSettings(**{k: v for k, v in given.items()
                                     if v is not None and v is not False})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        raise EdgesplitError(f"--{name.replace('_', '-')} (or EDGESPLIT_{name.upper()}): "
                             f"{error['msg']}") from None
    if given.get("token") is None and settings.token_file is not None:  # a file beats a variable
        settings.token = SecretStr(read_secret(settings.token_file))
    return settings


@app.group()
def edge() -> None:
    """The edge runtime."""


def _codec_list(value: str) -> list[str]:
    if value == "raw":  # the default, known without the codec registry (which imports torch)
        return ["raw"]
    from edgesplit.wire.codecs import all_codecs, parse_codec

    if value == "auto":
        return [c.name for c in all_codecs()]
    if value == "lossless":
        return [c.name for c in all_codecs() if not c.lossy]
    return [parse_codec(part.strip()).name for part in value.split(",") if part.strip()]


@edge.command("run")
@click.option("--cloud", "cloud_url", help="The cloud's base URL, e.g. http://127.0.0.1:8000 "
              "(none: run everything on the edge).")
@click.option("--model", required=True, help="A zoo model name, a torch.export program file "
              "(.pt2) or package.module:factory.")
@input_options
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="An image, a .npy tensor, or a folder of them (zoo models).")
@click.option("--sample", is_flag=True, help="Use the model's sample input.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many inferences.")
@click.option("--duration", type=Number(min=0, min_open=True),
              help="Stop after this many seconds.")
@click.option("--interval", type=Number(min=0), default=0.0, show_default=True,
              help="Seconds from one inference's start to the next.")
@PLANNING_OPTIONS
@CODEC_OPTION
@click.option("--split-point", type=click.IntRange(min=0),
              help="Force this split point: no planning, measured and logged as usual.")
@click.option("--clock-ghz", type=Number(min=0, min_open=True),
              help="The edge's clock speed (default: read from cpufreq).")
@click.option("--clock-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the (emulated) clock speed from this file at every inference.")
@LINK_OPTIONS
@click.option("--replan-interval", type=Number(min=0, min_open=True), default=10.0,
              show_default=True, help="Re-plan at least this often (seconds).")
@click.option("--replan-bandwidth", type=Number(min=0), default=0.2,
              show_default=True, help="Re-plan when the bandwidth moves this much (relative).")
@click.option("--replan-rtt-ms", type=Number(min=0), default=20.0, show_default=True,
              help="Re-plan when the round-trip time moves this much.")
@click.option("--replan-clock", type=Number(min=0), default=0.1, show_default=True,
              help="Re-plan when the clock speed moves this much (relative).")
@click.option("--hysteresis", type=Number(min=0), default=0.05, show_default=True,
              help="A new split must be this much faster or cheaper to replace the current.")
@click.option("--replan-mode", type=click.Choice(["replan", "once", "every", "interval"]),
              default="replan", show_default=True,
              help="replan: on the timer or a moved condition, with hysteresis; once: plan at "
              "the first inference only; every: at every inference, no hysteresis; interval: "
              "on the timer only.")
@click.option("--cloud-load/--no-cloud-load", "load_aware", default=True, show_default=True,
              help="Plan with the wait a busy cloud reports (or as if it were always idle).")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime"]), default="torch",
              show_default=True, callback=lambda _c, _p, value: _engine_installed(value),
              help="What runs the edge's layers: torch, or ONNX Runtime (the onnx extra; "
              "each head exported when first used).")
@AUTH_OPTIONS
@PROFILE_OPTIONS
@click.option("--log", "log_dir", type=Writable(folder=True),
              help="Append measurements to DIR/measurements.csv and DIR/layers.csv.")
@JSON_OPTION
def edge_run(cloud_url: str | None, model: str, input_shape: str | None,
             input_dtype: str | None, input_path: Path | None, sample: bool,
             count: int | None, duration: float | None, interval: float, codec: str,
             split_point: int | None,
             clock_ghz: float | None, clock_file: Path | None, replan_interval: float,
             replan_bandwidth: float, replan_rtt_ms: float, replan_clock: float,
             hysteresis: float, replan_mode: str, load_aware: bool, engine: str,
             log_dir: Path | None,
             as_json: bool, planning: Planning, link: Link, auth: Auth, profiles: Profiles) -> None:
    """Run inferences split with a cloud, re-planning as conditions change."""
    import torch

    from edgesplit.core.rescheduling import ReschedulePolicy
    from edgesplit.edge.factory import EdgeOptions, build_runtime
    from edgesplit.edge.sensors import CpufreqClock, FileClock, FixedClock
    from edgesplit.measuring.machine import native_clock_ghz
    from edgesplit.measuring.store import read_profile

    if (input_path is None) == (not sample):
        raise EdgesplitError("give either --input PATH or --sample")
    source = model
    model, own, points, names, inputs = _edge_model(model, input_shape, input_dtype,
                                                    input_path)
    count = 1 if sample and count is None and duration is None else count
    token, signing, verify = auth.resolve()
    unreachable = (_ask_cloud(cloud_url, model, points, token, signing, verify, source=source)
                   if cloud_url is not None else None)
    assumed = _assumed_link(link) if cloud_url is not None else None
    objective, threads = planning.objective(), profiles.threads
    codecs = _codec_list(codec)
    torch.set_num_threads(threads)
    clock = (FixedClock(clock_ghz) if clock_ghz else
             FileClock(clock_file, native_clock_ghz()) if clock_file else CpufreqClock())
    edge_options = EdgeOptions(
        model, cloud_url, objective=objective, predictor=planning.predictor,
        codecs=tuple(codecs), bandwidth_kbps=link.bandwidth_kbps, rtt_ms=link.rtt_ms,
        reschedule=ReschedulePolicy(interval_s=replan_interval, bandwidth_change=replan_bandwidth,
                                    rtt_change_ms=replan_rtt_ms, clock_change=replan_clock,
                                    hysteresis=hysteresis, mode=replan_mode),
        token=token, signing=signing, verify=verify, log_dir=log_dir, load_aware=load_aware,
        engine=engine)
    runtime = build_runtime(
        edge_options, split=own.split if own else None,
        calibration_inputs=own.sample if own else None, sample=own.sample if own else None,
        profile=get_profile(model, profiles.profile_file, threads, as_json, own),
        cloud_profile=read_profile(path) if (path := profiles.cloud_profile) else None,
        clock=clock)

    said = _SaidOnce()  # what the user has been told on stderr: each reason once
    show = _result_printer(names, said, as_json)
    with runtime, said.warnings():
        if assumed:  # once every option is known good
            err.print(assumed, highlight=False, markup=False, soft_wrap=True)
        if unreachable:
            said.warn(f"{unreachable}; inferences run on the edge until the cloud answers",
                      unreachable)
        results = runtime.run(inputs, count=count, duration_s=duration, interval_s=interval,
                              on_result=show, split_point=split_point)
    if not as_json and results:
        _print_run_summary(results, log_dir)


def _edge_model(source: str, input_shape: str | None, input_dtype: str | None,
                input_path: Path | None) -> tuple[str, LoadedModel | None, int, list[str],
                                                  Iterator[Tensor]]:
    """What ``edge run`` runs: the model's name, the model of one's own (None for the zoo's),
    its number of split points, and its inputs' names and the inputs."""
    from edgesplit.models.names import model_name

    name = model_name(source)
    own = own_model(source, input_shape, input_dtype)
    if own is None:
        spec = zoo.get_spec(name)
        return (name, None, spec.split_points, *_edge_inputs(name, spec, input_path))
    if input_path is not None:
        raise EdgesplitError(f"{source} is a model of your own: give --sample (--input reads "
                             "images and tensors for the zoo's models)")
    return name, own, own.split.n_layers + 1, ["sample"], iter([own.sample])


def _engine_installed(engine: str) -> str:
    """``--engine``, checked to be installed when parsed: before any profiling, not after."""
    if engine == "onnxruntime":
        require_extra("--engine onnxruntime", "onnx")
    return engine


def _ask_cloud(url: str, model: str, split_points: int, token: str | None,
               signing: tuple[str, bytes] | None, verify: bool | str, *,
               source: str) -> str | None:
    """Whether the cloud serves the model, asked before any profiling: a malformed URL, refused
    credentials or a model it does not serve is one error line at once, not after a profile
    of seconds. A cloud that cannot be reached is the reason why (it may come up later)."""
    from edgesplit.edge.client import CloudClient
    from edgesplit.edge.runtime import check_cloud

    with CloudClient(url, token=token, signing=signing, verify=verify) as client:
        return check_cloud(client, model, split_points, source)


def _edge_inputs(model: str, spec: ModelSpec,
                 input_path: Path | None) -> tuple[list[str], Iterator[Tensor]]:
    """The inputs' names, and the inputs read one at a time (the model's sample without a path)."""
    if input_path is None:
        return ["sample"], iter([zoo.sample_input(model)])
    from edgesplit.edge.inputs import input_files, load_input

    files = input_files(input_path)
    return [f.name for f in files], (load_input(f, spec) for f in files)


def _result_printer(names: list[str], said: _SaidOnce,
                    as_json: bool) -> Callable[[InferenceResult], None]:
    """What ``edge run`` prints of each inference: a JSON object, or one line."""

    def show(result: InferenceResult) -> None:
        m = result.measurement
        if as_json:
            print(json.dumps(dataclasses.asdict(m) | {"input": names[(m.seq - 1) % len(names)]}),
                  flush=True)
            return
        out.print(f"#{m.seq} {names[(m.seq - 1) % len(names)]}: class {m.top1_class}; "
                  f"split {m.split_point} {m.codec} -> {said.where(m.finished, m.fallback)}: "
                  f"{m.latency_s * 1e3:.1f} ms (predicted {m.predicted_latency_s * 1e3:.1f}), "
                  f"{m.cost_usd * 1e6:.4f} µ$; clock {m.clock_ghz:.2f} GHz, "
                  f"{m.bandwidth_kbps:.0f} kbit/s, RTT {m.rtt_ms:.1f} ms"
                  + (f" [re-planned: {m.replan}]" if m.replan else ""), highlight=False,
                  markup=False, soft_wrap=True)

    return show


def _print_run_summary(results: Sequence[InferenceResult], log_dir: Path | None) -> None:
    offloaded = sum(r.measurement.finished == "cloud" for r in results)
    latencies = sorted(r.measurement.latency_s for r in results)
    out.print(f"{_plural(len(results), 'inference')}, {offloaded} finished in the cloud, "
              f"median latency {latencies[len(latencies) // 2] * 1e3:.1f} ms"
              + (f"; log in {log_dir}" if log_dir else ""))


def _assumed_link(link: Link) -> str | None:
    """What the edge assumes of its uplink until it has measured it (defaults not given)."""
    source = click.get_current_context().get_parameter_source
    assumed = [text for name, text in (
        ("bandwidth_kbps", f"{link.bandwidth_kbps:g} kbit/s (--bandwidth-kbps)"),
        ("rtt_ms", f"an RTT of {link.rtt_ms:g} ms (--rtt-ms)"))
        if source(name) is click.core.ParameterSource.DEFAULT]
    return f"edgesplit: assuming {' and '.join(assumed)} until measured" if assumed else None


class _SaidOnce(logging.Filter):
    """Warnings of ``edge run`` on stderr, each reason once: the runtime's own warning about a
    reason the command already gave is dropped, and stdout lines name a reason already given
    by a short marker instead of repeating it."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def warn(self, text: str, reason: str) -> None:
        self.said.add(reason)
        err.print(f"edgesplit: warning: {text}", highlight=False, markup=False, soft_wrap=True)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        reason = str(args[-1]) if args else record.getMessage()
        if reason in self.said:
            return False
        self.said.add(reason)
        return True

    def where(self, finished: str, fallback: str) -> str:
        """Where an inference finished, for its stdout line."""
        if finished == "cloud":
            return "cloud"
        if fallback.startswith("offline: "):
            return "edge (cloud offline)"
        return "edge (see the warning)" if fallback in self.said else f"edge ({fallback})"

    @contextmanager
    def warnings(self) -> Iterator[None]:
        """Show the edge's warnings as ``edgesplit: warning: ...`` lines, each reason once."""
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edgesplit: warning: %(message)s"))
        handler.addFilter(self)
        handler.setLevel(logging.WARNING)
        logger = logging.getLogger("edgesplit")
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)


def _warn(text: str) -> None:
    err.print(f"edgesplit: warning: {text}", highlight=False, markup=False, soft_wrap=True)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.create_server((host, port), reuse_port=False):
            pass
    except OSError as exc:
        raise EdgesplitError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another "
                             "--port or --host") from exc


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EdgesplitError(f"{flag} takes numbers separated by commas, got {text!r}") from None


def _size(n: int) -> str:
    return f"{n / 1024:.1f}K" if n >= 1024 else f"{n}B"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; user errors become one line on stderr and exit code 2."""
    try:
        with needs_extra("this command"):
            result = app.main(args=argv, prog_name="edgesplit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        out.print(exc.ctx.get_help(), highlight=False, markup=False)
        return 0
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "edgesplit"
        err.print(f"edgesplit: error: {exc.format_message()} (see `{command} --help`)",
                  highlight=False, markup=False, soft_wrap=True)
        return 2
    except EdgesplitError as exc:
        err.print(f"edgesplit: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except (click.Abort, KeyboardInterrupt):
        err.print("edgesplit: interrupted", highlight=False)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
