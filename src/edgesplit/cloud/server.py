"""The stateless cloud: finishes a split model from whatever split point an edge sends.

``create_app(settings)`` builds a FastAPI app that loads every model once at start-up and speaks:

- the Open Inference Protocol v2 (``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}``,
  ``POST /v2/models/{m}/infer`` with JSON or binary tensors; the split point is the request
  parameter ``split_point``, 0 when absent, so a plain OIP client gets a whole inference);
- the thesis's ``POST /offload`` (base64 raw little-endian float32), unchanged;
- ``/metrics`` for Prometheus.

Tails run in a bounded thread pool so the event loop never blocks; past ``max_pending`` requests
the server answers 503 with Retry-After instead of queueing without limit. Every response carries
the cloud's own timings: ``cloud_s`` (thesis equation 3.2) and ``layer_times_s``. Bad input gets a
4xx with ``{"error": "..."}``; nothing from the wire is unpickled or evaluated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hmac
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel, torch_dtype
from edgesplit.errors import (
    EdgesplitError,
    InvalidArgument,
    InvalidSplitPoint,
    Unauthorized,
    UnknownModel,
    WireFormatError,
    first_validation_error,
)
from edgesplit.wire.auth import HmacVerifier, read_keys
from edgesplit.wire.codecs import TORCH_TO_DATATYPE, decode_tensor, encode_tensor
from edgesplit.wire.protocol import (
    HEADER_LENGTH,
    InferenceRequest,
    encode_response,
    input_tensor,
    parse_request,
)

log = logging.getLogger(__name__)

OUTPUT_NAME = "output"


class ServerSettings(BaseSettings):
    """What the app needs; each can also come from an ``EDGESPLIT_...`` variable (where to
    listen and TLS are uvicorn's business: ``edgesplit cloud serve`` passes them there)."""

    model_config = SettingsConfigDict(env_prefix="EDGESPLIT_", extra="ignore")

    models: list[str] = list(zoo.MODELS)
    token: SecretStr | None = None  # accept "Authorization: Bearer <token>"
    hmac_keys: Path | None = None  # accept requests signed with a key in this file
    max_skew_s: float = Field(default=30.0, gt=0)  # signed timestamps, either way
    max_body_mb: float = Field(default=64.0, gt=0)
    workers: int = Field(default=2, ge=1)  # threads running tails at once
    torch_threads: int = Field(default=1, ge=1)
    max_pending: int = Field(default=32, ge=1)  # running + waiting; more get 503
    max_batch: int = Field(default=16, ge=1)  # largest batch dimension accepted
    body_timeout_s: float = Field(default=30.0, gt=0)  # a body trickling in slower is cut off


class Overloaded(EdgesplitError):
    """The server has ``max_pending`` requests already; the client should retry later."""


class PayloadTooLarge(EdgesplitError):
    """A request body over the configured limit."""


class RequestTimeout(EdgesplitError):
    """A request body that stopped arriving."""


STATUS: dict[type[EdgesplitError], int] = {
    UnknownModel: 404,
    InvalidSplitPoint: 400,
    WireFormatError: 400,
    InvalidArgument: 400,
    Unauthorized: 401,
    PayloadTooLarge: 413,
    RequestTimeout: 408,
    Overloaded: 503,
}


@dataclass(frozen=True)
class TailResult:
    output: torch.Tensor
    layer_times_s: list[float]
    compute_s: float


class CloudService:
    """The models and the one operation the cloud performs: decode, check, run the tail."""

    def __init__(self, models: Mapping[str, SplitModel], max_batch: int = 16) -> None:
        self.models = dict(models)
        self.max_batch = max_batch

    @classmethod
    def from_zoo(cls, names: Sequence[str], max_batch: int = 16) -> CloudService:
        models = {}
        for name in names:
            log.info("loading %s", name)
            models[name] = SplitModel(zoo.build_model(name), zoo.sample_input(name))
        return cls(models, max_batch)

    def split(self, name: str) -> SplitModel:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(
                f"model {name!r} is not served here: expected one of {', '.join(self.models)}"
            ) from None

    def max_elements(self, name: str, split_point: int) -> int:
        """The most elements one input tensor may have: the largest cut tensor, full batch."""
        specs = self.split(name).split_points[split_point].tensors
        return max(math.prod(s.shape) for s in specs) * self.max_batch

    def conform(self, name: str, split_point: int, tensors: list[torch.Tensor]) -> list[
            torch.Tensor]:
        """Cast floats to the cut's dtype and refuse NaN, infinity and oversized batches."""
        specs = self.split(name).split_points[split_point].tensors
        out = []
        for spec, tensor in zip(specs, tensors, strict=False):
            expected = torch_dtype(spec.dtype)
            if (tensor.dtype != expected and tensor.is_floating_point()
                    and expected.is_floating_point):
                tensor = tensor.to(expected)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise WireFormatError(f"{spec.name} contains NaN or infinity")
            if tensor.dim() and tensor.shape[0] > self.max_batch:
                raise WireFormatError(
                    f"batch of {tensor.shape[0]} is over this server's limit of {self.max_batch}")
            out.append(tensor)
        return out

    def run(self, name: str, split_point: int, tensors: list[torch.Tensor]) -> TailResult:
        split = self.split(name)
        tensors = self.conform(name, split_point, tensors)
        timings: list[float] = []
        began = time.perf_counter()
        output = split.tail(tensors, split_point, timings)
        return TailResult(output, timings, time.perf_counter() - began)


class Metrics:
    """Prometheus metrics, in a registry of the app's own (several apps can coexist)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("edgesplit_requests", "HTTP requests", ["route", "status"],
                                registry=self.registry)
        self.errors = Counter("edgesplit_errors", "Requests answered with an error",
                              ["route", "kind"], registry=self.registry)
        self.tail_seconds = Histogram(
            "edgesplit_tail_seconds", "Time to run a tail", ["model", "split_point"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        self.pending = Gauge("edgesplit_pending_requests", "Tail requests running or waiting",
                             registry=self.registry)
        self.received_bytes = Counter("edgesplit_received_bytes", "Tensor bytes received",
                                      ["model"], registry=self.registry)


class Admission:
    """Counts requests past the door; refuses the one over ``limit`` (bounded queueing)."""

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self.limit = limit
        self.pending = 0
        self.gauge = gauge

    def __enter__(self) -> Admission:
        if self.pending >= self.limit:
            raise Overloaded(f"the server is busy ({self.pending} requests pending): retry later")
        self.pending += 1
        self.gauge.set(self.pending)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pending -= 1
        self.gauge.set(self.pending)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is read into memory, and a
    body that stalls for ``timeout_s`` between chunks gets 408 (no slow-loris)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        message = (f"the request body is over the {limit} byte limit: send less or raise "
                   "--max-body-mb")
        for key, value in scope["headers"]:
            if key == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _send_error(send, 413, message)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            try:
                msg = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise RequestTimeout(f"the request body stalled for {self.timeout_s:g} s") from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(message)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (PayloadTooLarge, RequestTimeout) as exc:
            if not started:
                await _send_error(send, STATUS[type(exc)], str(exc))


class RequestCounter:
    """ASGI middleware: count responses by route template and status code."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def tracking_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.counter.labels(route, str(status)).inc()


async def _send_error(send: Send, status: int, message: str) -> None:
    body = JSONResponse({"error": message}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class OffloadRequest(BaseModel):
    """The thesis's request (Listing 1), with an optional explicit shape and dtype."""

    tensor: str
    splitting_point: int
    model: str
    shape: list[int] | None = Field(default=None, max_length=16)
    dtype: str = "float32"


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined, as OpenAPI request bodies need."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


INFER_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_schema(InferenceRequest)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
OFFLOAD_BODY_SCHEMA = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_schema(OffloadRequest)}}}
}


