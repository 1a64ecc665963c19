"""The demo: a real cloud, a real edge behind an emulated uplink and clock, a changing world.

``run_demo`` starts ``edgesplit cloud serve`` on a loopback port, a userspace link emulator in
front of it, and ``edgesplit edge run`` as its own process, slowed by SIGSTOP/SIGCONT duty
cycling to the scenario's clock speed (it reads that clock from a file). Then it plays the
scenario: bandwidth, round-trip time and clock change phase by phase, and the cloud is killed for
a few seconds and restarted. A live table shows the true conditions, what the edge believes, the
split each strategy would choose and what the edge measured. At the end it writes a report
folder: the measurement log, plots and a summary. No root, no network beyond loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import Conditions
from edgesplit.core.profiler import load_or_profile
from edgesplit.core.profiles import Profile, write_profile
from edgesplit.edge.factory import build_planner
from edgesplit.edge.measurements import read_measurements
from edgesplit.errors import EdgesplitError
from edgesplit.testbed.emulation import DutyCycler
from edgesplit.testbed.link import LinkEmulator
from edgesplit.testbed.processes import CloudProcess
from edgesplit.testbed.report import Phase, build_report, summarise, write_phases


@dataclass(frozen=True)
class Step:
    """One phase of the scenario: true conditions for ``seconds``."""

    name: str
    seconds: float
    bandwidth_kbps: float
    rtt_ms: float
    clock_ghz: float
    cloud_up: bool = True


SCENARIO = (
    Step("thesis mean", 10, 7200, 40, 1.5),
    Step("narrow uplink", 10, 1500, 60, 1.5),
    Step("slow clock, far cloud", 10, 1500, 150, 0.6),
    Step("cloud outage", 6, 1500, 150, 0.6, cloud_up=False),
    Step("fast uplink", 12, 50_000, 10, 1.2),
    Step("bad everything", 12, 400, 100, 0.6),
)
STRATEGIES = ("latency", "cost", "rank")


class _EdgeWatcher(threading.Thread):
    """Reads the edge's JSON lines as they come, keeping the latest for the live table."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True, name="edge-watcher")
        self.process = process
        self.latest: dict[str, Any] | None = None
        self.first = threading.Event()

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.latest = json.loads(line)
            except ValueError:
                continue
            self.first.set()


def run_demo(*, model: str = "alexnet", out_dir: Path | None = None,
             scenario: Sequence[Step] = SCENARIO, interval_s: float = 0.5,
             profile: Profile | None = None, console: Console | None = None) -> Path:
    """Play ``scenario`` and return the report folder (``profile``: this machine's cached
    profile of ``model`` when not given)."""
    console = console or Console()
    out_dir = Path(out_dir or f"edgesplit-report-{datetime.now():%Y%m%d-%H%M%S}")
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]edgesplit demo[/]: {model}, {sum(s.seconds for s in scenario):g} s "
                  f"of changing conditions; report in {out_dir}/")
    if profile is None:
        with console.status("profiling the edge (once per machine)..."):
            profile = load_or_profile(model)
    profile_path = write_profile(profile, out_dir / "edge-profile.json")
    native = profile.machine.clock_ghz
    planners = {s: build_planner(model, profile, Objective(s, 0.5, "rent")) for s in STRATEGIES}
    cloud = CloudProcess(models=model, log=out_dir / "cloud.log")
    clock_file = out_dir / "clock_ghz"
    clock_file.write_text(str(scenario[0].clock_ghz))
    cloud.launch()
    edge: subprocess.Popen[str] | None = None
    try:
        with console.status("starting the cloud server..."):
            cloud.wait_ready()
        # A 4 KB burst, like the tbf qdisc of the thesis's testbed (32 kbit): small tensors
        # pay their serialisation time too.
        with LinkEmulator("127.0.0.1", cloud.port, rate_kbps=scenario[0].bandwidth_kbps,
                          rtt_ms=scenario[0].rtt_ms, burst_bytes=4096) as link:
            launched = datetime.now(UTC)  # the first phase starts with the edge's first inference
            with open(out_dir / "edge.log", "ab") as edge_log:  # the child keeps its copy
                edge = subprocess.Popen(
                    [sys.executable, "-m", "edgesplit.cli", "edge", "run",
                     "--cloud", f"http://127.0.0.1:{link.port}", "--model", model, "--sample",
                     "--duration", str(sum(s.seconds for s in scenario) + 600),
                     "--interval", str(interval_s), "--strategy", "rank", "--weight", "0.5",
                     "--edge", "rent", "--codec", "auto", "--clock-file", str(clock_file),
                     "--bandwidth-kbps", str(scenario[0].bandwidth_kbps),
                     "--rtt-ms", str(scenario[0].rtt_ms), "--replan-interval", "5",
                     "--profile", str(profile_path), "--log", str(out_dir), "--json"],
                    stdout=subprocess.PIPE, stderr=edge_log, text=True)
            watcher = _EdgeWatcher(edge)
            watcher.start()
            with console.status("starting the edge..."):
                if not watcher.first.wait(timeout=180):
                    raise EdgesplitError(f"the edge did not start; see {out_dir}/edge.log")
            phases = _play(scenario, link, cloud, clock_file, edge.pid, native, watcher,
                           planners, console, launched)
        write_phases(phases, out_dir)
    finally:
        if edge is not None:
            edge.terminate()
            try:
                edge.wait(timeout=20)
            except subprocess.TimeoutExpired:
                edge.kill()
        cloud.stop()
    pareto = planners["rank"].plan(Conditions(7200, 40, 1.5))
    summary = build_report(out_dir, title=f"edgesplit demo: {model}, rented edge, rank w=0.5, "
                           "codecs chosen per split point", pareto_plan=pareto)
    _print_summary(out_dir, console)
    console.print(f"report: {summary} (timeline.png, pareto.png, measurements.csv)")
    return out_dir


