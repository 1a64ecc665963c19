"""``edgesplit experiment``: the thesis's evaluation (chapter 7) on a real testbed, with an oracle.

Two suites of settings (``--suite``): ``thesis``, the thesis's section 6.7 (bandwidth and clock
drawn from its pools, a 20 ms round trip), and ``wide`` (bandwidth, round trip with jitter and the
edge's speed drawn over wide ranges; ``conditions.draw_wide``). For every setting and repeat r it
measures, in one *round*:

- the oracle's repeat r: every split point of every model, forced, end to end through the testbed
  (the edge worker's real runtime, the shaped link, the real cloud). Where that does not fit in
  the time (VGG16 cuts carry up to 16.8 MB, 19 s each at 7.2 Mbit/s) the oracle is composed from
  measured parts: the head of every split point from throttled forwards on the edge (the median
  of three after a warm-up), the transfer of each distinct payload size over the shaped link
  (once per setting) and the tail from the cloud's own per-layer times; ``method`` says which
  (``e2e`` or ``parts``). The composition is checked end to end at a spread of split points over
  the model's whole range once per run (``composition_checks`` in config.json).
- each chooser's repeat r: OC (cheapest), OL (fastest) and CL (rank, w = 0.5), and any other
  strategy of the registry that needs no limit, for an owned and a rented edge and every
  registered predictor, planned with the setting's conditions as the thesis did and then run end
  to end at the chosen split;
- the compressed-input baseline's repeat r: split point 0 with the input encoded by each of
  ``runs.COMPRESSED_CODECS`` that keeps the model's answers (strategy ``compressed-input``).

The units of a round are measured in an order shuffled with the seed (``plan_units``), so the
machine's drift and the caches' state fall on the oracle and on every chooser alike.

Everything goes to ``DIR/runs.csv`` (one unit at a time, resumable) and ``DIR/config.json``; the
profiles the planners used are kept in ``DIR/profiles/`` so a resumed run plans the same way.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgesplit.core.cost import cost_usd, edge_mode
from edgesplit.core.fitted import fit_predictor
from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import (
    REQUEST_OVERHEAD_BYTES,
    WIRE_FACTOR,
    Conditions,
)
from edgesplit.core.profiles import CalibrationPoint, Profile
from edgesplit.errors import InvalidArgument, TestbedError
from edgesplit.evaluation.conditions import (
    WIDE_BANDWIDTH_KBPS,
    WIDE_EDGE_SPEED,
    WIDE_JITTER_OF_RTT,
    WIDE_RTT_MS,
    Setting,
    draw_pools,
    draw_settings,
    draw_wide,
)
from edgesplit.evaluation.runs import (
    COMPRESSED,
    COMPRESSED_CODECS,
    EDGES,
    WEIGHT,
    RunsFile,
    Unit,
    predictors,
    strategies,
)
from edgesplit.measuring.store import read_profile, write_profile
from edgesplit.models.names import model_name
from edgesplit.testbed.bench import (
    MAX_CLOCK_GHZ,
    Bench,
    NetnsBench,
    UserspaceBench,
    check_clock,
    check_rate,
    forward_s,
)

FORMAT = "edgesplit-experiment/2"
SUITES = ("thesis", "wide")
SUITE_MODELS = {"thesis": ("alexnet", "vgg16", "mnist_cnn"),
                "wide": ("alexnet", "vgg16", "mnist_cnn", "resnet18")}
CALIBRATION_CLOCKS = {"thesis": (0.6, 0.9, 1.2), "wide": (0.15, 0.3, 0.6, 1.0)}
"""The clocks each suite's profiles calibrate their clock law at (besides the full 1.5 GHz): the
thesis's pool spans 0.6 to 1.5 GHz, the wide suite's edge 0.15 to 1.5 GHz."""
COMPOSITION_CHECK_POINTS = 8
"""Split points (spread over the whole range, both ends included) at which a composed oracle is
checked end to end."""
COMPOSITION_TOLERANCE = 0.15
TRANSFER_MEASURED_S = {"thesis": math.inf, "wide": 5.0}
"""Per suite, the longest transfer a composed oracle measures whole (see ``Measurer``)."""
CALIBRATION_TOLERANCE = 0.25
"""A calibration point may differ this much from the quota's slowdown (the MNIST CNN's tiny
forwards measure 15 to 20% slower at 0.6 GHz for real; a disturbed pair, 40% and more)."""
PARTS_ABOVE_BYTES = 20_000_000
"""``--oracle auto`` composes a model's oracle from parts when all its cuts together exceed this
(VGG16: about 150 MB per setting and repeat, 3 minutes at 7.2 Mbit/s; AlexNet: about 5 MB)."""
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ExperimentConfig:
    models: tuple[str, ...] = SUITE_MODELS["thesis"]
    settings: int = 15
    repeats: int = 10
    seed: int = 0
    testbed: str = "auto"
    rtt_ms: float = 20.0
    oracle: str = "auto"
    profile_repeats: int = 10
    calibration_repeats: int = 3
    edge_speed: float = 1.0
    suite: str = "thesis"
    codecs: tuple[str, ...] = COMPRESSED_CODECS
    parts_repeats: int | None = None
    """The first rounds that a model with a composed oracle takes part in (None: every
    round): VGG16's rounds cost ten times AlexNet's."""

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise InvalidArgument(f"suite must be thesis or wide, got {self.suite!r}")
        if self.suite == "wide" and (self.edge_speed != 1 or self.rtt_ms != 20):
            raise InvalidArgument("the wide suite draws each setting's round trip and edge "
                                  "speed: leave --rtt-ms and --edge-speed out")
        if self.testbed not in ("auto", "netns", "userspace"):
            raise InvalidArgument(f"testbed must be auto, netns or userspace, got "
                                  f"{self.testbed!r}")
        if self.oracle not in ("auto", "e2e", "parts"):
            raise InvalidArgument(f"oracle must be auto, e2e or parts, got {self.oracle!r}")
        if not 0.25 <= self.edge_speed <= 1:
            raise InvalidArgument(f"edge speed must be between 0.25 (the 0.6 GHz clock is then "
                                  f"the kernel's minimum quota) and 1, got {self.edge_speed}")
        if self.repeats < 1 or self.settings < 1 or not self.models or (
                self.parts_repeats is not None and self.parts_repeats < 1):
            raise InvalidArgument("give at least one model, one setting and one repeat")

    @property
    def names(self) -> tuple[str, ...]:
        """The models' names: ``models`` are sources (zoo names, ``.pt2`` files, factories),
        which only the testbed's cloud and edge load; the experiment knows them by name."""
        return tuple(model_name(source) for source in self.models)

    @classmethod
    def of_suite(cls, suite: str = "thesis", **changes: Any) -> ExperimentConfig:
        """The suite's defaults (thesis: its three models, 15 settings; wide: the zoo's four,
        20 settings; 10 repeats each)."""
        base = cls(suite=suite, models=SUITE_MODELS.get(suite, ()),
                   settings=20 if suite == "wide" else 15)
        return replace(base, **changes)

    @classmethod
    def quick(cls, suite: str = "thesis", **changes: Any) -> ExperimentConfig:
        """One model, three settings, two repeats: a few minutes at most."""
        base = cls(models=("mnist_cnn",), settings=3, repeats=2, profile_repeats=5,
                   calibration_repeats=2, suite=suite)
        return replace(base, **changes)

    @property
    def calibration_clocks(self) -> tuple[float, ...]:
        return CALIBRATION_CLOCKS[self.suite]

    def draw(self) -> tuple[dict[str, Any], list[Setting]]:
        """The suite's description (the thesis's pools, or the wide ranges) and its settings."""
        if self.suite == "wide":
            ranges = {"bandwidth_kbps": list(WIDE_BANDWIDTH_KBPS), "rtt_ms": list(WIDE_RTT_MS),
                      "jitter_of_rtt": [0, WIDE_JITTER_OF_RTT],
                      "edge_speed": list(WIDE_EDGE_SPEED),
                      "draw": "Latin hypercube, log-uniform in bandwidth, round trip and edge "
                              "speed; jitter uniform up to a quarter of the round trip"}
            return ranges, draw_wide(self.seed, self.settings)
        pools = draw_pools(self.seed)
        return pools.to_dict(), draw_settings(self.seed, pools, self.settings, self.rtt_ms)

    def comparable(self) -> dict[str, Any]:
        """What must match for a folder to be resumed with this configuration."""
        return {k: v for k, v in asdict(self).items() if k not in ("testbed",)}


