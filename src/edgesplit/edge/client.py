"""The edge's side of the wire: one kept-alive HTTP connection to the cloud, hard deadlines.

``CloudClient.infer`` sends the tensors of a cut with the Open Inference Protocol's binary
extension and returns the output with the cloud's own timings. Every call has a deadline that
holds for the whole exchange, not per socket operation: the call runs on a helper thread and, if
the deadline passes, the connection is closed under it and ``OffloadTimeout`` is raised. Anything
else that keeps the answer from arriving (refused connection, reset, 4xx or 5xx) is
``CloudUnavailable`` with the reason; a 400, 413 or 422 (an answer about that one request, not
about the cloud) is its subclass ``CloudRefused``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import torch

from edgesplit.errors import (
    CloudRefused,
    CloudUnavailable,
    InvalidArgument,
    ModelVersionMismatch,
    OffloadTimeout,
)
from edgesplit.wire.auth import sign_request
from edgesplit.wire.codecs import TORCH_TO_DATATYPE, EncodedTensor
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

T = TypeVar("T")
log = logging.getLogger(__name__)

HEADER_ALLOWANCE_BYTES = 64 * 1024
"""An answer's JSON header beyond its values: names, shapes, parameters (ours use ~1 KB)."""
BYTES_PER_VALUE = 32
"""The most one output value or layer time may take in an answer (JSON text; binary is 2-8)."""
ERROR_BODY_BYTES = 4096
"""How much of an error answer is read for its message."""
SMALL_BYTES = 4096
"""The most a health, readiness or probe answer may take."""
REFUSALS = frozenset({400, 413, 422})
"""Answers about one request (its tensors, its split point), not about the cloud."""
VERSION_MISMATCH = 409
"""The cloud serves another version of the model: about this model, not about the cloud."""
NOT_FOUND = 404
METADATA_BYTES = 1 << 20
"""The most a model's metadata may take (ResNet-18's 69 split points take 15 KB)."""
KEEPALIVE_S = 2.0
"""Idle connections are dropped after this, well before the server's keep-alive (uvicorn: 5 s)
closes them, so a request never goes out on a connection the server is closing."""


class AnswerTimeout(OffloadTimeout):
    """The deadline passed while the answer was arriving: the request had crossed the link in
    full, so the timeout says nothing of the uplink's speed."""


@dataclass(frozen=True)
class Expected:
    """What a right answer holds: one output per ``(shape, OIP datatype)``, and one time per
    layer the cloud ran. It bounds the answer's size before anything is decoded. A free output
    (its shape None: one that does not follow the batch) is checked for its datatype only, and
    all of them together may hold ``free_elements``."""

    outputs: tuple[tuple[tuple[int, ...] | None, str], ...]
    layers: int
    free_elements: int = 0

    @property
    def elements(self) -> int:
        return self.free_elements + sum(math.prod(shape) for shape, _ in self.outputs
                                        if shape is not None)

    @property
    def max_response_bytes(self) -> int:
        return HEADER_ALLOWANCE_BYTES + BYTES_PER_VALUE * (self.elements + self.layers)


@dataclass(frozen=True)
class CloudReply:
    outputs: tuple[torch.Tensor, ...]
    cloud_s: float  # the cloud's own time, receipt to result (thesis equation 3.2), bounded
    layer_times_s: list[float]
    request_bytes: int
    response_bytes: int
    round_trip_s: float  # send to answer, as the edge saw it
    expected_wait_s: float = 0.0  # what a request sent now would wait there (its load)

    @property
    def output(self) -> torch.Tensor:
        return self.outputs[0]


