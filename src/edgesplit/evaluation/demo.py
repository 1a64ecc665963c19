"""The demo: a real cloud, a real edge behind an emulated uplink and clock, a changing world.

``run_demo`` starts ``edgesplit cloud serve`` on a loopback port, a userspace link emulator in
front of it, and ``edgesplit edge run`` as its own process, slowed by SIGSTOP/SIGCONT duty
cycling to the scenario's clock speed (it reads that clock from a file). Then it plays the
scenario: bandwidth, round-trip time and clock change phase by phase, and the cloud is killed and
restarted. Phases are counted in inferences, not seconds, so a busy machine makes them longer,
never emptier; after the outage the next phase starts only once the restarted cloud is ready. A
live table shows the true conditions, what the edge believes, the split each strategy would
choose and what the edge measured (piped to a file: one line per inference instead). At the end
it writes a report folder: the measurement log, plots and a summary. No root, no network beyond
loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from edgesplit.core import zoo
from edgesplit.core.planning import Objective, Planner, SplitPlan
from edgesplit.core.predictors import Conditions
from edgesplit.core.profiles import Profile
from edgesplit.core.rescheduling import ReschedulePolicy, with_hysteresis
from edgesplit.edge.measurements import MEASUREMENTS_FILE, read_measurements
from edgesplit.errors import EdgesplitError
from edgesplit.evaluation.report import (
    PROFILE_FILE,
    Phase,
    build_report,
    percent,
    read_phases,
    summarise,
    write_phases,
)
from edgesplit.evaluation.runs import WEIGHT, strategies
from edgesplit.measuring.dutycycle import DutyCycler
from edgesplit.measuring.profiler import load_or_profile
from edgesplit.measuring.store import cached_planner, write_profile
from edgesplit.testbed.link import LinkEmulator
from edgesplit.testbed.processes import READY_TIMEOUT_S, CloudProcess, stop_process
from edgesplit.wire.codecs import all_codecs

PHASE_BOUND_S = 300.0  # a phase waiting this long for its inferences moves on regardless
RESTART = "cloud restarting"  # the phase after an outage, until the cloud is ready again
START_UP = "start-up"  # from the edge's launch to phase 1: its first inference
NOTES = {START_UP: "the edge's launch to phase 1: its first inference, at this machine's own "
                   "clock, before the emulated one takes hold",
         RESTART: "until the restarted cloud answers /v2/health/ready"}


@dataclass(frozen=True)
class Step:
    """One phase of the scenario: true conditions for ``inferences`` inferences, and at least
    ``offloads`` of them finished in the cloud (counted, not timed)."""

    name: str
    inferences: int
    bandwidth_kbps: float
    rtt_ms: float
    clock_ghz: float
    cloud_up: bool = True
    offloads: int = 0


SCENARIO = (
    Step("thesis mean", 20, 7200, 40, 1.5),
    Step("narrow uplink", 20, 1500, 60, 1.5),
    Step("slow clock, far cloud", 16, 1500, 150, 0.6),
    Step("cloud outage", 12, 1500, 150, 0.6, cloud_up=False),
    Step("fast uplink", 24, 50_000, 10, 1.2, offloads=12),
    Step("bad everything", 20, 400, 100, 0.6),
)
REPLAN_S = 5.0  # the edge's re-plan timer
EDGE_CODECS = tuple(c.name for c in all_codecs())  # what the edge's --codec auto allows


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _EdgeWatcher(threading.Thread):
    """Reads the edge's JSON lines as they come, keeping every one for counting and display."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True, name="edge-watcher")
        self.process = process
        self.rows: list[dict[str, Any]] = []
        self.first = threading.Event()

    def run(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.rows.append(json.loads(line))
            except ValueError:
                continue
            self.first.set()

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.rows[-1] if self.rows else None

    def since(self, stamp: str) -> tuple[int, int]:
        """Inferences logged from ``stamp`` on, and how many of them finished in the cloud."""
        rows = [r for r in list(self.rows) if r["time"] >= stamp]
        return len(rows), sum(r["finished"] == "cloud" for r in rows)


def run_demo(*, model: str = "alexnet", out_dir: Path | None = None,
             scenario: Sequence[Step] = SCENARIO, interval_s: float = 0.5,
             profile: Profile | None = None, console: Console | None = None) -> Path:
    """Play ``scenario`` and return the report folder (``profile``: this machine's cached
    profile of ``model`` when not given). Interrupted (Ctrl-C), it stops the edge and the
    cloud, writes the report of what ran so far and raises ``KeyboardInterrupt`` again."""
    console = console or Console()
    out_dir = Path(out_dir or f"edgesplit-report-{datetime.now():%Y%m%d-%H%M%S}")
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]edgesplit demo[/]: {model}, {len(scenario)} phases, at least "
                  f"{sum(s.inferences for s in scenario)} inferences, one every "
                  f"{interval_s:g} s; report in {out_dir}/", soft_wrap=True)
    if note := zoo.synthetic_note(model):
        console.print(note, highlight=False, markup=False, soft_wrap=True)
    played = _Played()
    try:
        if profile is None:
            with console.status("profiling the edge (once per machine)..."):
                profile = load_or_profile(model)
        write_profile(profile, out_dir / PROFILE_FILE)
        _run(model, scenario, interval_s, profile, out_dir, console, played)
    except (KeyboardInterrupt, EdgesplitError) as exc:
        cut = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped by an error"
        played.end(f" ({cut})")  # the phase in progress ends here, named so
        _report(model, out_dir, played.phases, profile, console, cut=cut)
        raise
    _report(model, out_dir, played.phases, profile, console)
    return out_dir


