"""The ``edgesplit`` command. Subcommands wire files, profiles and the terminal to the pure core.

Every user mistake ends as one line on stderr and exit code 2; ``--json`` prints one object.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from edgesplit.core import zoo
from edgesplit.core.cost import Prices
from edgesplit.core.planning import Objective, Planner, SplitPlan
from edgesplit.core.policies import Strategy
from edgesplit.core.predictors import PREDICTORS, Conditions
from edgesplit.errors import EdgesplitError
from edgesplit.extras import needs_extra, require_extra

if TYPE_CHECKING:
    from edgesplit.core.profiles import Profile

out = Console()
err = Console(stderr=True)

@contextmanager
def progress_bar(quiet: bool) -> Iterator[object]:
    """A rich progress bar for profiling (on stderr, so --json output stays clean)."""
    if quiet:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn(), console=err, transient=True) as bar:
        tasks: dict[str, object] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(f"profiling: {what}", total=total)
            bar.update(tasks[what], completed=done)  # type: ignore[arg-type]

        yield report


def get_profile(model: str, path: Path | None, threads: int, quiet: bool) -> Profile:
    """The profile in ``path``, else this machine's cached one (profiling only when missing:
    reading a cached profile imports no torch)."""
    from edgesplit.core.machine import describe_machine
    from edgesplit.core.profiles import cached_profile_path, read_profile

    if path is not None:
        profile = read_profile(path)
        if profile.model != model:
            raise EdgesplitError(f"{path} profiles {profile.model!r}, not {model!r}")
        return profile
    cached = cached_profile_path(model, describe_machine(threads))
    if cached.exists():
        try:
            return read_profile(cached)
        except EdgesplitError:
            pass  # load_or_profile warns and measures again
    from edgesplit.core.profiler import load_or_profile

    if not quiet and not cached.exists():
        err.print(f"profiling {model} on this machine (once; cached for later)...",
                  highlight=False)
    with progress_bar(quiet) as report:
        return load_or_profile(model, threads=threads, progress=report)  # type: ignore[arg-type]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgesplit")
def app() -> None:
    """Split a PyTorch model between an edge and a cloud server, cost-aware."""


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
THREADS_OPTION = click.option("--threads", type=click.IntRange(min=1), default=1,
                              show_default=True, help="torch threads when profiling.")


@app.command()
@JSON_OPTION
def models(as_json: bool) -> None:
    """List the model zoo: layers, split points and parameters."""
    rows = [{
        "model": name,
        "layers": spec.layers,
        "split_points": spec.split_points,
        "parameters": spec.parameters,
        "input_shape": list(spec.input_shape),
        "description": spec.description,
    } for name, spec in zoo.MODELS.items()]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("model", "layers", "split points", "parameters", "input", "description")
    for row in rows:
        table.add_row(row["model"], str(row["layers"]), str(row["split_points"]),
                      f"{row['parameters']:,}", "x".join(map(str, row["input_shape"][1:])),
                      row["description"])
    out.print(table)


@app.command()
@click.argument("model")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed runs (median taken).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, show_default=True,
              help="Untimed runs first.")
@THREADS_OPTION
@click.option("--clocks", default="0.6,0.9,1.2,1.5", show_default=True,
              help="Emulated clock speeds (GHz) to calibrate at, comma-separated; '' for none.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here, not to the cache.")
@JSON_OPTION
def profile(model: str, repeats: int, warmup: int, threads: int, clocks: str,
            out_file: Path | None, as_json: bool) -> None:
    """Measure per-layer times and sizes on this machine (and calibrate the clock law)."""
    from edgesplit.core.fitted import store_profile
    from edgesplit.core.profiler import profile_model
    from edgesplit.core.profiles import cached_profile_path

    zoo.get_spec(model)
    clock_list = _floats(clocks, "--clocks")
    with progress_bar(as_json) as report:
        result = profile_model(model, repeats=repeats, warmup=warmup, threads=threads,
                               clocks_ghz=clock_list, progress=report)  # type: ignore[arg-type]
    path = store_profile(result, out_file or cached_profile_path(model, result.machine))
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
    out.print(f"saved {path}")


@app.command()
@click.argument("model")
@click.option("--bandwidth-kbps", type=float, default=7200, show_default=True,
              help="Uplink bandwidth, kbit/s.")
@click.option("--rtt-ms", type=float, default=40, show_default=True,
              help="Round-trip time to the cloud, ms.")
@click.option("--clock-ghz", type=float, default=1.5, show_default=True,
              help="Edge clock speed, GHz.")
@click.option("--edge", type=click.Choice(["own", "rent"]), default="own", show_default=True,
              help="Owned edge (its time is free) or rented.")
@click.option("--weight", type=float, default=0.5, show_default=True,
              help="0 = latency only .. 1 = cost only.")
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]), default="rank",
              show_default=True, help="How to choose.")
@click.option("--predictor", type=click.Choice(list(PREDICTORS)), default="profile",
              show_default=True, help="Latency predictor.")
@click.option("--deadline-ms", type=float, help="Deadline for --strategy slo.")
@click.option("--max-cost-usd", type=float, help="Cost cap per inference for --strategy budget.")
@click.option("--edge-usd-per-hour", type=float, default=Prices().edge_usd_per_hour,
              show_default=True, help="Rented edge price.")
@click.option("--cloud-usd-per-hour", type=float, default=Prices().cloud_usd_per_hour,
              show_default=True, help="Cloud price.")
@click.option("--transfer-usd-per-gb", type=float, default=0.0, show_default=True,
              help="Uplink data price.")
@click.option("--edge-power-w", type=float, default=0.0, show_default=True,
              help="Owned edge's power draw while computing.")
@click.option("--energy-usd-per-kwh", type=float, default=0.0, show_default=True,
              help="Owned edge's energy price.")
@click.option("--profile", "profile_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Edge profile file (default: this machine's, cached).")
@click.option("--cloud-profile", type=click.Path(dir_okay=False, path_type=Path),
              help="Cloud profile file (default: the edge's: a cloud like this machine).")
@THREADS_OPTION
@JSON_OPTION
def plan(model: str, bandwidth_kbps: float, rtt_ms: float, clock_ghz: float, edge: str,
         weight: float, strategy: str, predictor: str, deadline_ms: float | None,
         max_cost_usd: float | None, edge_usd_per_hour: float, cloud_usd_per_hour: float,
         transfer_usd_per_gb: float, edge_power_w: float, energy_usd_per_kwh: float,
         profile_file: Path | None, cloud_profile: Path | None, threads: int,
         as_json: bool) -> None:
    """Predict latency and cost at every split point and choose one."""
    from edgesplit.core.fitted import fit_predictor
    from edgesplit.core.profiles import read_profile

    zoo.get_spec(model)
    conditions = Conditions(bandwidth_kbps, rtt_ms, clock_ghz)
    prices = Prices(edge_usd_per_hour, cloud_usd_per_hour, transfer_usd_per_gb, edge_power_w,
                    energy_usd_per_kwh)
    objective = Objective(strategy, weight, edge, prices, deadline_ms, max_cost_usd)
    edge_profile = get_profile(model, profile_file, threads, as_json)
    cloud = read_profile(cloud_profile) if cloud_profile else None
    estimator = fit_predictor(predictor, edge_profile, cloud)
    result = Planner(model, [layer.name for layer in edge_profile.layers], estimator,
                     objective).plan(conditions)
    if as_json:
        print(json.dumps(result.to_dict() | {"predictor": predictor}))
    else:
        print_plan(result, predictor)


def print_plan(result: SplitPlan, predictor: str) -> None:
    c = result.conditions
    o = result.objective
    title = (f"{result.model}: {c.bandwidth_kbps:g} kbit/s, RTT {c.rtt_ms:g} ms, "
             f"{c.clock_ghz:g} GHz; {o.edge} edge; {o.strategy} w={o.weight:g}; "
             f"{predictor} predictor")
    table = Table("sp", Column("layer", no_wrap=True, min_width=14), "edge", "comm", "cloud",
                  "total", "µ$", "sends", "",
                  title=title, caption="times in ms, cost in millionths of a dollar per "
                  "inference; ◀ chosen, * on the Pareto front")
    pareto = set(result.pareto)
    for row in result.candidates:
        chosen = row.split_point == result.split_point
        table.add_row(str(row.split_point), row.layer, f"{row.edge_s * 1e3:.2f}",
                      f"{row.comm_s * 1e3:.2f}", f"{row.cloud_s * 1e3:.2f}",
                      f"{row.latency_s * 1e3:.2f}", f"{row.cost_usd * 1e6:.4f}",
                      _size(row.offload_bytes),
                      ("◀" if chosen else "") + ("*" if row.split_point in pareto else ""),
                      style="bold green" if chosen else None)
    out.print(table)
    chosen = result.chosen
    note = "" if result.constraint_met else (
        " (no split meets the deadline: the fastest)" if o.strategy is Strategy.SLO
        else " (no split within the budget: the cheapest)")
    out.print(f"split after layer {chosen.split_point} ({chosen.layer}): "
              f"{chosen.latency_s * 1e3:.1f} ms, {chosen.cost_usd * 1e6:.4f} µ$ per inference"
              f"{note}; Pareto front {list(result.pareto)}")


@app.command()
@click.option("--model", default="alexnet", show_default=True, help="A zoo model name.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (default: ./edgesplit-report-<time>).")
def demo(model: str, out_dir: Path | None) -> None:
    """A minute of a real edge and cloud under changing bandwidth, RTT, clock and an outage."""
    require_extra("edgesplit demo", "all")  # it runs a cloud and an edge and draws plots
    from edgesplit.testbed.demo import run_demo

    zoo.get_spec(model)
    run_demo(model=model, out_dir=out_dir, console=out)


@app.command()
@click.argument("log_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the report (default: LOG_DIR).")
def report(log_dir: Path, out_dir: Path | None) -> None:
    """Plots and a summary from a measurement log (edge run --log, or a demo's folder)."""
    from edgesplit.testbed.report import build_report

    out.print(f"report: {build_report(log_dir, out_dir)}")


@app.group()
def cloud() -> None:
    """The cloud server."""


@cloud.command()
@click.option("--host", envvar="EDGESPLIT_HOST", default="127.0.0.1", show_default=True,
              help="Address to bind.")
@click.option("--port", envvar="EDGESPLIT_PORT", type=click.IntRange(0, 65535), default=8000,
              show_default=True)
@click.option("--models", envvar="EDGESPLIT_MODELS", default=",".join(zoo.MODELS),
              show_default=True, help="Zoo models to load, comma-separated.")
@click.option("--token", envvar="EDGESPLIT_TOKEN", help="Accept this bearer token.")
@click.option("--token-file", envvar="EDGESPLIT_TOKEN_FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Read the bearer token from this file.")
@click.option("--hmac-keys", envvar="EDGESPLIT_HMAC_KEYS",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Accept requests signed with a key in this file ('<key id> <secret>' lines).")
@click.option("--max-skew-s", envvar="EDGESPLIT_MAX_SKEW_S",
              type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Largest clock difference allowed in signed requests.")
@click.option("--allow-unauthenticated", is_flag=True,
              help="Serve on a non-loopback address without a token or keys (not advised).")
@click.option("--tls-cert", envvar="EDGESPLIT_TLS_CERT",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", envvar="EDGESPLIT_TLS_KEY",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM).")
@click.option("--max-body-mb", envvar="EDGESPLIT_MAX_BODY_MB",
              type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True,
              help="Largest request body accepted.")
@click.option("--body-timeout-s", envvar="EDGESPLIT_BODY_TIMEOUT_S",
              type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Cut off a request body that stalls this long.")
@click.option("--max-batch", envvar="EDGESPLIT_MAX_BATCH", type=click.IntRange(min=1),
              default=16, show_default=True, help="Largest batch of tensors in one request.")
@click.option("--workers", envvar="EDGESPLIT_WORKERS", type=click.IntRange(min=1), default=2,
              show_default=True, help="Tails run at once (threads).")
@click.option("--torch-threads", envvar="EDGESPLIT_TORCH_THREADS", type=click.IntRange(min=1),
              default=1, show_default=True, help="torch threads per tail.")
@click.option("--max-pending", envvar="EDGESPLIT_MAX_PENDING", type=click.IntRange(min=1),
              default=32, show_default=True,
              help="Requests running or waiting before the server answers 503.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def serve(host: str, port: int, models: str, token: str | None, token_file: Path | None,
          hmac_keys: Path | None, max_skew_s: float, allow_unauthenticated: bool,
          tls_cert: Path | None, tls_key: Path | None, max_body_mb: float,
          body_timeout_s: float, max_batch: int, workers: int, torch_threads: int,
          max_pending: int, log_level: str) -> None:
    """Serve split models over HTTP (Open Inference Protocol v2 and the thesis's /offload).

    Every option can also be set with an EDGESPLIT_<OPTION> variable (EDGESPLIT_MAX_PENDING...).
    """
    import logging

    import uvicorn

    from edgesplit.cloud import ServerSettings, create_app
    from edgesplit.wire.auth import read_keys, secret_from

    names = [name.strip() for name in models.split(",") if name.strip()]
    for name in names:
        zoo.get_spec(name)
    if (tls_cert is None) != (tls_key is None):
        raise EdgesplitError("--tls-cert and --tls-key go together: give both or neither")
    token = secret_from(token, token_file, "EDGESPLIT_TOKEN")
    if hmac_keys is not None:
        read_keys(hmac_keys)  # a bad key file fails here, before models load
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    if not _is_loopback(host):
        if token is None and hmac_keys is None:
            if not allow_unauthenticated:
                raise EdgesplitError(
                    f"refusing to serve on {host} without authentication: give --token, "
                    "--token-file or --hmac-keys (or --allow-unauthenticated to take the risk)")
            logging.getLogger("edgesplit").warning(
                "SERVING ON %s WITHOUT AUTHENTICATION: anyone who can reach this port can use "
                "the models", host)
        if tls_cert is None:
            logging.getLogger("edgesplit").warning(
                "serving on %s without TLS: tensors and credentials travel in clear text", host)
    _check_port_free(host, port)  # before minutes of model loading, not after
    settings = ServerSettings(models=names, token=token, hmac_keys=hmac_keys,
                              max_skew_s=max_skew_s, max_body_mb=max_body_mb,
                              body_timeout_s=body_timeout_s, max_batch=max_batch,
                              workers=workers, torch_threads=torch_threads,
                              max_pending=max_pending)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                ssl_certfile=tls_cert, ssl_keyfile=tls_key, timeout_graceful_shutdown=30)


@app.group()
def edge() -> None:
    """The edge runtime."""


def _codec_list(value: str) -> list[str]:
    from edgesplit.wire.codecs import all_codecs, parse_codec

    if value == "auto":
        return [c.name for c in all_codecs()]
    if value == "lossless":
        return [c.name for c in all_codecs() if not c.lossy]
    return [parse_codec(part.strip()).name for part in value.split(",") if part.strip()]


@edge.command("run")
@click.option("--cloud", "cloud_url", help="The cloud's base URL, e.g. http://127.0.0.1:8000 "
              "(none: run everything on the edge).")
@click.option("--model", required=True, help="A zoo model name.")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="An image, a .npy tensor, or a folder of them.")
@click.option("--sample", is_flag=True, help="Use the model's sample input.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many inferences.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this many seconds.")
@click.option("--interval", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds from one inference's start to the next.")
@click.option("--weight", type=float, default=0.5, show_default=True,
              help="0 = latency only .. 1 = cost only.")
@click.option("--edge", "edge_mode", type=click.Choice(["own", "rent"]), default="own",
              show_default=True)
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]), default="rank",
              show_default=True)
