"""The cloud on Ray Serve: the same FastAPI app as a deployment, scaled by replicas.

``edgesplit cloud serve --backend ray`` builds the app of ``create_app`` on every replica (its
lifespan loads the models there), so the endpoints, credentials, limits and answers are the
ones of the built-in server; tails are batched through ``serve.batch`` instead of the built-in
asyncio batcher. Ray starts locally on demand, or joins a running cluster (``--ray-address``),
where Serve's proxies and the replicas spread over its machines. Ray is an optional extra:
``pip install 'edgesplit[ray]'``. Within the cluster Ray moves its own actors with cloudpickle;
what an edge sends is still parsed only as OIP or JSON.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import torch

from edgesplit.cloud.batching import InWorker, Waiting, run_together
from edgesplit.cloud.front import front_app
from edgesplit.cloud.service import CloudService, TailResult
from edgesplit.cloud.serving import head_limits
from edgesplit.cloud.serving import serve as serve_guarded
from edgesplit.cloud.settings import ServerSettings
from edgesplit.errors import EdgesplitError, InvalidArgument

log = logging.getLogger(__name__)
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # 0: Ray's node address is 127.0.0.1


def _loopback_port() -> int:
    """A loopback port nobody listens on now: Serve's proxy's private one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Scaling:
    """A fixed number of replicas, or autoscaling between two bounds."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None

    @classmethod
    def parse(cls, replicas: int | None, autoscale: str | None) -> Scaling:
        if replicas is not None and autoscale is not None:
            raise InvalidArgument("give --replicas or --autoscale, not both")
        if autoscale is None:
            if replicas is not None and replicas < 1:
                raise InvalidArgument(f"--replicas must be 1 or more, got {replicas}")
            return cls(replicas or 1)
        low, sep, high = autoscale.partition(":")
        if not (sep and low.isdigit() and high.isdigit()) or not 0 < int(low) <= int(high):
            raise InvalidArgument(f"--autoscale takes MIN:MAX with 1 <= MIN <= MAX, got "
                                  f"{autoscale!r}")
        return cls(autoscale=(int(low), int(high)))

    def options(self) -> dict[str, Any]:
        if self.autoscale is None:
            return {"num_replicas": self.replicas}
        low, high = self.autoscale
        return {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                       "target_ongoing_requests": 4}}


def import_ray(ray_address: str | None = None) -> tuple[ModuleType, ModuleType]:
    """Ray and Ray Serve, or one line saying how to install them. Joining a running cluster
    (``ray_address``) sends Ray's auth token where there is one: Ray reads that at import.

    A Ray started here is this server's alone and only the front is its door, so its own ports
    (GCS, raylet, agents, the metrics exporters, which answer without a credential) listen on
    loopback: Ray binds them there when its node address is loopback, which it is when
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is 0 (read at import; a value the user set stands)."""
    if ray_address is None:
        os.environ.setdefault(LOCAL_ONLY, "0")
    elif "RAY_AUTH_MODE" not in os.environ and join_with_token(os.environ, Path.home()):
        log.info("joining the Ray cluster at %s with Ray's auth token", ray_address)
    try:
        return importlib.import_module("ray"), importlib.import_module("ray.serve")
    except ImportError:
        raise InvalidArgument(
            "--backend ray needs Ray Serve, which is not installed: "
            "pip install 'edgesplit[ray]' (or use the built-in backend)") from None


class ServeBatcher:
    """Batches tails with ``serve.batch`` (on a replica), grouping them by model and split
    point; each request is checked alone first and answered alone."""

    def __init__(self, service: CloudService, in_worker: InWorker[Any], max_batch_size: int,
                 wait_s: float) -> None:
        _, serve = import_ray()
        self.service = service
        self.in_worker = in_worker
        self._batched = serve.batch(max_batch_size=max_batch_size,
                                    batch_wait_timeout_s=wait_s)(self._run_many)

    async def run(self, model: str, split_point: int, tensors: list[torch.Tensor]) -> TailResult:
        tensors = self.service.conform(model, split_point, tensors)  # refused alone
        rows = self.service.split(model).check_tensors(tensors, split_point)
        result: TailResult | Exception = await self._batched(
            (model, split_point, Waiting(tensors, rows, future=None)))
        if isinstance(result, Exception):
            raise result
        return result

    async def _run_many(self, calls: list[tuple[str, int, Waiting]]
                        ) -> list[TailResult | Exception]:
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, (model, sp, item) in enumerate(calls):
            shapes = tuple((t.dtype, tuple(t.shape[1:])) for t in item.tensors)
            groups.setdefault((model, sp, shapes), []).append(index)
        results: list[TailResult | Exception] = [RuntimeError("not run")] * len(calls)
        for (model, sp, _), indices in groups.items():
            items = [calls[i][2] for i in indices]
            done = await self.in_worker(partial(run_together, self.service, model, sp, items))
            for i, result in zip(indices, done, strict=True):
                results[i] = result
        return results

    def close_all(self) -> None:
        """Nothing to flush: Serve's batch queue lives and dies with the replica."""