def _run(model: str, scenario: Sequence[Step], interval_s: float, profile: Profile,
         out_dir: Path, console: Console, played: _Played) -> None:
    """Start the cloud, the link and the edge, and play the scenario into ``played``; the edge
    and the cloud are stopped however it ends."""
    planners = {str(s): cached_planner(model, profile, Objective(s, WEIGHT, "rent"),
                                       codecs=EDGE_CODECS)
                for s in strategies().values()}
    cloud = CloudProcess(models=model, log=out_dir / "cloud.log")
    cloud.launch()
    edge: subprocess.Popen[str] | None = None
    try:
        with console.status("starting the cloud server..."):
            cloud.wait_ready()
        # A 4 KB burst, like the tbf qdisc of the thesis's testbed (32 kbit): small tensors
        # pay their serialisation time too.
        with LinkEmulator("127.0.0.1", cloud.port, rate_kbps=scenario[0].bandwidth_kbps,
                          rtt_ms=scenario[0].rtt_ms, burst_bytes=4096) as link:
            # The edge's first inference runs before phase 1 can begin (the clock is emulated
            # from then on): a phase of its own, at this machine's own clock.
            played.begin(replace(scenario[0], name=START_UP,
                                 clock_ghz=profile.machine.clock_ghz), profile.machine.clock_ghz)
            edge = _start_edge(model, link.port, scenario[0], interval_s, out_dir)
            watcher = _EdgeWatcher(edge)
            watcher.start()
            with console.status("starting the edge..."):
                if not watcher.first.wait(timeout=READY_TIMEOUT_S):
                    raise EdgesplitError(f"the edge did not start; see {out_dir}/edge.log")
            world = _World(link, cloud, out_dir / "clock_ghz", edge, profile.machine.clock_ghz)
            _play(scenario, world, _Screen(console, watcher, planners), played)
    finally:
        stop_process(edge, timeout_s=20)
        cloud.stop()