def resolve_testbed(choice: str) -> str:
    if choice != "auto":
        return choice
    return "netns" if os.geteuid() == 0 and Path("/sys/fs/cgroup/cpu").is_dir() else "userspace"


# The model whose whole forward checks the clock knob. AlexNet's forwards take tens of
# milliseconds, so a throttled one spans several CFS periods or duty cycles and the slowdown
# comes out as set; the MNIST CNN's 0.4 ms forwards came out 10-20% off even on a quiet machine
# (too short against the 100 ms CFS period, and slowed by caches others cool while throttled),
# failing quick runs' self-checks that measured nothing wrong.
CLOCK_CHECK_MODEL = "alexnet"


def make_bench(mode: str, config: ExperimentConfig, logs: Path, tag: str | None = None) -> Bench:
    # The clock is checked (and calibrated) with AlexNet whatever is measured: loaded beside.
    models, speed = list(dict.fromkeys([*config.models, CLOCK_CHECK_MODEL])), config.edge_speed
    if mode == "netns":
        return NetnsBench(models, config.rtt_ms, logs, tag, edge_speed=speed, seed=config.seed)
    return UserspaceBench(models, config.rtt_ms, logs, edge_speed=speed, seed=config.seed)


@dataclass
class Experiment:
    config: ExperimentConfig
    out_dir: Path
    progress: Callable[[int, int, str], None] | None = None  # (done, total, what)
    say: Callable[[str], None] = print
    record: dict[str, Any] = field(default_factory=dict)
    settings: list[Setting] = field(default_factory=list)  # drawn by ``claim()``

    def run(self) -> Path:
        """Claim the folder, then measure what it does not hold yet."""
        with self.claim():
            return self.measure()

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Lock the folder for this run and check everything a resumed folder holds, before
        anything is started or removed: a second run, or damaged or foreign files, are
        refused here in one line."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument(f"cannot create {self.out_dir} ({exc.strerror}): choose "
                                  "another --out") from exc
        with lock_folder(self.out_dir):
            pools, self.settings = self.config.draw()
            self.record = self._config_record(pools, self.settings)
            RunsFile(self.out_dir / "runs.csv").check(self.config, self.settings)
            yield

    def measure(self) -> Path:
        """The run itself, inside ``claim()``."""
        settings = self.settings
        mode = resolve_testbed(self.config.testbed)
        models = list(self.config.names)
        began = datetime.now(UTC)
        self._clean_up_after_a_crash(mode)
        tag = secrets.token_hex(3)
        self.record["testbed"] = self._testbed_record(mode) | (
            {"tag": tag, "clean_up": f"edgesplit testbed down --tag {tag}"}
            if mode == "netns" else {})
        self._save()  # the tag is on disk before anything is created: a crash can be cleaned
        with make_bench(mode, self.config, self.out_dir / "logs", tag) as bench:
            calibration = bench.calibrate_clock(CLOCK_CHECK_MODEL, [
                *(s.clock_ghz for s in settings), *self.config.calibration_clocks,
                MAX_CLOCK_GHZ])
            if calibration:
                self.record["testbed"]["quota_calibration"] = calibration
            self._self_check(bench, settings)
            profiles, codecs = {}, {}
            for m in models:
                profiles[m], codecs[m] = self._profile(bench, m)
            methods = {m: self._method(profiles[m]) for m in models}
            self.record["oracle_methods"] = methods
            self.record["compressed_codecs"] = codecs
            self._save()
            units = list(plan_units(self.config, settings, profiles, methods, codecs))
            store = RunsFile(self.out_dir / "runs.csv")
            done = store.load(units)
            planners = build_planners(profiles)
            measurer = Measurer(bench, profiles, planners, self.out_dir / "transfers.json",
                                TRANSFER_MEASURED_S[self.config.suite])
            self._check_compositions(bench, settings, methods, measurer)
            self._measure(bench, settings, units, done, store, measurer)
        self.record.setdefault("runs", []).append(
            {"started": began.isoformat(timespec="seconds"),
             "finished": datetime.now(UTC).isoformat(timespec="seconds"),
             "seconds": round((datetime.now(UTC) - began).total_seconds(), 1), "mode": mode})
        self._save()
        return self.out_dir

    def _clean_up_after_a_crash(self, mode: str) -> None:
        """A run killed with SIGKILL leaves its namespaces and cgroups: resuming removes them."""
        old = self.record.get("testbed", {}).get("tag")
        if mode == "netns" and old:
            from edgesplit.testbed.netns import teardown

            removed = teardown(old)
            if removed:
                self.say(f"removed what the stopped run left: {', '.join(removed)}")

    def _measure(self, bench: Bench, settings: list[Setting], units: list[Unit],
                 done: set[Any], store: RunsFile, measurer: Measurer) -> None:
        total, finished = len(units), len(done)
        if self.progress:
            self.progress(finished, total, "resuming" if finished else "measuring")
        for setting in settings:
            todo = [u for u in units if u.setting == setting.index and u.key not in done]
            if not todo:
                continue
            apply(bench, setting)
            for unit in todo:
                store.append(measurer.measure(unit, setting))
                finished += 1
                if self.progress:
                    self.progress(finished, total, f"setting {setting.index + 1}/"
                                  f"{len(settings)} ({setting.bandwidth_kbps / 1000:g} Mbit/s, "
                                  f"{setting.clock_ghz:g} GHz, {setting.rtt_ms:g} ms) round "
                                  f"{unit.repeat + 1} {unit.model}")

    def _check_compositions(self, bench: Bench, settings: list[Setting],
                            methods: dict[str, str], measurer: Measurer) -> None:
        """Each composed oracle against end-to-end runs at a spread of split points over its
        whole range, at the fastest link of the run (once per run; kept in config.json)."""
        checks = self.record.setdefault("composition_checks", {})
        todo = [m for m, method in methods.items() if method == "parts" and m not in checks]
        if not todo:
            return
        setting = max(settings, key=lambda s: s.bandwidth_kbps)
        apply(bench, setting)
        for model in todo:
            self.say(f"checking {model}'s composed oracle end to end...")
            checks[model] = measurer.check_composition(model, setting)
            self._save()
            failed = [c for c in checks[model]["points"] if not c["passed"]]
            if failed:
                self.say(f"{model}'s composed oracle is off by more than "
                         f"{COMPOSITION_TOLERANCE:.0%} at split points "
                         f"{', '.join(str(c['split_point']) for c in failed)} (config.json)")

    def _config_record(self, pools: dict[str, Any], settings: list[Setting]) -> dict[str, Any]:
        path = self.out_dir / "config.json"
        wanted = self.config.comparable()
        if path.exists():
            record = read_record(path)
            old = record["parameters"]
            for name, value in wanted.items():
                if json.loads(json.dumps(value)) != old.get(name):
                    raise InvalidArgument(
                        f"{self.out_dir} holds an experiment with {name}={old.get(name)!r}, not "
                        f"{value!r}: resume it with the same options or use another --out")
            if json.loads(json.dumps([s.to_dict() for s in settings])) != record["settings"]:
                raise InvalidArgument(f"{path} holds settings other than its seed draws "
                                      "(edited, or another version's): restore it, or use "
                                      "another --out (nothing was started or deleted)")
            return record
        if (self.out_dir / "runs.csv").exists():
            raise InvalidArgument(f"{self.out_dir} holds a runs.csv but no config.json, so "
                                  "what it measured cannot be told: restore config.json, or "
                                  "use another --out (nothing was started or deleted)")
        return {"format": FORMAT, "suite": self.config.suite, "parameters": wanted,
                "pools" if self.config.suite == "thesis" else "ranges": pools,
                "settings": [s.to_dict() for s in settings], "versions": _versions(),
                "machine": _machine(), "self_checks": [], "runs": []}

    def _testbed_record(self, mode: str) -> dict[str, Any]:
        share = f"{self.config.edge_speed:g} x c/{MAX_CLOCK_GHZ}".removeprefix("1 x ")
        clock = (f"clock c GHz = {share} of one core for the edge's cgroup: the CFS quota "
                 "(period 10 ms) measured to deliver that share (quota_calibration)"
                 if mode == "netns" else
                 f"clock c GHz = SIGSTOP/SIGCONT duty cycling at {share} of every 10 ms (no "
                 "root: coarser than a cgroup quota)")
        link = ("tbf on the edge's end of a veth pair between two namespaces, the round trip "
                "added by the userspace relay in the cloud's namespace" if mode == "netns" else
                "the userspace relay on loopback: token bucket rate and delay line (no root)")
        rtt = (self.config.rtt_ms if self.config.suite == "thesis" else
               "each setting's rtt_ms, jitter_ms: the relay delays each chunk by rtt/2 +- "
               "jitter/2 (uniform, seeded) each way, in order")
        return {"mode": mode, "clock": clock, "uplink": link, "rtt_ms": rtt,
                "cores": "cloud on core 0, edge on core 1, one torch thread each"}

    def _self_check(self, bench: Bench, settings: list[Setting]) -> None:
        rates = sorted({min(s.bandwidth_kbps for s in settings),
                        max(s.bandwidth_kbps for s in settings)})
        clocks = sorted({min(s.clock_ghz for s in settings),
                         min(self.config.calibration_clocks)})
        results = []
        for attempt in range(2):  # a neighbour's burst can spoil one attempt; not two
            results = ([check_rate(bench, r, MAX_CLOCK_GHZ) for r in rates]
                       + [check_clock(bench, CLOCK_CHECK_MODEL, rates[-1], c)
                          for c in clocks if c < MAX_CLOCK_GHZ])
            self.record["self_checks"].append(
                {"time": datetime.now(UTC).isoformat(timespec="seconds"), "attempt": attempt + 1,
                 "passed": all(r["passed"] for r in results), "checks": results})
            if all(r["passed"] for r in results):
                return
        self._save()
        failed = "; ".join(f"{r['check']} error {r['error']:+.1%} (tolerance "
                           f"{r['tolerance']:.0%})" for r in results if not r["passed"])
        raise TestbedError(f"the testbed failed its self-check ({failed}); nothing was "
                           f"measured: see {self.out_dir / 'config.json'} and retry on a quieter "
                           "machine")

    def _profile(self, bench: Bench, model: str) -> tuple[Profile, list[str]]:
        """The edge's profile of ``model`` at full speed with its clock calibrated on the
        testbed (kept in DIR/profiles so that a resumed run plans the same way), and the
        compressed-input codecs that keep its answers."""
        path = self.out_dir / "profiles" / f"{model}.json"
        if path.exists():
            profile = read_profile(path)
        else:
            self.say(f"profiling {model} on the testbed's edge...")
            bench.set_conditions(max(s.bandwidth_kbps for s in self.settings), bench.native_ghz)
            profile = calibrate(bench, model, self.config.profile_repeats,
                                self.config.calibration_repeats, self.config.calibration_clocks)
            write_profile(profile, path)
        loaded = bench.edge.ask({"op": "load", "model": model, "codecs": self.config.codecs,
                                 "profile": profile.model_dump(mode="json")})
        return profile, list(loaded["codecs"])

    def _method(self, profile: Profile) -> str:
        if self.config.oracle != "auto":
            return self.config.oracle
        total = sum(sp.offload_bytes for sp in profile.split_points)
        return "parts" if total > PARTS_ABOVE_BYTES else "e2e"

    def _save(self) -> None:
        path = self.out_dir / "config.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.record, indent=2) + "\n")
        temporary.replace(path)


