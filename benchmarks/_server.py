"""A cloud server for the benchmarks: started on a free loopback port, stopped after."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from edgesplit.testbed.demo import free_port


@contextmanager
def serving(models: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``edgesplit cloud serve`` with ``models`` and extra ``args``; yields (process, url)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "edgesplit.cli", "cloud", "serve",
                               "--port", str(port), "--models", models,
                               "--log-level", "warning", *args])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the cloud server did not start")
        yield server, url
    finally:
        server.terminate()
        server.wait()