def _report(model: str, out_dir: Path, phases: Sequence[Phase], profile: Profile | None,
            console: Console, *, cut: str = "") -> None:
    """``phases.json``, the summary and the plots of what the log holds (``cut`` short, e.g.
    "interrupted": of what ran so far, if anything did)."""
    write_phases(phases, out_dir)
    if not (out_dir / MEASUREMENTS_FILE).exists():
        console.print(f"{cut or 'stopped'} before the first inference: nothing to report in "
                      f"{out_dir}", highlight=False, soft_wrap=True)
        return
    summary = build_report(out_dir, out_dir, profile=profile,
                           title=f"edgesplit demo: {model}, rented edge, rank w=0.5, codecs "
                           "chosen per split point" + (f" ({cut})" if cut else ""))
    _print_summary(out_dir, console)
    if cut:
        console.print(f"{cut}: the report covers what ran so far: {summary} (run "
                      f"`edgesplit report {out_dir}` to redraw it)", highlight=False,
                      soft_wrap=True)
        return
    console.print(f"report: {summary} (timeline.png, pareto.png, measurements.csv)",
                  highlight=False, soft_wrap=True)


def _start_edge(model: str, port: int, first: Step, interval_s: float,
                out_dir: Path) -> subprocess.Popen[str]:
    clock_file = out_dir / "clock_ghz"
    clock_file.write_text(str(first.clock_ghz))
    with open(out_dir / "edge.log", "ab") as edge_log:  # the child keeps its copy
        return subprocess.Popen(
            [sys.executable, "-m", "edgesplit.cli", "edge", "run",
             "--cloud", f"http://127.0.0.1:{port}", "--model", model, "--sample",
             "--count", "1000000", "--interval", str(interval_s), "--strategy", "rank",
             "--weight", "0.5", "--edge", "rent", "--codec", "auto",
             "--clock-file", str(clock_file), "--bandwidth-kbps", str(first.bandwidth_kbps),
             "--rtt-ms", str(first.rtt_ms), "--replan-interval", str(REPLAN_S),
             "--profile", str(out_dir / PROFILE_FILE), "--log", str(out_dir), "--json"],
            stdout=subprocess.PIPE, stderr=edge_log, text=True)


@dataclass
class _World:
    """What the scenario changes: the link, the cloud, the edge's clock (and the edge itself,
    to notice if it dies)."""

    link: LinkEmulator
    cloud: CloudProcess
    clock_file: Path
    edge: subprocess.Popen[str]
    native_ghz: float

    def apply(self, step: Step, cycler: DutyCycler) -> float:
        """Set the step's conditions; returns the clock speed emulated."""
        self.link.set_rate_kbps(step.bandwidth_kbps)
        self.link.set_rtt_ms(step.rtt_ms)
        clock = min(step.clock_ghz, self.native_ghz)
        cycler.set_clock(clock)
        self.clock_file.write_text(str(clock))
        return clock

    def wait(self, done: Callable[[], bool], screen: _Screen, bound_s: float) -> bool:
        """Refresh the screen until ``done()``; False if ``bound_s`` passed first."""
        deadline = time.monotonic() + bound_s
        while not done():
            if self.edge.poll() is not None:
                raise EdgesplitError(f"the edge exited; see {self.clock_file.parent}/edge.log")
            if time.monotonic() > deadline:
                return False
            screen.update()
            time.sleep(0.25)
        screen.update()
        return True


class _Played:
    """The phases played so far, and the one in progress (closed by the next, or cut short by
    an interrupt): what ``phases.json`` will hold."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self._open: tuple[Step, str, float] | None = None

    def begin(self, step: Step, clock_ghz: float) -> str:
        """Close the phase in progress, if any, and start ``step``'s; returns its start."""
        self.end()
        start = _now()
        self._open = (step, start, clock_ghz)
        return start

    def end(self, suffix: str = "") -> None:
        if self._open is None:
            return
        step, start, clock = self._open
        self.phases.append(Phase(step.name + suffix, start, _now(), step.bandwidth_kbps,
                                 step.rtt_ms, clock, step.cloud_up, NOTES.get(step.name, "")))
        self._open = None