LOCK_FILE = "experiment.lock"


@contextmanager
def lock_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for one run: a second experiment on it is refused while the first goes on.
    ``flock`` dies with its process, so a run killed even with SIGKILL leaves no stale lock; the
    file itself stays (removing it would let a third run lock a file the second has open)."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise InvalidArgument(f"cannot lock {folder} ({exc.strerror}): choose another --out") \
            from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise InvalidArgument(f"{folder} is in use by another experiment (pid {holder}): "
                                  "wait for it to finish, or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def read_record(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a folder to resume, refused in one line unless it is whole and an
    experiment's own (checked before anything starts)."""
    fix = "restore it, or use another --out (nothing was started or deleted)"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not JSON: {exc}"
        raise InvalidArgument(f"{path} cannot be read ({reason}): {fix}") from exc
    shapes = {"parameters": dict, "settings": list, "self_checks": list, "runs": list,
              "testbed": dict}  # the testbed's entry is written a moment after the rest
    if not isinstance(record, dict) or record.get("format") != FORMAT or any(
            not isinstance(record.get(key, {} if key == "testbed" else None), kind)
            for key, kind in shapes.items()):
        raise InvalidArgument(f"{path} is not a whole {FORMAT} record (an object with "
                              f"{', '.join(shapes)}): {fix}")
    tag = record.get("testbed", {}).get("tag", "")
    if not isinstance(tag, str) or not re.fullmatch(r"[a-z0-9]{0,8}", tag):
        raise InvalidArgument(f"{path} names a testbed tag {tag!r} edgesplit never makes: {fix}")
    return record


