"""The stateless cloud: finishes a split model from whatever split point an edge sends.

``create_app(settings)`` builds a FastAPI app that loads every model once at start-up and speaks:

- the Open Inference Protocol v2 (``routers/oip.py``);
- the thesis's ``POST /offload`` (``routers/offload.py``), unchanged;
- ``/edgesplit/probe`` for the edge's uplink measurements, ``/edgesplit/load`` for what the
  cloud is holding (``load.py``) and ``/metrics`` for Prometheus.

Every route but liveness and readiness is behind the credential (``security.py``, a dependency
of the whole app). Tails run in a bounded thread pool so the event loop never blocks; past
``max_pending`` requests the server answers 503 with Retry-After instead of queueing without
limit (``tail.py``, ``limits.py``). Every response carries the cloud's own timings: ``cloud_s``
(thesis equation 3.2) and ``layer_times_s``. Bad input gets a 4xx with ``{"error": "..."}``;
nothing from the wire is unpickled or evaluated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import torch
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from edgesplit.cloud.batching import TailBatcher
from edgesplit.cloud.body import BodyBudget
from edgesplit.cloud.errors import status_of
from edgesplit.cloud.kernels import tune_linears
from edgesplit.cloud.limits import Admission, BodyPace
from edgesplit.cloud.metrics import Metrics, RequestCounter, route_of
from edgesplit.cloud.repository import ModelRepository, load_version, watch
from edgesplit.cloud.routers import docs, index, load, metrics, offload, oip, probe
from edgesplit.cloud.security import Authenticator, authenticate
from edgesplit.cloud.service import CloudService
from edgesplit.cloud.settings import ServerSettings
from edgesplit.cloud.state import CloudState
from edgesplit.cloud.tail import BatcherFactory, TailRunner
from edgesplit.core.splitting import SplitModel
from edgesplit.errors import EdgesplitError, first_validation_error
from edgesplit.models.names import model_name

log = logging.getLogger(__name__)


def create_app(settings: ServerSettings | None = None,
               service: CloudService | None = None,
               batcher: BatcherFactory | None = None) -> FastAPI:
    """The cloud app. Models load at start-up unless a ready ``service`` is passed in.

    With ``settings.max_batch_size`` over 1, tails are batched: by ``batcher`` when given (the
    Ray backend passes Serve's), else by the built-in asyncio ``TailBatcher``."""
    settings = settings or ServerSettings()
    if batcher is None and settings.max_batch_size > 1:
        batcher = partial(TailBatcher, max_batch_size=settings.max_batch_size,
                          wait_s=settings.batch_wait_ms / 1000, workers=settings.workers)
    metrics_ = Metrics()
    cloud = CloudState(settings, metrics_, Authenticator.from_settings(settings),
                       Admission(settings.max_pending, metrics_.pending),
                       BodyBudget(settings.max_bodies_bytes))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.tail_threads)
        loaded = service or CloudService.from_zoo(settings.listed_models, settings.max_batch,
                                                  settings.device)
        for name in loaded.models:
            tune(name, loaded.split(name))
        cloud.runner = TailRunner(loaded, settings.workers, metrics_,
                                  batcher if settings.max_batch_size > 1 else None)
        async with serving_repository(settings, loaded, tune):
            log.info("ready: %s", ", ".join(loaded.models))
            yield
        cloud.runner.close()

    def tune(name: str, split: SplitModel) -> None:
        if settings.max_batch_size > 1 and settings.device == "cpu":
            chosen = tune_linears(split, settings.max_batch_size)  # batches' faster matmul
            log.info("%s: fully connected kernels by batch size: %s", name, chosen)

    app = FastAPI(title="edgesplit cloud", version="1", lifespan=lifespan,
                  dependencies=[Depends(authenticate)],
                  openapi_url=None, docs_url=None, redoc_url=None)  # routers/docs.py has them
    app.state.cloud = cloud
    app.add_middleware(BodyPace, max_bytes=settings.max_body_bytes,
                       grace_s=settings.body_timeout_s,
                       min_rate=settings.min_body_rate_kb * 1024)
    app.add_middleware(RequestCounter, counter=metrics_.requests)
    served = (None if settings.model_repository is not None else  # names known as they come
              list(service.models if service is not None else map(model_name, settings.models)))
    for api in (oip.router(served), index.router, offload.router, probe.router, load.router,
                metrics.router, docs.router):
        app.include_router(api)
    add_error_handlers(app, metrics_)
    return app


@asynccontextmanager
async def serving_repository(settings: ServerSettings, service: CloudService,
                             tune: Callable[[str, SplitModel], None]) -> AsyncIterator[None]:
    """With ``--model-repository``: its models loaded now, and watched while serving."""
    if settings.model_repository is None:
        yield
        return
    repository = ModelRepository(settings.model_repository, load_version,
                                 taken=list(service.models),
                                 prepare=lambda split: tune("a repository model", split))
    base = list(service.catalog.served.values())
    first = await asyncio.to_thread(repository.refresh, base)
    service.catalog = first or service.catalog  # None: the repository is empty
    poll = asyncio.create_task(watch(repository, service, settings.repository_poll_s))
    try:
        yield
    finally:
        poll.cancel()


def add_error_handlers(app: FastAPI, metrics_: Metrics) -> None:
    """Every error as ``{"error": ...}`` with its status, counted by route and kind."""

    @app.exception_handler(EdgesplitError)
    async def edgesplit_error(request: Request, exc: EdgesplitError) -> JSONResponse:
        status = status_of(exc)
        metrics_.errors.labels(route_of(request.scope), type(exc).__name__).inc()
        headers = {"Retry-After": "1"} if status == 503 else None
        if status in (408, 413):  # the body is not read: close rather than swallow the rest
            headers = {"Connection": "close"}
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics_.errors.labels(route_of(request.scope), "RequestValidationError").inc()
        return JSONResponse({"error": first_validation_error(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> Response:
        # Routine: an edge gives up on its deadline mid-upload. Nobody is left to answer.
        log.debug("client left during %s", request.url.path)
        metrics_.errors.labels(route_of(request.scope), "ClientDisconnect").inc()
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        metrics_.errors.labels(route_of(request.scope), "internal").inc()
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)
