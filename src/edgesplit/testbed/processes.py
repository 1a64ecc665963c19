"""Server child processes (``edgesplit cloud serve``, or any HTTP server), started and waited for.

The one helper the demo, the tests and the benchmarks share: ``start`` returns only once the
server answers its readiness path (the cloud's ``/v2/health/ready``): an event, with a generous
bound, never a fixed pause, so whatever comes next talks to a cloud that has loaded its models.

>>> with CloudProcess(models="mnist_cnn") as cloud:  # doctest: +SKIP
...     httpx.get(f"{cloud.url}/v2/health/ready").status_code
200
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Self

import httpx

from edgesplit.errors import EdgesplitError

READY_TIMEOUT_S = 180.0  # a cold start on a busy two-core machine takes seconds, not minutes


def stop_process(process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM,
                 timeout_s: float = 30.0) -> None:
    """Send ``sig`` to a child that still runs and wait for it to end (SIGKILL after
    ``timeout_s``); nothing for one that was never started or has ended."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server child process at ``url``, ready when ``ready_path`` answers 2xx. Its output
    goes to ``log`` (a private temporary file when not given); it can be killed and restarted."""

    def __init__(self, command: list[str], url: str, *, ready_path: str = "/v2/health/ready",
                 log: Path | None = None) -> None:
        self.command = command
        self.url = url
        self.ready_path = ready_path
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._sink: IO[bytes] | None = None

    def launch(self) -> None:
        """Start the process without waiting for it (``wait_ready`` waits)."""
        if self.log is not None:
            with open(self.log, "ab") as sink:  # the child keeps its own copy
                self.process = subprocess.Popen(self.command, stdout=sink, stderr=sink)
            return
        self._close_sink()
        self._sink = tempfile.TemporaryFile()  # noqa: SIM115 - kept open, read by output()
        self.process = subprocess.Popen(self.command, stdout=self._sink, stderr=self._sink)

    def ready(self, verify: bool | ssl.SSLContext = True) -> bool:
        """Whether the server answers ``ready_path`` now; raises if the process has ended."""
        if self.process is None or self.process.poll() is not None:
            raise EdgesplitError(f"the server exited: {self.output()[-2000:]}")
        try:
            return httpx.get(f"{self.url}{self.ready_path}", timeout=2, verify=verify).is_success
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S,
                   verify: bool | ssl.SSLContext = True) -> None:
        """Return once the server answers ``ready_path``; raise if it exits or the bound passes
        first."""
        deadline = time.monotonic() + timeout_s
        while not self.ready(verify):
            if time.monotonic() > deadline:
                self.stop()
                raise EdgesplitError(f"the server was not ready within {timeout_s:g} s: "
                                     f"{self.output()[-2000:]}")
            time.sleep(0.1)

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S,
              verify: bool | ssl.SSLContext = True) -> Self:
        """Launch and wait until ready."""
        self.launch()
        self.wait_ready(ready_timeout_s, verify)
        return self

    def pid(self) -> int:
        assert self.process is not None, "not launched"
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: an outage with no goodbye."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` and wait for the process to end (SIGKILL after 30 s)."""
        stop_process(self.process, sig)

    def output(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        if self.log is not None:
            return self.log.read_text(errors="replace") if self.log.exists() else ""
        if self._sink is None:
            return ""
        fd = self._sink.fileno()  # pread: the child shares the file offset, leave it alone
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def _close_sink(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._close_sink()


class CloudProcess(ServerProcess):
    """``edgesplit cloud serve`` with ``models`` and extra ``args`` on a loopback port."""

    def __init__(self, *args: str, models: str = "mnist_cnn,alexnet,resnet18",
                 port: int | None = None, scheme: str = "http", log: Path | None = None,
                 log_level: str = "warning") -> None:
        self.port = port or free_port()
        self.args = ["--port", str(self.port), "--models", models, "--log-level", log_level,
                     *args]  # what follows `edgesplit cloud serve`
        super().__init__([sys.executable, "-m", "edgesplit.cli", "cloud", "serve", *self.args],
                         f"{scheme}://127.0.0.1:{self.port}", log=log)