def calibrate(bench: Bench, model: str, repeats: int, calibration_repeats: int,
              clocks: tuple[float, ...]) -> Profile:
    """Per-layer times on a full core (throttled per-layer times are bimodal), then the whole
    forward at each clock of the pool's range, paired with a full-core forward: the ratio's
    median scales the profile's forward time. The profile's clock is the full core's."""
    native = bench.native_ghz
    bench.set_conditions(bench.bandwidth_kbps, native)
    data = bench.edge.ask({"op": "profile", "model": model, "repeats": repeats})["profile"]
    profile = Profile.model_validate(data)
    points = [CalibrationPoint(clock_ghz=clock, latency_s=profile.forward_s * _slowdown(
        bench, model, clock, calibration_repeats)) for clock in (*clocks, MAX_CLOCK_GHZ)]
    bench.set_conditions(bench.bandwidth_kbps, native)
    machine = profile.machine.model_copy(update={"clock_ghz": native})
    return profile.model_copy(update={"machine": machine, "calibration": points})


def _slowdown(bench: Bench, model: str, clock: float, repeats: int) -> float:
    """Median of paired (``clock`` / full core) forward times. A median far from what the
    quota sets means a neighbour disturbed the pairs: measured again, and again, then an error
    (one bad point would bend the clock law that every plan of the run uses)."""
    native = bench.native_ghz
    if clock >= native:
        return 1.0
    expected = native / clock
    for _ in range(3):
        ratios = []
        for _ in range(repeats):
            bench.set_conditions(bench.bandwidth_kbps, native)
            full = forward_s(bench, model)
            bench.set_conditions(bench.bandwidth_kbps, clock)
            ratios.append(forward_s(bench, model) / full)
        ratio = statistics.median(ratios)
        if abs(ratio / expected - 1) <= CALIBRATION_TOLERANCE:
            return ratio
    raise TestbedError(f"calibrating {model} at {clock} GHz measured a slowdown of {ratio:.2f} "
                       f"three times where the quota sets {expected:.2f}: the machine is too "
                       "busy to calibrate; run again later (the run resumes)")