class CloudClient:
    """A client for one cloud server.

    ``token`` sends a bearer token; ``signing`` (key id, secret) signs every request with HMAC
    instead (see ``auth``). ``verify`` is True (the system's CAs), or the path of a CA bundle or
    of the server's own certificate to trust only that one. After any failed exchange the
    connection is dropped: the next request opens a fresh one rather than reuse a connection
    that may have died with the cloud. ``transport`` replaces the network (httpx's
    ``MockTransport`` in tests; TLS settings then do not apply): everything above it, the
    deadlines, limits and checks of every answer, is the same.
    """

    def __init__(self, base_url: str, *, token: str | None = None,
                 signing: tuple[str, bytes] | None = None, verify: bool | str = True,
                 connect_timeout_s: float = 3.0,
                 max_response_bytes: int = 64 * 1024 * 1024,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"the cloud URL {base_url!r} is not an http:// or https:// "
                                  "address (e.g. http://127.0.0.1:8000)")
        self._base_path = parts.path
        self._signing = signing
        # Answers come as they are: a content-encoded (gzip, ...) answer could inflate past any
        # size the edge checks, so none is asked for and none is accepted.
        self._headers = {"accept-encoding": "identity"} | (
            {"authorization": f"Bearer {token}"} if token else {})
        self._verify = _trust(verify)
        self._connect_timeout_s = connect_timeout_s
        self._max_response_bytes = max_response_bytes
        self._transport = transport
        self._client = self._new_client()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="offload")
        self._answering: float | None = None  # the deadline of the exchange being answered

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self._headers, verify=self._verify,
                            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
                            transport=self._transport)

    def infer(self, model: str, split_point: int, tensors: Sequence[EncodedTensor],
              deadline_s: float, request_id: str | None = None, *,
              expect: Expected | None = None, model_digest: str | None = None,
              version: str | None = None) -> CloudReply:
        """Offload ``tensors`` at ``split_point``; the answer, checked against ``expect``.

        ``model_digest`` (``edgesplit.models.digest``) travels as a request parameter, in the
        signed body: a cloud serving another version answers 409, ``ModelVersionMismatch``.
        ``version`` asks for that version of the model (OIP's versioned route) instead of the
        latest; a cloud that no longer serves it answers 404, also ``ModelVersionMismatch``.

        The deadline holds for everything up to the result: sending, the cloud's work, reading
        the answer (at most ``expect.max_response_bytes``) and decoding it. An answer that is
        too large, malformed, of the wrong shape, dtype or number of outputs, not finite, or
        timed for the wrong number of layers is ``CloudUnavailable`` with the reason.
        """
        parameters: dict[str, Any] = {"split_point": split_point}
        if model_digest is not None:
            parameters["model_digest"] = model_digest
        body, headers = encode_request(tensors, parameters, request_id=request_id)
        path = (f"/v2/models/{model}/infer" if version is None
                else f"/v2/models/{model}/versions/{version}/infer")
        cap = expect.max_response_bytes if expect else self._max_response_bytes

        def call(timeout: httpx.Timeout, ends: float) -> CloudReply:
            answer = self._exchange("POST", path, timeout, ends, cap, content=body,
                                    headers=headers)
            _check_status(answer, versioned=version is not None)
            outputs, cloud_s, layer_times, wait_s = _parse_answer(
                answer.body, answer.headers.get(HEADER_LENGTH), expect)
            cloud_s, layer_times = bounded_timings(cloud_s, layer_times, answer.seconds)
            return CloudReply(outputs, cloud_s, layer_times, len(body), len(answer.body),
                              answer.seconds, wait_s)

        return self._within(deadline_s, call)

    def model_metadata(self, model: str, deadline_s: float = 5.0) -> tuple[int, Any]:
        """``GET /v2/models/{model}``: the status code and the JSON body (or error text)."""
        path = f"/v2/models/{model}"

        def call(timeout: httpx.Timeout, ends: float) -> _Answer:
            return self._exchange("GET", path, timeout, ends, METADATA_BYTES)

        answer = self._within(deadline_s, call)
        if answer.status >= 400:
            return answer.status, _error_message(answer.body)
        try:
            return answer.status, json.loads(answer.body)
        except ValueError:
            return answer.status, None

    def ping(self, deadline_s: float = 2.0) -> float:
        """One small round trip (``GET /v2/health/live``): its time in seconds."""
        def call(timeout: httpx.Timeout, ends: float) -> float:
            # Liveness is open on the server: no signature needed.
            answer = self._exchange("GET", "/v2/health/live", timeout, ends, SMALL_BYTES,
                                    sign=False)
            _check_status(answer)
            return answer.seconds

        return self._within(deadline_s, call)

    def ready(self, deadline_s: float = 2.0) -> None:
        """Return if the cloud is ready to serve (``GET /v2/health/ready`` answers ready),
        else raise ``CloudUnavailable`` with why not. Alive is not enough: a cloud still
        loading its models would fail the offload that trusted it."""
        def call(timeout: httpx.Timeout, ends: float) -> None:
            answer = self._exchange("GET", "/v2/health/ready", timeout, ends, SMALL_BYTES,
                                    sign=False)
            _check_status(answer)
            try:
                ready = json.loads(answer.body).get("ready") is True
            except (ValueError, AttributeError):
                ready = False
            if not ready:
                raise CloudUnavailable(f"the cloud at {self.base_url} is not ready yet")

        self._within(deadline_s, call)

    def probe(self, nbytes: int, deadline_s: float) -> float:
        """Send ``nbytes`` to the cloud's probe endpoint; the round trip time in seconds."""
        payload = bytes(nbytes)

        def call(timeout: httpx.Timeout, ends: float) -> float:
            answer = self._exchange("POST", "/edgesplit/probe", timeout, ends, SMALL_BYTES,
                                    content=payload)
            _check_status(answer)
            return answer.seconds

        return self._within(deadline_s, call)

    def _exchange(self, method: str, path: str, timeout: httpx.Timeout, ends: float, cap: int,
                  *, content: bytes = b"", headers: dict[str, str] | None = None,
                  sign: bool = True) -> _Answer:
        """One request; its answer read up to ``cap`` bytes (an error's up to a few KB)."""
        began = time.perf_counter()
        request_headers = (headers or {}) | (self._sign(method, path, content) if sign else {})
        with self._client.stream(method, path, content=content or None, timeout=timeout,
                                 headers=request_headers) as response:
            self._answering = ends  # the answer has begun: the request is through
            body = _read_body(response, cap, ends)
            return _Answer(response.status_code, body, response.headers,
                           time.perf_counter() - began)

    def _sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        if self._signing is None:
            return {}
        key_id, secret = self._signing
        return sign_request(method, self._base_path + path, body, key_id, secret, time.time())

    def close(self) -> None:
        self._client.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _within(self, deadline_s: float, call: Callable[[httpx.Timeout, float], T]) -> T:
        """Run ``call`` on the helper thread and wait at most ``deadline_s`` for it.

        httpx's own timeouts bound each socket operation, not the exchange, so they cannot
        give the deadline; they are still set to it so that a stuck helper thread ends by itself
        soon after (closing a socket does not wake a thread blocked reading it), and ``call``
        gets the deadline as a monotonic time to stop reading a dripping answer by. Whatever
        goes wrong, the connection is dropped so the next call starts on a fresh one.
        """
        timeout = httpx.Timeout(deadline_s, connect=min(self._connect_timeout_s, deadline_s))
        ends = time.monotonic() + deadline_s
        future = self._pool.submit(call, timeout, ends)
        try:
            return future.result(timeout=deadline_s)
        except (concurrent.futures.TimeoutError, httpx.TimeoutException):
            # Give up on the stuck exchange (httpx's own timeout, set to the deadline, may win
            # the race): a fresh connection and helper thread for the next call, so it never
            # queues behind this one. Whether its answer had begun tells a slow uplink (it had
            # not) from a cloud slow to answer (``AnswerTimeout``).
            self._renew(stuck=not future.done())
            error = AnswerTimeout if self._answering == ends else OffloadTimeout
            raise error(
                f"the cloud at {self.base_url} did not answer within {deadline_s:.2f} s"
            ) from None
        except httpx.HTTPError as exc:
            self._renew(stuck=False)
            raise CloudUnavailable(
                f"cannot reach the cloud at {self.base_url}: {type(exc).__name__}: {exc}"
            ) from exc
        except CloudUnavailable:
            self._renew(stuck=False)
            raise

    def _renew(self, *, stuck: bool) -> None:
        old, self._client = self._client, self._new_client()
        if stuck:
            old_pool, self._pool = self._pool, concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="offload")
            old_pool.shutdown(wait=False)
        old.close()

