"""Servers for the benchmarks: started on a free loopback port, stopped after."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgesplit.testbed.processes import CloudProcess, ServerProcess, free_port

HERE = Path(__file__).parent


@contextmanager
def serving(models: str, *args: str) -> Iterator[tuple[CloudProcess, str]]:
    """``edgesplit cloud serve`` with ``models`` and extra ``args``; yields (server, url)."""
    with CloudProcess(*args, models=models) as cloud:
        yield cloud, cloud.url


@contextmanager
def serving_thesis(models: str) -> Iterator[tuple[ServerProcess, str]]:
    """The thesis-style Flask comparator (``thesis_server.py``); yields (server, url)."""
    port = free_port()
    with ServerProcess([sys.executable, str(HERE / "thesis_server.py"), "--port", str(port),
                        "--models", models], f"http://127.0.0.1:{port}",
                       ready_path="/health") as server:
        yield server, server.url