def plan_units(config: ExperimentConfig, settings: list[Setting], profiles: dict[str, Profile],
               methods: dict[str, str],
               codecs: dict[str, list[str]] | None = None) -> Iterator[Unit]:
    """Every unit, setting by setting and round by round: round r of a setting holds the
    oracle's repeat r (each split point, or its composition from parts), every chooser's
    repeat r and the compressed-input baseline's, of every model, in an order shuffled with the
    seed (the same order whenever the run is resumed)."""
    codecs = codecs or {}
    for setting in settings:
        for repeat in range(config.repeats):
            units = list(_round(config, setting.index, repeat, profiles, methods, codecs))
            order = np.random.default_rng([config.seed, 2, setting.index, repeat])
            yield from (units[i] for i in order.permutation(len(units)))


def _round(config: ExperimentConfig, setting: int, repeat: int, profiles: dict[str, Profile],
           methods: dict[str, str], codecs: dict[str, list[str]]) -> Iterator[Unit]:
    for model in config.names:
        n = profiles[model].n_layers + 1
        if methods[model] == "parts" and repeat >= (config.parts_repeats or config.repeats):
            continue
        if methods[model] == "parts":
            yield Unit(model, setting, repeat, "parts", n_split_points=n)
        else:
            for sp in range(n):
                yield Unit(model, setting, repeat, "oracle", split_point=sp)
        for codec in codecs.get(model, []):
            yield Unit(model, setting, repeat, "compressed", split_point=0, codec=codec)
        for edge in EDGES:
            for predictor in predictors():
                for strategy in strategies():
                    yield Unit(model, setting, repeat, "strategy", edge=edge,
                               predictor=predictor, strategy=strategy)