def _trust(verify: bool | str) -> bool | ssl.SSLContext:
    """``verify`` as httpx takes it: True, False, or a context trusting the PEM file given."""
    if isinstance(verify, bool):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(
            f"cannot use {verify} to verify the cloud: it must be a PEM certificate or CA "
            f"bundle ({exc})") from exc


def _error_message(content: bytes) -> str:
    try:
        body: Any = json.loads(content)
        return str(body.get("error", body))[:300]
    except (ValueError, AttributeError):
        return content.decode(errors="replace")[:300]


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    headers: httpx.Headers
    seconds: float  # send to the end of the answer


def _check_status(answer: _Answer, *, versioned: bool = False) -> None:
    """``CloudRefused`` for an answer about this request, ``ModelVersionMismatch`` for one
    about the model's version (409, or 404 on a versioned route: that version is gone),
    ``CloudUnavailable`` for any other error status."""
    if answer.status >= 400:
        gone = versioned and answer.status == NOT_FOUND
        error = (ModelVersionMismatch if answer.status == VERSION_MISMATCH or gone else
                 CloudRefused if answer.status in REFUSALS else CloudUnavailable)
        raise error(f"the cloud answered {answer.status}: {_error_message(answer.body)}")


def _read_body(response: httpx.Response, cap: int, ends: float) -> bytes:
    """The answer's body: at most ``cap`` bytes (an error's first few KB), never
    content-encoded, read no later than ``ends`` (a monotonic time) however slowly it drips."""
    if response.status_code >= 400:
        return _read_capped(response, ERROR_BODY_BYTES, ends, truncate=True)
    encoding = response.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise CloudUnavailable(f"the cloud's answer is {encoding}-encoded; the edge takes "
                               "answers as they are")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise CloudUnavailable(f"the cloud's answer is {declared} bytes, more than the {cap} "
                               "expected")
    return _read_capped(response, cap, ends)