def _play(scenario: Sequence[Step], world: _World, screen: _Screen, played: _Played) -> None:
    with DutyCycler(world.edge.pid, world.native_ghz,
                    min(scenario[0].clock_ghz, world.native_ghz)) as cycler:
        for number, step in enumerate(scenario, 1):
            clock = world.apply(step, cycler)
            if not step.cloud_up:
                world.cloud.kill()
            start = played.begin(step, clock)
            screen.begin(step, f"phase {number}/{len(scenario)}: {step.name}")
            try:
                if not world.wait(partial(_phase_done, step, screen.watcher, start), screen,
                                  PHASE_BOUND_S):
                    screen.say(f"{step.name}: moved on after {PHASE_BOUND_S:g} s")
            finally:
                screen.end()  # an interrupt leaves the live table's last frame too
            played.end()
            if not step.cloud_up:
                _restart(world, screen, replace(step, name=RESTART), clock, played)


def _phase_done(step: Step, watcher: _EdgeWatcher, start: str) -> bool:
    inferences, offloads = watcher.since(start)
    return inferences >= step.inferences and offloads >= step.offloads


def _restart(world: _World, screen: _Screen, step: Step, clock_ghz: float,
             played: _Played) -> None:
    """Bring the cloud back and wait until it is ready: a phase of its own, so that the next
    one starts with a cloud that answers."""
    world.cloud.launch()
    played.begin(step, clock_ghz)
    screen.begin(step, RESTART, note="the next phase starts once the cloud is ready")
    try:
        if not world.wait(world.cloud.ready, screen, READY_TIMEOUT_S):
            raise EdgesplitError(f"the restarted cloud was not ready within "
                                 f"{READY_TIMEOUT_S:g} s; see {world.cloud.log}")
    finally:
        screen.end()
    played.end()


