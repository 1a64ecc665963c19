"""Servers for the benchmarks: started on a free loopback port, stopped after."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from edgesplit.testbed.demo import free_port

HERE = Path(__file__).parent


@contextmanager
def serving(models: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``edgesplit cloud serve`` with ``models`` and extra ``args``; yields (process, url)."""
    port = free_port()
    with _running([sys.executable, "-m", "edgesplit.cli", "cloud", "serve", "--port", str(port),
                   "--models", models, "--log-level", "warning", *args],
                  f"http://127.0.0.1:{port}", "/v2/health/ready") as started:
        yield started


@contextmanager
def serving_thesis(models: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The thesis-style Flask comparator (``thesis_server.py``); yields (process, url)."""
    port = free_port()
    with _running([sys.executable, str(HERE / "thesis_server.py"), "--port", str(port),
                   "--models", models], f"http://127.0.0.1:{port}", "/health") as started:
        yield started


@contextmanager
def _running(command: list[str], url: str,
             ready_path: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}{ready_path}", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"the server did not start: {' '.join(command)}")
        yield server, url
    finally:
        server.terminate()
        server.wait()