def _play(scenario: Sequence[Step], link: LinkEmulator, cloud: CloudProcess, clock_file: Path,
          edge_pid: int, native_ghz: float, watcher: _EdgeWatcher,
          planners: dict[str, Planner], console: Console, launched: datetime) -> list[Phase]:
    phases: list[Phase] = []
    with DutyCycler(edge_pid, native_ghz, min(scenario[0].clock_ghz, native_ghz)) as cycler, \
            Live(console=console, refresh_per_second=4, transient=False) as live:
        for step in scenario:
            start = datetime.now(UTC) if phases else launched
            link.set_rate_kbps(step.bandwidth_kbps)
            link.set_rtt_ms(step.rtt_ms)
            clock = min(step.clock_ghz, native_ghz)
            cycler.set_clock(clock)
            clock_file.write_text(str(clock))
            if not step.cloud_up:
                cloud.kill()
            ends = time.monotonic() + step.seconds
            while time.monotonic() < ends:
                live.update(_table(step, watcher, planners))
                time.sleep(0.25)
            if not step.cloud_up:
                cloud.launch()  # back in a few seconds; the edge resumes when it answers
            phases.append(Phase(step.name, start.isoformat(timespec="milliseconds"),
                                datetime.now(UTC).isoformat(timespec="milliseconds"),
                                step.bandwidth_kbps, step.rtt_ms, clock, step.cloud_up))
    return phases


def _table(step: Step, watcher: _EdgeWatcher, planners: dict[str, Planner]) -> Table:
    table = Table(title=f"phase: {step.name}", show_header=True, expand=False)
    for column in ("", "bandwidth kbit/s", "RTT ms", "clock GHz", "cloud"):
        table.add_column(column)
    table.add_row("true", f"{step.bandwidth_kbps:g}", f"{step.rtt_ms:g}", f"{step.clock_ghz:g}",
                  "up" if step.cloud_up else "[red]down[/]")
    m = watcher.latest
    if m is None:
        return table
    table.add_row("edge believes", f"{m['bandwidth_kbps']:.0f}", f"{m['rtt_ms']:.1f}",
                  f"{m['clock_ghz']:g}", "")
    conditions = Conditions(m["bandwidth_kbps"], m["rtt_ms"], m["clock_ghz"])
    choices = ", ".join(f"{name}: {planner.plan(conditions).split_point}"
                        for name, planner in planners.items())
    where = "cloud" if m["finished"] == "cloud" else "[red]edge[/]"
    table.caption = (
        f"#{m['seq']}: split {m['split_point']} ({m['codec']}) -> {where}, "
        f"measured {m['latency_s'] * 1e3:.0f} ms vs predicted "
        f"{m['predicted_latency_s'] * 1e3:.0f} ms, {m['cost_usd'] * 1e6:.3f} µ$\n"
        f"split each strategy would choose now (raw tensors): {choices}")
    return table


def _print_summary(out_dir: Path, console: Console) -> None:
    from edgesplit.testbed.report import read_phases

    rows = summarise(read_measurements(out_dir), read_phases(out_dir))
    table = Table(title="summary per phase", caption="ms: median latency measured (predicted); "
                  "err: median prediction error of offloads; µ$: the phase's total cost")
    for column in ("phase", "n", "cloud", "splits (most used)", "ms", "err", "µ$"):
        table.add_column(column)
    for s in rows:
        splits = ", ".join(s.split_points.split(", ")[:2])
        table.add_row(s.phase, str(s.inferences), str(s.in_cloud), splits,
                      f"{s.median_latency_s * 1e3:.0f} ({s.median_predicted_s * 1e3:.0f})",
                      f"{s.prediction_error:.0%}", f"{s.cost_usd * 1e6:.1f}")
    console.print(table)