def apply(bench: Bench, setting: Setting) -> None:
    """Set the testbed's knobs to ``setting`` (the relay's delay only where it changes)."""
    bench.set_conditions(setting.bandwidth_kbps, setting.clock_ghz)
    if (setting.rtt_ms, setting.jitter_ms) != (bench.rtt_ms, bench.jitter_ms):
        bench.set_delay(setting.rtt_ms, setting.jitter_ms)


def build_planners(profiles: dict[str, Profile]) -> dict[tuple[str, str, str, str], Planner]:
    """(model, predictor, edge, strategy) -> planner; the thesis predictor fits its power law
    on every model's calibration, as the thesis did."""
    planners = {}
    for model, profile in profiles.items():
        peers = [p for m, p in profiles.items() if m != model]
        layers = [layer.name for layer in profile.layers]
        for predictor in predictors():
            fitted = fit_predictor(predictor, profile, peers=peers)
            for edge in EDGES:
                for name, strategy in strategies().items():
                    planners[(model, predictor, edge, name)] = Planner(
                        model, layers, fitted, Objective(strategy, WEIGHT, edge))
    return planners


class Measurer:
    """Turns a unit into rows by asking the edge worker."""

    def __init__(self, bench: Bench, profiles: dict[str, Profile],
                 planners: dict[tuple[str, str, str, str], Planner], transfers: Path,
                 transfer_cap_s: float = math.inf) -> None:
        self.bench = bench
        self.transfer_cap_s = transfer_cap_s
        self.profiles = profiles
        self.planners = planners
        self.transfers_path = transfers
        self.transfers: dict[str, float] = (json.loads(transfers.read_text())
                                            if transfers.exists() else {})

    def measure(self, unit: Unit, setting: Setting) -> list[dict[str, Any]]:
        if unit.kind == "parts":
            return self._parts(unit, setting)
        if unit.kind == "oracle":
            m = self._infer(unit.model, unit.split_point, setting)
            return [self._row(unit, setting, m, edge, "", "oracle", "") for edge in EDGES]
        if unit.kind == "compressed":
            m = self._infer(unit.model, 0, setting, unit.codec)
            return [self._row(unit, setting, m, edge, "none", COMPRESSED, "") for edge in EDGES]
        planner = self.planners[(unit.model, unit.predictor, unit.edge, unit.strategy)]
        plan = planner.plan(Conditions(setting.bandwidth_kbps, setting.rtt_ms, setting.clock_ghz))
        m = self._infer(unit.model, plan.split_point, setting)
        return [self._row(unit, setting, m, unit.edge, unit.predictor, unit.strategy,
                          plan.chosen.latency_s)]

    def _row(self, unit: Unit, setting: Setting, m: dict[str, Any], edge: str,
             predictor: str, strategy: str, predicted: float | str,
             method: str = "e2e") -> dict[str, Any]:
        return {
            "model": unit.model, "edge": edge, "predictor": predictor, "strategy": strategy,
            "setting": setting.index, "repeat": unit.repeat,
            "bandwidth_kbps": setting.bandwidth_kbps, "clock_ghz": setting.clock_ghz,
            "rtt_ms": setting.rtt_ms, "split_point": m["split_point"], "codec": m["codec"],
            "predicted_latency_s": predicted, "latency_s": m["latency_s"],
            "cost_usd": cost_usd(m["edge_s"], m["cloud_s"], 0, edge_mode(edge)),
            "edge_s": m["edge_s"], "comm_s": m["comm_s"], "cloud_s": m["cloud_s"],
            "sent_bytes": m["sent_bytes"], "method": method,
        }


    def _infer(self, model: str, split_point: int, setting: Setting,
               codec: str = "raw") -> dict[str, Any]:
        for _ in range(3):
            request = {"op": "infer", "model": model, "split_point": split_point,
                       "clock_ghz": setting.clock_ghz, "bandwidth_kbps": setting.bandwidth_kbps,
                       "rtt_ms": setting.rtt_ms, "codec": codec}
            m: dict[str, Any] = self.bench.edge.ask(request)["measurement"]
            if m["finished"] == "cloud":
                return m
            time.sleep(1.0)  # the runtime tries the cloud again after its retry interval
        raise TestbedError(f"{model} at split point {split_point} kept finishing on the edge "
                           f"({m['fallback']}): the cloud is not answering; see the logs")

    def check_composition(self, model: str, setting: Setting) -> dict[str, Any]:
        """The composed oracle of ``model`` against end-to-end runs at
        ``COMPOSITION_CHECK_POINTS`` split points spread over its whole range, alternating
        (composition, end to end, composition) so drift falls on both alike."""
        n = self.profiles[model].n_layers
        chosen = sorted({round(i * n / (COMPOSITION_CHECK_POINTS - 1))
                         for i in range(COMPOSITION_CHECK_POINTS)})
        unit = Unit(model, setting.index, 0, "parts")
        before = self._parts(unit, setting)
        e2e = {sp: self._infer(model, sp, setting)["latency_s"] for sp in chosen}
        after = self._parts(unit, setting)
        points = []
        for sp in chosen:
            composed = statistics.mean(float(rows[2 * sp]["latency_s"])
                                       for rows in (before, after))
            error = composed / e2e[sp] - 1
            points.append({"split_point": sp, "e2e_s": round(e2e[sp], 6),
                           "composed_s": round(composed, 6), "error": round(error, 4),
                           "passed": abs(error) <= COMPOSITION_TOLERANCE})
        return {"setting": setting.index, "tolerance": COMPOSITION_TOLERANCE,
                "passed": all(p["passed"] for p in points), "points": points}

    def _parts(self, unit: Unit, setting: Setting) -> list[dict[str, Any]]:
        profile = self.profiles[unit.model]
        # One warm-up forward (the worker ran other models just before), then the median of
        # three, split point by split point.
        head = self.bench.edge.ask({"op": "prefix", "model": unit.model, "warmup": 1,
                                    "repeats": 3})["head_s"]
        tail_layers = self.bench.edge.ask({"op": "tail", "model": unit.model})["layer_times_s"]
        rows = []
        for sp in profile.split_points:
            k = sp.split_point
            sent = sp.offload_bytes + REQUEST_OVERHEAD_BYTES
            comm = self._transfer(setting, sent)
            m = {"split_point": k, "codec": "raw", "edge_s": head[k], "comm_s": comm,
                 "cloud_s": sum(tail_layers[k:]), "sent_bytes": sent}
            m["latency_s"] = m["edge_s"] + comm + m["cloud_s"]
            rows += [self._row(unit, setting, m, edge, "", "oracle", "", method="parts")
                     for edge in EDGES]
        return rows

    def _transfer(self, setting: Setting, nbytes: int) -> float:
        """Seconds to send ``nbytes`` and hear back, measured once per setting and size; a
        size that would take longer than ``TRANSFER_MEASURED_S`` is measured at the size that
        takes that long, plus the rest at the link's set rate (checked within 10% by the rate
        self-check): one VGG16 cut is 17 s at 7.2 Mbit/s, 4.5 minutes at the wide suite's
        0.5 Mbit/s. The thesis suite measures every size whole, as it always did."""
        rate_bytes_s = setting.bandwidth_kbps * 125 / WIRE_FACTOR
        measured = min(nbytes, max(1, int(min(self.transfer_cap_s * rate_bytes_s, 2**62))))
        return self._measured_transfer(setting, measured) + (nbytes - measured) / rate_bytes_s

    def _measured_transfer(self, setting: Setting, nbytes: int) -> float:
        key = f"{setting.index}:{nbytes}"
        if key not in self.transfers:
            self.transfers[key] = self.bench.edge.ask({"op": "send", "bytes": nbytes})["seconds"]
            temporary = self.transfers_path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.transfers, indent=0))
            temporary.replace(self.transfers_path)
        return self.transfers[key]


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    packages = ("edgesplit", "torch", "numpy", "scipy", "fastapi", "uvicorn", "httpx")
    return {"python": sys.version.split()[0]} | {p: version(p) for p in packages}


def _machine() -> dict[str, Any]:
    from edgesplit.measuring.machine import describe_machine

    return describe_machine(1).model_dump() | {"node": platform.node(),
                                               "cpus": os.cpu_count() or 0}