@click.option("--predictor", type=click.Choice(list(PREDICTORS)), default="profile",
              show_default=True)
@click.option("--deadline-ms", type=float, help="Deadline for --strategy slo.")
@click.option("--max-cost-usd", type=float, help="Cost cap for --strategy budget.")
@click.option("--codec", default="raw", show_default=True,
              help="raw, float16, int8, each optionally +lz4 or +zstd; a comma list; "
              "'lossless'; or 'auto' (lossy ones only where they keep the top-1 answer).")
@click.option("--clock-ghz", type=click.FloatRange(min=0, min_open=True),
              help="The edge's clock speed (default: read from cpufreq).")
@click.option("--clock-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the (emulated) clock speed from this file at every inference.")
@click.option("--bandwidth-kbps", type=click.FloatRange(min=0, min_open=True), default=7200,
              show_default=True, help="Uplink bandwidth to assume until measured.")
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=40, show_default=True,
              help="Round-trip time to assume until measured.")
@click.option("--replan-interval", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Re-plan at least this often (seconds).")
@click.option("--replan-bandwidth", type=click.FloatRange(min=0), default=0.2,
              show_default=True, help="Re-plan when the bandwidth moves this much (relative).")
@click.option("--replan-rtt-ms", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Re-plan when the round-trip time moves this much.")
@click.option("--replan-clock", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Re-plan when the clock speed moves this much (relative).")
@click.option("--hysteresis", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="A new split must be this much faster or cheaper to replace the current.")
@click.option("--token", envvar="EDGESPLIT_TOKEN", help="Bearer token (or EDGESPLIT_TOKEN).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the bearer token from this file.")
@click.option("--hmac-key-id", envvar="EDGESPLIT_HMAC_KEY_ID",
              help="Sign requests with this key id (or EDGESPLIT_HMAC_KEY_ID)...")
@click.option("--hmac-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="...and the secret in this file (or EDGESPLIT_HMAC_KEY).")
@click.option("--cacert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA bundle (or the pinned certificate) to verify an HTTPS cloud with.")
@click.option("--profile", "profile_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Edge profile file (default: this machine's, cached).")
@click.option("--cloud-profile", type=click.Path(dir_okay=False, path_type=Path),
              help="Cloud profile file (default: the edge's, corrected online).")
@click.option("--log", "log_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Append measurements to DIR/measurements.csv and DIR/layers.csv.")
@THREADS_OPTION
@JSON_OPTION
def edge_run(cloud_url: str | None, model: str, input_path: Path | None, sample: bool,
             count: int | None, duration: float | None, interval: float, weight: float,
             edge_mode: str, strategy: str, predictor: str, deadline_ms: float | None,
             max_cost_usd: float | None, codec: str, clock_ghz: float | None,
             clock_file: Path | None, bandwidth_kbps: float, rtt_ms: float,
             replan_interval: float, replan_bandwidth: float, replan_rtt_ms: float,
             replan_clock: float, hysteresis: float, token: str | None,
             token_file: Path | None, hmac_key_id: str | None, hmac_key_file: Path | None,
             cacert: Path | None,
             profile_file: Path | None, cloud_profile: Path | None, log_dir: Path | None,
             threads: int, as_json: bool) -> None:
    """Run inferences split with a cloud, re-planning as conditions change."""
    import torch

    from edgesplit.core.machine import native_clock_ghz
    from edgesplit.core.profiles import read_profile
    from edgesplit.core.rescheduling import ReschedulePolicy
    from edgesplit.edge.factory import EdgeOptions, build_runtime
    from edgesplit.edge.inputs import input_files, load_input
    from edgesplit.edge.runtime import InferenceResult
    from edgesplit.edge.sensors import CpufreqClock, FileClock, FixedClock
    from edgesplit.wire.auth import secret_from

    spec = zoo.get_spec(model)
    if (input_path is None) == (not sample):
        raise EdgesplitError("give either --input PATH or --sample")
    if sample and count is None and duration is None:
        count = 1
    token = secret_from(token, token_file, "EDGESPLIT_TOKEN")
    signing = None
    if hmac_key_id:
        secret = secret_from(None, hmac_key_file, "EDGESPLIT_HMAC_KEY")
        if secret is None:
            raise EdgesplitError("--hmac-key-id needs a secret: give --hmac-key-file or set "
                                 "EDGESPLIT_HMAC_KEY")
        signing = (hmac_key_id, secret.encode())
    objective = Objective(strategy, weight, edge_mode, Prices(), deadline_ms, max_cost_usd)
    codecs = _codec_list(codec)
    if sample:
        names, inputs = ["sample"], iter([zoo.sample_input(model)])
    else:
        files = input_files(input_path)  # type: ignore[arg-type]
        names = [f.name for f in files]
        inputs = (load_input(f, spec) for f in files)  # read one at a time
    torch.set_num_threads(threads)
    clock = (FixedClock(clock_ghz) if clock_ghz else
             FileClock(clock_file, native_clock_ghz()) if clock_file else CpufreqClock())
    options = EdgeOptions(
        model, cloud_url, objective=objective, predictor=predictor, codecs=tuple(codecs),
        bandwidth_kbps=bandwidth_kbps, rtt_ms=rtt_ms,
        reschedule=ReschedulePolicy(interval_s=replan_interval, bandwidth_change=replan_bandwidth,
                                    rtt_change_ms=replan_rtt_ms, clock_change=replan_clock,
                                    hysteresis=hysteresis),
        token=token, signing=signing, verify=str(cacert) if cacert else True, log_dir=log_dir)
    runtime = build_runtime(
        options, profile=get_profile(model, profile_file, threads, as_json),
        cloud_profile=read_profile(cloud_profile) if cloud_profile else None, clock=clock)

    def show(result: InferenceResult) -> None:
        m = result.measurement
        if as_json:
            print(json.dumps(dataclasses.asdict(m) | {"input": names[(m.seq - 1) % len(names)]}),
                  flush=True)
            return
        where = "cloud" if m.finished == "cloud" else f"edge ({m.fallback})"
        out.print(f"#{m.seq} {names[(m.seq - 1) % len(names)]}: class {m.prediction}; "
                  f"split {m.split_point} {m.codec} -> {where}: "
                  f"{m.latency_s * 1e3:.1f} ms (predicted {m.predicted_latency_s * 1e3:.1f}), "
                  f"{m.cost_usd * 1e6:.4f} µ$; clock {m.clock_ghz:.2f} GHz, "
                  f"{m.bandwidth_kbps:.0f} kbit/s, RTT {m.rtt_ms:.1f} ms"
                  + (f" [re-planned: {m.replan}]" if m.replan else ""), highlight=False,
                  markup=False, soft_wrap=True)

    with runtime:
        unreachable = runtime.check_cloud()
        if unreachable:
            err.print(f"edgesplit: warning: {unreachable}; inferences run on the edge until the "
                      "cloud answers", highlight=False, markup=False, soft_wrap=True)
        results = runtime.run(inputs, count=count, duration_s=duration, interval_s=interval,
                              on_result=show)
    if not as_json and results:
        offloaded = sum(r.measurement.finished == "cloud" for r in results)
        latencies = sorted(r.measurement.latency_s for r in results)
        out.print(f"{_plural(len(results), 'inference')}, {offloaded} finished in the cloud, "
                  f"median latency {latencies[len(latencies) // 2] * 1e3:.1f} ms"
                  + (f"; log in {log_dir}" if log_dir else ""))


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