class _Screen:
    """The live table on a terminal (each phase leaves its last frame); elsewhere, such as a
    file, one plain line per inference."""

    def __init__(self, console: Console, watcher: _EdgeWatcher,
                 planners: dict[str, Planner]) -> None:
        self.console = console
        self.watcher = watcher
        self.planners = planners
        self.live: Live | None = None
        self.step: Step | None = None
        self.title = ""
        self.note = ""
        self.shown = len(watcher.rows)

    def begin(self, step: Step, title: str, note: str = "") -> None:
        self.step, self.title, self.note = step, title, note
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.start()
        else:
            self.console.print(f"{title}: true {_conditions(step)}"
                               + (f" ({note})" if note else ""), highlight=False, soft_wrap=True)

    def update(self) -> None:
        assert self.step is not None
        if self.live is not None:
            self.live.update(_table(self.title, self.note, self.step, self.watcher.latest,
                                    self.planners))
            return
        rows = self.watcher.rows[self.shown:]
        self.shown += len(rows)
        for row in rows:
            self.console.print(_line(row), highlight=False, markup=False, soft_wrap=True)

    def say(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text, highlight=False)
        else:
            self.update()
            self.console.print(text, highlight=False, soft_wrap=True)

    def end(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        self.shown = len(self.watcher.rows)


def _conditions(step: Step) -> str:
    return (f"{step.bandwidth_kbps:g} kbit/s, RTT {step.rtt_ms:g} ms, {step.clock_ghz:g} GHz, "
            f"cloud {'up' if step.cloud_up else 'down'}")


def _line(m: dict[str, Any]) -> str:
    where = "cloud" if m["finished"] == "cloud" else "edge"
    return (f"  #{m['seq']} split {m['split_point']} {m['codec']} -> {where}: "
            f"{m['latency_s'] * 1e3:.0f} ms (predicted {m['predicted_latency_s'] * 1e3:.0f}); "
            f"edge believes {m['bandwidth_kbps']:.0f} kbit/s, RTT {m['rtt_ms']:.0f} ms, "
            f"{m['clock_ghz']:g} GHz" + (f"; re-planned ({m['replan']})" if m["replan"] else ""))


def _table(title: str, note: str, step: Step, m: dict[str, Any] | None,
           planners: dict[str, Planner]) -> RenderableType:
    """The live view: true and believed conditions, then what the edge ran, what each strategy
    would choose now with the edge's codecs, and why the edge's split differs."""
    table = Table("", "bandwidth kbit/s", "RTT ms", "clock GHz", Column("cloud", no_wrap=True),
                  title=title + (f"\n[yellow]{note}[/]" if note else ""), expand=False)
    table.add_row("true", f"{step.bandwidth_kbps:g}", f"{step.rtt_ms:g}", f"{step.clock_ghz:g}",
                  "up" if step.cloud_up else "[red]down[/]")
    if m is None:
        return table
    table.add_row("edge believes", f"{m['bandwidth_kbps']:.0f}", f"{m['rtt_ms']:.1f}",
                  f"{m['clock_ghz']:g}", "")
    conditions = Conditions(m["bandwidth_kbps"], m["rtt_ms"], m["clock_ghz"])
    plans = {name: planner.plan(conditions) for name, planner in planners.items()}
    codecs = {plan.codec for plan in plans.values()}
    choices = ", ".join(f"{name} {plan.split_point}" + ("" if len(codecs) == 1
                                                        else f" ({plan.codec})")
                        for name, plan in plans.items())
    where = "cloud" if m["finished"] == "cloud" else "[red]edge[/]"
    return Group(table, Text.from_markup(
        f"#{m['seq']}: split {m['split_point']} ({m['codec']}) -> {where}, "
        f"measured {m['latency_s'] * 1e3:.0f} ms vs predicted "
        f"{m['predicted_latency_s'] * 1e3:.0f} ms, {m['cost_usd'] * 1e6:.3f} µ$\n"
        f"each strategy now, with the edge's codecs (profile predictions): {choices}"
        + (f" ({codecs.pop()})" if len(codecs) == 1 else "")
        + f"\n{edge_differs(m, plans['rank'])}"))


def edge_differs(m: dict[str, Any], plan: SplitPlan,
                 hysteresis: float = ReschedulePolicy().hysteresis) -> str:
    """Why the edge (rank, w=0.5, as the demo runs it) ran a split other than ``plan``'s."""
    split = m["split_point"]
    if m["finished"] != "cloud":
        return f"[red]the edge runs everything itself[/]: {escape(m['fallback'][:60])}"
    if split == plan.split_point:
        return f"the edge runs rank's choice, split {split}"
    if with_hysteresis(plan, split, hysteresis).split_point == split:
        return (f"the edge keeps split {split}: hysteresis (split {plan.split_point} is not "
                f"{hysteresis:.0%} faster or cheaper)")
    return (f"the edge keeps split {split} until its next re-plan (every {REPLAN_S:g} s, or on "
            "a change); it plans with what it has learned and the cloud's reported wait")


def _print_summary(out_dir: Path, console: Console) -> None:
    rows = summarise(read_measurements(out_dir), read_phases(out_dir))
    table = Table(Column("phase", no_wrap=True), "n", "cloud", Column("split", no_wrap=True),
                  "ms", "err", "µ$", title="summary per phase",
                  caption="split: the most used (count); ms: median latency measured "
                  "(predicted); err: median prediction error of offloads (- where none); "
                  f"µ$: the phase's total cost; {START_UP}: {NOTES[START_UP]}")
    for s in rows:
        table.add_row(s.phase, str(s.inferences), str(s.in_cloud),
                      s.split_points.split(", ")[0],
                      f"{s.median_latency_s * 1e3:.0f} ({s.median_predicted_s * 1e3:.0f})",
                      percent(s.prediction_error), f"{s.cost_usd * 1e6:.1f}")
    console.print()
    console.print(table)
