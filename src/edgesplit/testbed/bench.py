"""The experiment's testbeds: a cloud, an edge worker and the knobs between them, and self-checks.

``NetnsBench`` (root) runs the cloud server and the delay relay in the cloud's namespace, the edge
worker in the edge's namespace and CPU cgroup, the uplink capped by ``tbf``. ``UserspaceBench``
(anyone) runs the cloud on loopback behind the userspace relay (rate and delay) and slows the
edge worker by SIGSTOP/SIGCONT duty cycling. Both pin the cloud to core 0 and the edge to core 1
(where there are two), run torch with one thread on each side, and kill every child on exit;
children also die with the runner (``PR_SET_PDEATHSIG``), even when it is SIGKILLed.

The clock is a share of one core: the pool's highest clock (``MAX_CLOCK_GHZ``, the thesis's
Raspberry Pi at 1.5 GHz) is one full core, and clock ``c`` gets ``c / 1.5`` of it; with
``edge_speed`` s < 1 it gets ``s x c / 1.5`` (the native clock of a full core is then 1.5 / s).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from edgesplit.core.predictors import WIRE_FACTOR
from edgesplit.errors import TestbedError
from edgesplit.measuring.dutycycle import DutyCycler
from edgesplit.testbed.emulation import ShareMap
from edgesplit.testbed.link import LinkEmulator
from edgesplit.testbed.netns import CLOUD_ADDRESS, NetnsTestbed
from edgesplit.testbed.processes import stop_process

MAX_CLOCK_GHZ = 1.5
CLOUD_PORT = 8000  # inside the cloud's own namespace: nothing else binds there
RELAY_PORT = 9000
RATE_TOLERANCE = 0.10
CLOCK_TOLERANCE = 0.15
_PR_SET_PDEATHSIG = 1


def share_of(clock_ghz: float, edge_speed: float = 1.0) -> float:
    """The CPU share that emulates ``clock_ghz``: 1.5 GHz is ``edge_speed`` of one core (1.0: a
    full core; 0.25 makes the edge four times slower, nearer a Raspberry Pi)."""
    return min(1.0, clock_ghz / MAX_CLOCK_GHZ * edge_speed)


def _child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpu is not None and cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
    return setup


def _spawn(command: list[str], cpu: int | None, log: Path) -> subprocess.Popen[str]:
    with open(log, "ab") as sink:
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=sink, text=True, preexec_fn=_child_setup(cpu))


def _read_line(process: subprocess.Popen[str], timeout_s: float, what: str,
               log: Path) -> dict[str, Any]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    line = process.stdout.readline() if ready else ""
    if not line:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise TestbedError(f"the {what} did not answer within {timeout_s:g} s"
                           + (f" ({tail[0]})" if tail else f"; see {log}"))
    answer: dict[str, Any] = json.loads(line)
    return answer


class EdgeWorker:
    """The ``edge_worker`` child: one JSON request, one JSON answer."""

    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.process = process
        self.log = log
        _read_line(process, 300, "edge worker", log)

    def ask(self, request: dict[str, Any], timeout_s: float = 900) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError as exc:
            raise TestbedError(f"the edge worker exited; see {self.log}") from exc
        answer = _read_line(self.process, timeout_s, "edge worker", self.log)
        if "error" in answer:
            raise TestbedError(f"the edge worker failed {request.get('op')}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        stop_process(self.process, timeout_s=10)


class Bench:
    """What the runner needs of a testbed; subclasses set the knobs their way."""

    mode = "none"

    def __init__(self, models: list[str], rtt_ms: float, logs: Path,
                 edge_speed: float = 1.0, seed: int = 0) -> None:
        self.models = models
        self.rtt_ms = rtt_ms
        self.edge_speed = edge_speed
        self.native_ghz = MAX_CLOCK_GHZ / edge_speed  # the clock of a full core
        self.logs = logs
        self.edge: EdgeWorker
        self.bandwidth_kbps = 7200.0
        self.jitter_ms = 0.0
        self.seed = seed  # of the relay's jitter
        self._children: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Self:
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._children:  # a stopped cloud would not stop
            with contextlib.suppress(OSError):
                os.kill(self._children[0].pid, signal.SIGCONT)
        if getattr(self, "edge", None) is not None:
            self.edge.close()
        for child in reversed(self._children):
            stop_process(child, timeout_s=10)

    def set_conditions(self, bandwidth_kbps: float, clock_ghz: float) -> None:
        raise NotImplementedError

    def set_delay(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        """The relay's added round trip and its jitter (see ``LinkEmulator``), from now on."""
        raise NotImplementedError

    def set_cloud_up(self, up: bool) -> None:
        """Stop the cloud server (SIGSTOP: it answers nothing, as a cloud gone away) or let
        it go on (SIGCONT)."""
        os.kill(self._children[0].pid, signal.SIGCONT if up else signal.SIGSTOP)

    def calibrate_clock(self, model: str, clocks: Sequence[float]) -> dict[str, Any] | None:
        """Measure what the clock knob delivers over ``clocks`` and correct for it; None where
        the knob is taken as it is set."""
        return None

    def _cloud_command(self, host: str, port: int) -> list[str]:
        return [sys.executable, "-m", "edgesplit.cli", "cloud", "serve", "--host", host,
                "--port", str(port), "--models", ",".join(self.models), "--workers", "1",
                "--torch-threads", "1", "--log-level", "warning"]

    def _edge_command(self, cloud_url: str) -> list[str]:
        return [sys.executable, "-m", "edgesplit.testbed.edge_worker", cloud_url,
                ",".join(self.models), "1"]

    def _wait_cloud(self) -> None:
        deadline = time.monotonic() + 300
        while True:
            try:
                self.edge.ask({"op": "send", "bytes": 1}, timeout_s=30)
                return
            except TestbedError:
                if time.monotonic() > deadline or any(c.poll() is not None
                                                      for c in self._children):
                    raise TestbedError(f"the cloud server did not come up; see "
                                       f"{self.logs / 'cloud.log'}") from None
                time.sleep(0.5)