def create_app(settings: ServerSettings | None = None,
               service: CloudService | None = None) -> FastAPI:
    """The cloud app. Models load at start-up unless a ready ``service`` is passed in."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    state: dict[str, Any] = {"service": service}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.torch_threads)
        if state["service"] is None:
            state["service"] = CloudService.from_zoo(settings.models, settings.max_batch)
        # A plain executor: the loop-to-thread hop is ~80 µs against anyio's ~130 µs.
        state["pool"] = concurrent.futures.ThreadPoolExecutor(settings.workers,
                                                              thread_name_prefix="tail")
        state["admission"] = Admission(settings.max_pending, metrics.pending)
        log.info("ready: %s", ", ".join(state["service"].models))
        yield
        state["pool"].shutdown(wait=True)

    app = FastAPI(title="edgesplit cloud", version="1", lifespan=lifespan)
    # The served models, named in the OpenAPI schema (any other name still gets a 404 here).
    served = PathParam(json_schema_extra={
        "enum": list(service.models if service is not None else settings.models)})
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_body_mb * 1024 * 1024),
                       timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestCounter, counter=metrics.requests)

    def svc() -> CloudService:
        return state["service"]

    verifier = (HmacVerifier(read_keys(settings.hmac_keys), max_skew_s=settings.max_skew_s)
                if settings.hmac_keys else None)

    async def authorise(request: Request) -> None:
        """Open when no credential is configured; else a valid token or signature."""
        if settings.token is None and verifier is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if settings.token is not None and scheme.lower() == "bearer":
            expected = settings.token.get_secret_value()
            if hmac.compare_digest(given.strip().encode(), expected.encode()):
                return
            raise Unauthorized("wrong bearer token")
        if verifier is not None:
            # Headers first: a request that cannot be genuine is refused before its body is read.
            verifier.check_headers(request.headers, time.time())
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            verifier.verify(request.method, path, request.headers, await request.body(),
                            time.time())
            return
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")

    async def in_worker(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(state["pool"], fn)

    @app.exception_handler(EdgesplitError)
    async def edgesplit_error(request: Request, exc: EdgesplitError) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        metrics.errors.labels(_route(request), type(exc).__name__).inc()
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels(_route(request), "RequestValidationError").inc()
        return JSONResponse({"error": first_validation_error(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> Response:
        # Routine: an edge gives up on its deadline mid-upload. Nobody is left to answer.
        log.debug("client left during %s", request.url.path)
        metrics.errors.labels(_route(request), "ClientDisconnect").inc()
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        metrics.errors.labels(_route(request), "internal").inc()
        return JSONResponse({"error": "internal error; see the server log"}, status_code=500)

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": svc() is not None}

    @app.get("/v2")
    async def server_metadata(request: Request) -> dict[str, Any]:
        await authorise(request)
        return {"name": "edgesplit", "version": "1",
                "extensions": ["binary_tensor_data", "edgesplit_split_point"]}

    @app.get("/v2/models/{model}")
    async def model_metadata(request: Request, model: str = served) -> dict[str, Any]:
        await authorise(request)
        split = svc().split(model)
        first = split.split_points[0].tensors[0]
        out = split.split_points[-1].tensors
        return {
            "name": model,
            "versions": ["1"],
            "platform": "pytorch",
            "inputs": [{"name": first.name, "datatype": _datatype(first.dtype),
                        "shape": [-1, *first.shape[1:]]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": _datatype(t.dtype),
                         "shape": [-1, *t.shape[1:]]} for t in out],
            "parameters": {"split_points": [
                {"split_point": sp.split_point, "layer": sp.layer, "layer_type": sp.layer_type,
                 "offload_bytes": sp.offload_bytes,
                 "tensors": [{"name": t.name, "datatype": _datatype(t.dtype),
                              "shape": list(t.shape)} for t in sp.tensors]}
                for sp in split.split_points]},
        }

    @app.get("/v2/models/{model}/ready")
    async def model_ready(request: Request, model: str = served) -> dict[str, Any]:
        await authorise(request)
        svc().split(model)
        return {"name": model, "ready": True}

    @app.post("/v2/models/{model}/infer", openapi_extra=INFER_BODY_SCHEMA)
    async def infer(request: Request, model: str = served) -> Response:
        # Admitted before anything is read: at most max_pending bodies are held at once.
        with state["admission"]:
            await authorise(request)
            service = svc()
            service.split(model)
            body = await request.body()
            received = time.perf_counter()
            header_length = request.headers.get(HEADER_LENGTH)

            def work() -> tuple[InferenceRequest, int, TailResult, float]:
                # Parsing happens here too: a large JSON body must not stall the event loop.
                started = time.perf_counter()
                parsed, payloads = parse_request(body, header_length)
                sp = service.split(model).check_split_point(parsed.parameters.get("split_point",
                                                                                  0))
                tensors = _match_inputs(service, model, sp, parsed, payloads)
                return parsed, sp, service.run(model, sp, tensors), started

            parsed, split_point, result, started = await in_worker(work)
        finished = time.perf_counter()
        metrics.tail_seconds.labels(model, str(split_point)).observe(result.compute_s)
        metrics.received_bytes.labels(model).inc(len(body))
        binary = bool(parsed.parameters.get("binary_data_output", False)) or any(
            o.parameters.get("binary_data") for o in parsed.outputs)
        encoded = encode_tensor(result.output, name=OUTPUT_NAME)
        timings = {"split_point": split_point, "cloud_s": finished - received,
                   "compute_s": result.compute_s, "queue_s": started - received,
                   "layer_times_s": result.layer_times_s}
        content, headers = encode_response(model, [encoded], timings, binary=binary,
                                           request_id=parsed.id)
        return Response(content, headers=headers)

    @app.post("/offload", openapi_extra=OFFLOAD_BODY_SCHEMA)
    async def offload(request: Request) -> dict[str, Any]:
        with state["admission"]:
            await authorise(request)
            body = await request.body()
            received = time.perf_counter()
            service = svc()

            def work() -> tuple[OffloadRequest, TailResult]:
                try:
                    req = OffloadRequest.model_validate_json(body)
                except ValidationError as exc:
                    raise WireFormatError(first_validation_error(exc)) from exc
                sp = service.split(req.model).check_split_point(req.splitting_point)
                return req, service.run(req.model, sp, _offload_tensors(service, req))

            req, result = await in_worker(work)
        finished = time.perf_counter()
        metrics.tail_seconds.labels(req.model, str(req.splitting_point)).observe(
            result.compute_s)
        metrics.received_bytes.labels(req.model).inc(len(body))
        output = result.output
        return {"model": req.model, "splitting_point": req.splitting_point,
                "shape": list(output.shape), "output": output.reshape(-1).tolist(),
                "prediction": int(output.reshape(output.shape[0], -1).argmax(1)[0]),
                "cloud_s": finished - received, "compute_s": result.compute_s,
                "layer_times_s": result.layer_times_s}

    @app.post("/edgesplit/probe")
    async def probe(request: Request) -> dict[str, int]:
        """Swallow a body: the edge times this to measure its uplink when it is idle."""
        await authorise(request)
        return {"received": len(await request.body())}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        await authorise(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _route(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", "unmatched")


def _datatype(dtype: str) -> str:
    datatype = TORCH_TO_DATATYPE.get(torch_dtype(dtype))
    if datatype is None:
        raise WireFormatError(f"dtype {dtype!r} cannot travel on the wire")
    return datatype


def _match_inputs(service: CloudService, model: str, split_point: int,
                  request: InferenceRequest, payloads: list[bytes | None]) -> list[torch.Tensor]:
    """Order the request's inputs as the cut's tensors (by name; any name for a single one)."""
    specs = service.split(model).split_points[split_point].tensors
    if len(request.inputs) != len(specs):
        raise WireFormatError(
            f"split point {split_point} of {model} takes {len(specs)} input(s) "
            f"({', '.join(s.name for s in specs)}), got {len(request.inputs)}"
        )
    by_name = {item.name: (item, payload) for item, payload in
               zip(request.inputs, payloads, strict=True)}
    if len(specs) == 1:
        pairs = [(request.inputs[0], payloads[0])]
    else:
        missing = [s.name for s in specs if s.name not in by_name]
        if missing:
            raise WireFormatError(
                f"split point {split_point} of {model} needs inputs named "
                f"{', '.join(s.name for s in specs)}; missing {', '.join(missing)}")
        pairs = [by_name[s.name] for s in specs]
    limit = service.max_elements(model, split_point)
    return [input_tensor(item, payload, limit) for item, payload in pairs]


def _offload_tensors(service: CloudService, req: OffloadRequest) -> list[torch.Tensor]:
    """Decode the thesis's base64 tensor(s); the shape comes from the model and split point."""
    try:
        raw = base64.b64decode(req.tensor, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireFormatError(f"tensor is not valid base64: {exc}") from exc
    specs = service.split(req.model).split_points[req.splitting_point].tensors
    datatype = _datatype(req.dtype)
    if req.shape is not None:
        if len(specs) != 1:
            raise WireFormatError("an explicit shape works only where one tensor crosses the cut")
        return [decode_tensor(raw, req.shape, datatype,
                              max_elements=service.max_elements(req.model, req.splitting_point))]
    tensors, offset = [], 0
    itemsize = torch_dtype(req.dtype).itemsize
    for spec in specs:
        size = math.prod(spec.shape) * itemsize
        tensors.append(decode_tensor(raw[offset:offset + size], spec.shape, datatype))
        offset += size
    if offset != len(raw):
        raise WireFormatError(
            f"split point {req.splitting_point} of {req.model} takes {offset} bytes of "
            f"{req.dtype}, got {len(raw)}")
    return tensors
