"""Emulating a slower edge without root: duty-cycle a process with SIGSTOP/SIGCONT.

A process allowed to run a fraction ``f`` of every period runs compute-bound work about ``1/f``
times slower: a real slowdown, not a multiplication of measured times. The emulated clock is
``f * native clock``. (The root testbed uses cgroup CPU quotas instead; this works anywhere.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from edgesplit.errors import InvalidArgument

log = logging.getLogger(__name__)


class DutyCycler:
    """Let process ``pid`` run ``clock_ghz / native_ghz`` of every ``period_s``.

    Use as a context manager; the process is always left running when it exits. The clock can be
    changed while cycling with ``set_clock``.
    """

    def __init__(self, pid: int, native_ghz: float, clock_ghz: float | None = None,
                 period_s: float = 0.01) -> None:
        if native_ghz <= 0 or period_s <= 0:
            raise InvalidArgument("native clock and period must be positive")
        self.pid = pid
        self.native_ghz = native_ghz
        self.period_s = period_s
        self._fraction = 1.0
        self.cycles = 0  # periods begun: lets a caller wait until a new clock has taken hold
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_clock(native_ghz if clock_ghz is None else clock_ghz)

    @property
    def clock_ghz(self) -> float:
        return self._fraction * self.native_ghz

    def set_clock(self, clock_ghz: float) -> None:
        if not 0 < clock_ghz <= self.native_ghz * 1.0001:
            raise InvalidArgument(
                f"emulated clock {clock_ghz} GHz is out of range: expected more than 0 and at "
                f"most this machine's {self.native_ghz} GHz"
            )
        self._fraction = min(1.0, clock_ghz / self.native_ghz)

    def __enter__(self) -> DutyCycler:
        self._thread = threading.Thread(target=self._cycle, name="duty-cycler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> bool:
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def _cycle(self) -> None:
        # Deadlines come from one start time so sleep overshoot does not accumulate.
        next_edge = time.perf_counter()
        while not self._stop.is_set():
            self.cycles += 1
            fraction = self._fraction
            if fraction >= 1.0:
                self._signal(signal.SIGCONT)
                self._stop.wait(self.period_s)
                next_edge = time.perf_counter()
                continue
            if not self._signal(signal.SIGCONT):
                return
            next_edge += fraction * self.period_s
            _sleep_until(next_edge)
            if not self._signal(signal.SIGSTOP):
                return
            next_edge += (1.0 - fraction) * self.period_s
            _sleep_until(next_edge)


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)