def _read_capped(response: httpx.Response, cap: int, ends: float, *,
                 truncate: bool = False) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():
        if time.monotonic() > ends:
            raise AnswerTimeout("the cloud's answer was still arriving at the deadline")
        size += len(chunk)
        if size > cap:
            if truncate:
                chunks.append(chunk[:cap - size])
                break
            raise CloudUnavailable(f"the cloud's answer is more than the {cap} bytes "
                                   "expected")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_answer(content: bytes, header_length: str | None, expect: Expected | None
                  ) -> tuple[tuple[torch.Tensor, ...], float, list[float], float]:
    """Outputs, timings and the cloud's expected wait (0 from a cloud that does not report
    its load) of an answer; nothing larger than ``expect`` is decoded."""
    try:
        header, outputs = parse_response(content, header_length, max_elements=(
            expect.elements if expect else 1 << 28))
        parameters = header.get("parameters") or {}
        cloud_s = float(parameters.get("cloud_s", 0.0))
        layer_times = [float(t) for t in parameters.get("layer_times_s", [])]
        wait_s = float(parameters.get("expected_wait_s", 0.0))
    except Exception as exc:  # whatever the cloud sent, the edge must not crash on it
        raise CloudUnavailable(f"the cloud's answer is malformed: {str(exc)[:300]}") from exc
    if not outputs or not all(math.isfinite(t) and t >= 0
                              for t in (cloud_s, wait_s, *layer_times)):
        raise CloudUnavailable("the cloud's answer is malformed: no output, or timings that "
                               "are not non-negative numbers")
    if expect is not None:
        check_answer(outputs, layer_times, expect)
    return tuple(outputs), cloud_s, layer_times, wait_s


def check_answer(outputs: Sequence[torch.Tensor], layer_times: Sequence[float],
                 expect: Expected) -> None:
    """Raise ``CloudUnavailable`` unless the outputs are what ``expect`` says, all finite, and
    the cloud timed each layer it ran."""
    if len(outputs) != len(expect.outputs):
        raise CloudUnavailable(f"the cloud's answer is not this model's output: "
                               f"{len(outputs)} outputs, expected {len(expect.outputs)}")
    for t, (shape, datatype) in zip(outputs, expect.outputs, strict=True):
        got = TORCH_TO_DATATYPE.get(t.dtype, str(t.dtype))
        if (shape is not None and tuple(t.shape) != tuple(shape)) or got != datatype:
            raise CloudUnavailable(f"the cloud's answer is not this model's output: expected "
                                   f"{list(shape or ['any'])} {datatype}, got {list(t.shape)} "
                                   f"{got}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CloudUnavailable("the cloud's answer holds NaN or infinity")
    if len(layer_times) != expect.layers:
        raise CloudUnavailable(f"the cloud timed {len(layer_times)} layers; it had "
                               f"{expect.layers} to run")


def bounded_timings(cloud_s: float, layer_times: list[float],
                    round_trip_s: float) -> tuple[float, list[float]]:
    """The cloud's timings, bounded by what the edge saw: the cloud cannot have worked longer
    than the round trip, nor its layers longer than its whole time. Nothing learned or billed
    from them can exceed what was observed."""
    bounded = min(cloud_s, max(round_trip_s, 0.0))
    total = math.fsum(layer_times)
    if bounded < cloud_s:
        log.warning("the cloud reported %.3g s of work in a %.3g s round trip: counted as %.3g s",
                    cloud_s, round_trip_s, bounded)
    if total > bounded > 0:
        layer_times = [t * bounded / total for t in layer_times]
    elif total > bounded:
        layer_times = [0.0] * len(layer_times)
    return bounded, layer_times
