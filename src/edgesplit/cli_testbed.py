"""``edgesplit testbed up|down|status`` and ``edgesplit experiment``, registered by ``cli.py``.

Heavy imports (torch, the testbed) stay inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from edgesplit.cli_dynamic import DYNAMIC_OPTIONS, Dynamic
from edgesplit.cli_options import Writable

if TYPE_CHECKING:
    from edgesplit.evaluation.experiment import ExperimentConfig

out = Console()
err = Console(stderr=True)


@click.group()
def testbed() -> None:
    """The root testbed: network namespaces, a tbf-shaped veth pair and CPU cgroups."""


@testbed.command()
@click.option("--tag", help="Short name for this testbed (default: random).")
@click.option("--bandwidth-kbps", type=click.FloatRange(min=0, min_open=True), default=7200,
              show_default=True, help="The uplink's rate.")
@click.option("--clock-ghz", type=click.FloatRange(0.01, 1.5), default=1.5, show_default=True,
              help="The edge's clock (1.5 GHz = one full core).")
def up(tag: str | None, bandwidth_kbps: float, clock_ghz: float) -> None:
    """Create a testbed and leave it up (until `edgesplit testbed down`)."""
    from edgesplit.testbed.bench import share_of
    from edgesplit.testbed.netns import CLOUD_ADDRESS, NetnsTestbed

    bed = NetnsTestbed(tag, rate_kbps=bandwidth_kbps)
    bed.up()
    bed.set_cpu_share(share_of(clock_ghz))
    n = bed.names
    out.print(f"testbed {n.tag} is up: edge namespace {n.edge_ns}, cloud namespace {n.cloud_ns}, "
              f"uplink {bandwidth_kbps:g} kbit/s (tbf on {n.edge_link}), edge cgroup "
              f"{n.edge_cgroup} at {share_of(clock_ghz):.0%} of a core\n"
              f"  cloud: ip netns exec {n.cloud_ns} edgesplit cloud serve --host {CLOUD_ADDRESS} "
              f"--allow-unauthenticated\n"
              f"  edge:  ip netns exec {n.edge_ns} edgesplit edge run --cloud "
              f"http://{CLOUD_ADDRESS}:8000 --model alexnet --sample "
              f"(after: echo <pid> > {n.edge_cgroup}/cgroup.procs)\n"
              f"  remove it with: edgesplit testbed down --tag {n.tag}", highlight=False,
              soft_wrap=True)


@testbed.command()
@click.option("--tag", help="Remove only this testbed (default: every edgesplit testbed).")
def down(tag: str | None) -> None:
    """Remove testbeds: processes inside, cgroups, namespaces, links and qdiscs."""
    from edgesplit.testbed.netns import teardown

    removed = teardown(tag)
    out.print("removed: " + ", ".join(removed) if removed else "nothing to remove",
              highlight=False, soft_wrap=True)


@testbed.command()
@click.option("--tag", help="Only this testbed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(tag: str | None, as_json: bool) -> None:
    """What edgesplit testbeds exist now."""
    from edgesplit.testbed.netns import status as testbed_status

    found = testbed_status(tag)
    if as_json:
        print(json.dumps(found))
        return
    if not any(found.values()):
        out.print("no edgesplit testbed is up")
    for kind, items in found.items():
        for item in items:
            out.print(f"{kind[:-1]}: {item}", highlight=False, soft_wrap=True)


@click.command()
@click.option("--out", "out_dir", required=True, type=Writable(folder=True),
              help="Folder for config.json, runs.csv, profiles and logs (resumed if it exists).")
@click.option("--suite", type=click.Choice(["thesis", "wide", "dynamic"]), default="thesis",
              show_default=True, help="thesis: its pools and 20 ms round trip; wide: bandwidth "
              "0.5-100 Mbit/s, round trip 5-200 ms with jitter, edge 0.1-1 of a core; dynamic: "
              "choosers compared on condition traces replayed live (see `edgesplit traces`).")
@click.option("--models", help="Comma list of models: zoo names, torch.export program files "
              "(.pt2) or package.module:factory (default: the suite's; thesis: "
              "alexnet,vgg16,mnist_cnn, wide: also resnet18).")
@click.option("--settings", type=click.IntRange(1, 30),
              help="Settings drawn (default: thesis 15, wide 20).")
@click.option("--repeats", type=click.IntRange(min=1),
              help="Rounds per setting: each measures every split point and every chooser "
              "once, in a seeded random order (default: 10).")
@click.option("--parts-repeats", type=click.IntRange(min=1),
              help="Rounds that a model with a composed oracle (VGG16; ResNet-18 too in the "
              "wide suite) takes part in: the first N (default: every round).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--testbed", "testbed_mode", type=click.Choice(["auto", "netns", "userspace"]),
              default="auto", show_default=True,
              help="netns needs root; userspace uses the relay and duty cycling.")
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Round trip added by the relay (thesis suite).")
@click.option("--oracle", type=click.Choice(["auto", "e2e", "parts"]), default="auto",
              show_default=True, help="Measure every split point end to end, or compose it "
              "from measured head, transfer and tail (auto: parts only for models whose cuts "
              "together exceed 20 MB).")
@click.option("--edge-speed", type=click.FloatRange(0.25, 1.0), default=1.0, show_default=True,
              help="The share of a core the pool's top clock (1.5 GHz) gets: 1 is a full core "
              "of this machine, 0.25 an edge four times slower (nearer a Raspberry Pi); thesis "
              "suite.")
@click.option("--quick", is_flag=True,
              help="One model (mnist_cnn unless --models), 3 settings, 2 repeats; dynamic: "
              "the MNIST CNN on two traces at 0.15 of their time.")
@DYNAMIC_OPTIONS
def experiment(out_dir: Path, suite: str, models: str | None, settings: int | None,
               repeats: int | None, parts_repeats: int | None, seed: int, testbed_mode: str,
               rtt_ms: float, oracle: str, edge_speed: float, quick: bool,
               dynamic: Dynamic) -> None:
    """The thesis's evaluation on a testbed: strategies, baselines and an oracle of every split
    point, measured in interleaved rounds; or (``--suite dynamic``) choosers on replayed
    condition traces."""
    _refuse_unused(suite)
    if suite == "dynamic":
        from edgesplit.cli_dynamic import run_dynamic

        run_dynamic(out_dir, models or "", repeats or 1, seed, testbed_mode, edge_speed, quick,
                    dynamic, err)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from edgesplit.evaluation.experiment import Experiment

    config = _static_config(suite, models, settings, repeats, parts_repeats, seed, testbed_mode,
                            rtt_ms, oracle, edge_speed, quick)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: tear the testbed down
    run = Experiment(config, out_dir)
    with run.claim(), Progress(TextColumn("{task.description}"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"),
                               TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("starting the testbed", total=None)
        log_line = _LogLine()

        def progress(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)
            if not err.is_terminal:  # nohup or a pipe: no live bar, so a line every 5%
                log_line(done, total, what)

        run.progress = progress
        run.say = lambda text: bar.console.print(text, highlight=False)
        result = run.measure()
    out.print(f"experiment done: {result / 'runs.csv'}; report with `edgesplit report "
              f"{result}`", highlight=False, soft_wrap=True)


UNUSED = {"thesis": ("traces", "objectives", "edges"),
          "wide": ("traces", "objectives", "edges"),
          "dynamic": ("settings", "parts_repeats", "rtt_ms", "oracle")}
"""The options each suite has no use for: given, they are refused rather than ignored."""


def _refuse_unused(suite: str) -> None:
    ctx = click.get_current_context()
    if suite == "wide" and any(ctx.get_parameter_source(k) is click.core.ParameterSource.
                               COMMANDLINE for k in ("rtt_ms", "edge_speed")):
        raise click.UsageError("the wide suite draws each setting's round trip and edge "
                               "speed: leave --rtt-ms and --edge-speed out")
    given = [f"--{name.replace('_', '-')}" for name in UNUSED[suite]
             if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"the {suite} suite does not use {', '.join(given)}: leave "
                               f"{'it' if len(given) == 1 else 'them'} out")


def _static_config(suite: str, models: str | None, settings: int | None, repeats: int | None,
                   parts_repeats: int | None, seed: int, testbed_mode: str, rtt_ms: float,
                   oracle: str, edge_speed: float, quick: bool) -> ExperimentConfig:
    """The thesis or wide suite's configuration from the command line's options."""
    from dataclasses import replace

    from edgesplit.extras import require_extra

    require_extra("edgesplit experiment", "all")  # it runs a cloud and an edge and draws plots
    from edgesplit.evaluation.experiment import ExperimentConfig
    from edgesplit.models.names import PROGRAM_SUFFIX, check_source

    base = ExperimentConfig.quick(suite) if quick else ExperimentConfig.of_suite(suite)
    names = tuple(str(Path(m.strip()).resolve()) if m.strip().endswith(PROGRAM_SUFFIX) else
                  m.strip() for m in models.split(",") if m.strip()) if models else base.models
    for name in names:  # sources: their paths made absolute for the testbed's processes
        check_source(name)
    return replace(base, seed=seed, testbed=testbed_mode, rtt_ms=rtt_ms, oracle=oracle,
                   edge_speed=edge_speed, models=names, settings=settings or base.settings,
                   repeats=repeats or base.repeats, parts_repeats=parts_repeats)


class _LogLine:
    """Progress as plain lines for a log file: every 5% of the units, with the time left
    estimated from this run's pace so far."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None
        self.step = -1

    def __call__(self, done: int, total: int, what: str) -> None:
        import time
        from datetime import UTC, datetime, timedelta

        now = time.monotonic()
        if self.first is None:
            self.first = (now, done)
        step = done * 20 // max(total, 1)
        if step == self.step:
            return
        self.step = step
        began, at_start = self.first
        pace = (now - began) / (done - at_start) if done > at_start else None
        left = f", about {pace * (total - done) / 60:.0f} min left (done near " \
            f"{datetime.now(UTC) + timedelta(seconds=pace * (total - done)):%H:%M} UTC)" \
            if pace else ""
        print(f"{datetime.now(UTC):%H:%M:%S} {done}/{total} units{left}: {what}", file=sys.stderr,
              flush=True)