class NetnsBench(Bench):
    """Namespaces, tbf and a CPU cgroup (root)."""

    mode = "netns"

    def __init__(self, models: list[str], rtt_ms: float, logs: Path, tag: str | None = None,
                 edge_speed: float = 1.0, seed: int = 0) -> None:
        super().__init__(models, rtt_ms, logs, edge_speed, seed)
        self.testbed = NetnsTestbed(tag)
        self.share_map = ShareMap()

    def start(self) -> None:
        self.testbed.up()
        inside = self.testbed.in_cloud()
        cloud = _spawn([*inside, *self._cloud_command("127.0.0.1", CLOUD_PORT)], 0,
                       self.logs / "cloud.log")
        self._children.append(cloud)
        self.testbed.attach(cloud.pid, "cloud")
        relay = _spawn([*inside, sys.executable, "-m", "edgesplit.testbed.relay", CLOUD_ADDRESS,
                        str(RELAY_PORT), "127.0.0.1", str(CLOUD_PORT), str(self.rtt_ms),
                        str(self.seed)], 0, self.logs / "relay.log")
        self._children.append(relay)
        self.relay = relay
        self.testbed.attach(relay.pid, "cloud")  # its delay line must not wait for a core
        _read_line(relay, 60, "delay relay", self.logs / "relay.log")
        process = _spawn([*self.testbed.in_edge(),
                          *self._edge_command(f"http://{CLOUD_ADDRESS}:{RELAY_PORT}")], 1,
                         self.logs / "edge.log")
        self.testbed.attach(process.pid)
        self.edge = EdgeWorker(process, self.logs / "edge.log")
        self._wait_cloud()

    def close(self) -> None:
        super().close()
        self.testbed.down()

    def set_conditions(self, bandwidth_kbps: float, clock_ghz: float) -> None:
        self.bandwidth_kbps = bandwidth_kbps
        self.testbed.set_rate_kbps(bandwidth_kbps)
        self.testbed.set_cpu_share(self.share_map.setting_for(share_of(clock_ghz,
                                                                      self.edge_speed)))

    def set_delay(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        assert self.relay.stdin is not None
        try:
            self.relay.stdin.write(json.dumps({"rtt_ms": rtt_ms, "jitter_ms": jitter_ms}) + "\n")
            self.relay.stdin.flush()
        except BrokenPipeError as exc:
            raise TestbedError(f"the delay relay exited; see {self.logs / 'relay.log'}") from exc
        _read_line(self.relay, 30, "delay relay", self.logs / "relay.log")
        self.rtt_ms, self.jitter_ms = rtt_ms, jitter_ms

    def calibrate_clock(self, model: str, clocks: Sequence[float],
                        repeats: int = 3) -> dict[str, Any]:
        """Whole-forward speed at a ladder of quotas spanning ``clocks``, each paired with an
        unthrottled forward: the measured ``ShareMap`` then sets every clock."""
        wanted = [share_of(c, self.edge_speed) for c in clocks]
        low, high = max(0.1, min(wanted) * 0.9), min(1.0, max(wanted) * 1.4)
        steps = 6
        ladder = [low * (high / low) ** (i / (steps - 1)) for i in range(steps)]
        points = [(1.0, 1.0)]
        for quota in (q for q in ladder if q < 1.0):
            ratios = []
            for _ in range(repeats):
                self.testbed.set_cpu_share(1.0)
                full = forward_s(self, model)
                self.testbed.set_cpu_share(quota)
                ratios.append(full / forward_s(self, model))
            points.append((quota, statistics.median(ratios)))
        self.testbed.set_cpu_share(1.0)
        self.share_map = ShareMap(tuple(points))
        return {"model": model, **self.share_map.to_dict()}


class UserspaceBench(Bench):
    """The userspace relay and duty cycling (no root): what the demo uses."""

    mode = "userspace"

    def start(self) -> None:
        from edgesplit.testbed.processes import free_port

        port = free_port()
        self._children.append(_spawn(self._cloud_command("127.0.0.1", port), 0,
                                     self.logs / "cloud.log"))
        # A 4 KB burst, like the tbf qdisc (32 kbit): small tensors pay their time too.
        self.link = LinkEmulator("127.0.0.1", port, rtt_ms=self.rtt_ms, burst_bytes=4096,
                                 seed=self.seed).start()
        process = _spawn(self._edge_command(f"http://127.0.0.1:{self.link.port}"), 1,
                         self.logs / "edge.log")
        self.edge = EdgeWorker(process, self.logs / "edge.log")
        self.cycler = DutyCycler(process.pid, native_ghz=self.native_ghz).__enter__()
        self._wait_cloud()

    def close(self) -> None:
        if getattr(self, "cycler", None) is not None:
            self.cycler.__exit__()
        super().close()
        if getattr(self, "link", None) is not None:
            self.link.stop()

    def set_conditions(self, bandwidth_kbps: float, clock_ghz: float) -> None:
        self.bandwidth_kbps = bandwidth_kbps
        self.link.set_rate_kbps(bandwidth_kbps)
        self.cycler.set_clock(min(clock_ghz, self.native_ghz))

    def set_delay(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        self.link.set_rtt_ms(rtt_ms)
        self.link.set_jitter_ms(jitter_ms)
        self.rtt_ms, self.jitter_ms = rtt_ms, jitter_ms


def check_rate(bench: Bench, bandwidth_kbps: float, clock_ghz: float,
               repeats: int = 3) -> dict[str, Any]:
    """Net transfer time of a known payload (about one second's worth) against the set rate."""
    bench.set_conditions(bandwidth_kbps, clock_ghz)
    payload = max(64 * 1024, round(bandwidth_kbps * 125))
    empty = statistics.median(bench.edge.ask({"op": "send", "bytes": 1})["seconds"]
                              for _ in range(repeats))
    full = statistics.median(bench.edge.ask({"op": "send", "bytes": payload})["seconds"]
                             for _ in range(repeats))
    expected = payload * WIRE_FACTOR * 8 / (bandwidth_kbps * 1000)
    error = (full - empty) / expected - 1
    return {"check": "rate", "bandwidth_kbps": bandwidth_kbps, "payload_bytes": payload,
            "measured_s": round(full - empty, 6), "expected_s": round(expected, 6),
            "error": round(error, 4), "tolerance": RATE_TOLERANCE,
            "passed": abs(error) <= RATE_TOLERANCE}


def check_clock(bench: Bench, model: str, bandwidth_kbps: float, clock_ghz: float,
                repeats: int = 3) -> dict[str, Any]:
    """Whole-forward slowdown at ``clock_ghz`` against the set share (paired with full speed
    samples, because this machine's own speed drifts)."""
    ratios = []
    for _ in range(repeats):
        bench.set_conditions(bandwidth_kbps, MAX_CLOCK_GHZ)
        full = forward_s(bench, model)
        bench.set_conditions(bandwidth_kbps, clock_ghz)
        ratios.append(forward_s(bench, model) / full)
    measured = statistics.median(ratios)
    expected = share_of(MAX_CLOCK_GHZ, bench.edge_speed) / share_of(clock_ghz, bench.edge_speed)
    error = measured / expected - 1
    return {"check": "clock", "model": model, "clock_ghz": clock_ghz,
            "share": round(share_of(clock_ghz, bench.edge_speed), 4),
            "measured_slowdown": round(measured, 4),
            "expected_slowdown": round(expected, 4), "error": round(error, 4),
            "tolerance": CLOCK_TOLERANCE, "passed": abs(error) <= CLOCK_TOLERANCE}


def forward_s(bench: Bench, model: str, min_time_s: float = 0.3) -> float:
    times = bench.edge.ask({"op": "forward", "model": model, "repeats": 1,
                            "min_time_s": min_time_s})["times"]
    return float(times[0])