def build_ray_app(settings: ServerSettings) -> Any:
    """The app of one replica: the built-in one, batching through ``serve.batch``."""
    from edgesplit.cloud.app import create_app

    batcher = partial(ServeBatcher, max_batch_size=settings.max_batch_size,
                      wait_s=settings.batch_wait_ms / 1000)
    return create_app(settings, batcher=batcher)


def join_with_token(environ: MutableMapping[str, str], home: Path) -> bool:
    """Whether joining a running cluster should send Ray's auth token (and say so in
    ``environ``). ``ray start --head`` turns token authentication on by default and keeps the
    token in ``~/.ray/auth_token``, but a driver that joins sends it only when
    ``RAY_AUTH_MODE=token`` was set before Ray was imported; without it the join is refused as
    unauthenticated. A mode the user set is left alone."""
    if "RAY_AUTH_MODE" in environ:
        return environ["RAY_AUTH_MODE"].lower() == "token"
    path = environ.get("RAY_AUTH_TOKEN_PATH")
    if "RAY_AUTH_TOKEN" in environ or Path(path or home / ".ray" / "auth_token").is_file():
        environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def serve_on_ray(settings: ServerSettings, *, host: str, port: int, scaling: Scaling,
                 ray_address: str | None, tls: tuple[str, str] | None = None) -> None:
    """Deploy the app (built on each replica) behind Serve's proxy on a private loopback port,
    and serve ``host:port`` with the guarded front (``front.py``) until SIGTERM or SIGINT."""

    def build_app() -> Any:  # a plain function: Serve calls it on each replica
        return build_ray_app(settings)

    ray, serve = import_ray(ray_address)
    ray.init(address=ray_address, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        private_port = _loopback_port()  # Serve's proxy: reached by the front alone
        upstream = f"http://127.0.0.1:{private_port}"
        serve.start(proxy_location="HeadOnly",
                    http_options={"host": "127.0.0.1", "port": private_port})
        ingress = serve.deployment(serve.ingress(build_app)(), name="edgesplit")
        options = scaling.options() | {"max_ongoing_requests": settings.max_pending,
                                       "ray_actor_options": {"num_cpus": settings.tail_threads}}
        serve.run(ingress.options(**options).bind(), name="edgesplit", route_prefix="/")
        check_upstream(upstream)
        log.warning("edgesplit on Ray Serve: http%s://%s:%d, %s", "s" if tls else "", host,
                    port, scaling)
        serve_guarded(front_app(settings, upstream), host, port,
                      limits=head_limits(settings), log_level=settings.log_level,
                      tls_cert=Path(tls[0]) if tls else None,
                      tls_key=Path(tls[1]) if tls else None)
    finally:
        serve.shutdown()
        ray.shutdown()


def check_upstream(upstream: str, timeout_s: float = 60.0) -> None:
    """Wait for Serve's proxy on this machine to answer its health path; one line if it
    never does: the server joined a cluster from a machine that is not its head node, or one
    where Serve already ran with other HTTP options (Serve keeps the first ones)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{upstream}/-/healthz", timeout=5, trust_env=False).is_success:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise EdgesplitError(
                f"Ray Serve's proxy did not answer at {upstream} within {timeout_s:g} s: with "
                "--ray-address, start the server on the cluster's head node, where Serve is "
                "not running yet")
        time.sleep(0.2)
