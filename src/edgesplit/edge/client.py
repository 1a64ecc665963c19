"""The edge's side of the wire: one kept-alive HTTP connection to the cloud, hard deadlines.

``CloudClient.infer`` sends the tensors of a cut with the Open Inference Protocol's binary
extension and returns the output with the cloud's own timings. Every call has a deadline that
holds for the whole exchange, not per socket operation: the call runs on a helper thread and, if
the deadline passes, the connection is closed under it and ``OffloadTimeout`` is raised. Anything
else that keeps the answer from arriving (refused connection, reset, 4xx or 5xx) is
``CloudUnavailable`` with the reason.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import torch

from edgesplit.errors import CloudUnavailable, InvalidArgument, OffloadTimeout
from edgesplit.wire.auth import sign_request
from edgesplit.wire.codecs import EncodedTensor
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

T = TypeVar("T")


@dataclass(frozen=True)
class CloudReply:
    output: torch.Tensor
    cloud_s: float  # the cloud's own time, receipt to result (thesis equation 3.2)
    layer_times_s: list[float]
    request_bytes: int
    response_bytes: int
    round_trip_s: float  # send to answer, as the edge saw it


class CloudClient:
    """A client for one cloud server.

    ``token`` sends a bearer token; ``signing`` (key id, secret) signs every request with HMAC
    instead (see ``auth``). ``verify`` is True (the system's CAs), or the path of a CA bundle or
    of the server's own certificate to trust only that one.
    """

    def __init__(self, base_url: str, *, token: str | None = None,
                 signing: tuple[str, bytes] | None = None, verify: bool | str = True,
                 connect_timeout_s: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"the cloud URL {base_url!r} is not an http:// or https:// "
                                  "address (e.g. http://127.0.0.1:8000)")
        self._base_path = parts.path
        self._signing = signing
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._verify = _trust(verify)
        self._connect_timeout_s = connect_timeout_s
        self._client = self._new_client()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="offload")

    def _new_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self._headers, verify=self._verify)

    def infer(self, model: str, split_point: int, tensors: Sequence[EncodedTensor],
              deadline_s: float, request_id: str | None = None) -> CloudReply:
        body, headers = encode_request(tensors, {"split_point": split_point},
                                       request_id=request_id)
        path = f"/v2/models/{model}/infer"

        def call(timeout: httpx.Timeout) -> tuple[httpx.Response, float]:
            began = time.perf_counter()
            response = self._client.post(path, content=body, timeout=timeout,
                                         headers=headers | self._sign("POST", path, body))
            return response, time.perf_counter() - began

        response, elapsed = self._within(deadline_s, call)
        self._check(response)
        try:
            header, outputs = parse_response(response.content,
                                             response.headers.get(HEADER_LENGTH))
            parameters = header.get("parameters") or {}
            cloud_s = float(parameters.get("cloud_s", 0.0))
            layer_times = [float(t) for t in parameters.get("layer_times_s", [])]
            if not outputs or not all(math.isfinite(t) and t >= 0
                                      for t in (cloud_s, *layer_times)):
                raise ValueError("no output, or timings that are not non-negative numbers")
        except Exception as exc:  # whatever the cloud sent, the edge must not crash on it
            raise CloudUnavailable(f"the cloud's answer is malformed: {exc}") from exc
        return CloudReply(outputs[0], cloud_s, layer_times, len(body), len(response.content),
                          elapsed)

    def model_metadata(self, model: str, deadline_s: float = 5.0) -> tuple[int, Any]:
        """``GET /v2/models/{model}``: the status code and the JSON body (or error text)."""
        path = f"/v2/models/{model}"

        def call(timeout: httpx.Timeout) -> httpx.Response:
            return self._client.get(path, timeout=timeout, headers=self._sign("GET", path, b""))

        response = self._within(deadline_s, call)
        if response.status_code >= 400:
            return response.status_code, _error_text(response)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    def ping(self, deadline_s: float = 2.0) -> float:
        """One small round trip (``GET /v2/health/live``): its time in seconds."""
        def call(timeout: httpx.Timeout) -> float:
            began = time.perf_counter()
            # Liveness is open on the server: no signature needed.
            self._check(self._client.get("/v2/health/live", timeout=timeout))
            return time.perf_counter() - began

        return self._within(deadline_s, call)

    def probe(self, nbytes: int, deadline_s: float) -> float:
        """Send ``nbytes`` to the cloud's probe endpoint; the round trip time in seconds."""
        payload = bytes(nbytes)

        def call(timeout: httpx.Timeout) -> float:
            began = time.perf_counter()
            self._check(self._client.post("/edgesplit/probe", content=payload, timeout=timeout,
                                          headers=self._sign("POST", "/edgesplit/probe",
                                                             payload)))
            return time.perf_counter() - began

        return self._within(deadline_s, call)

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

    def _within(self, deadline_s: float, call: Callable[[httpx.Timeout], T]) -> T:
        """Run ``call`` on the helper thread and wait at most ``deadline_s`` for it.

        httpx's own timeouts bound each socket operation, not the exchange, so they cannot
        give the deadline; they are still set to it so that a stuck helper thread ends by itself
        soon after (closing a socket does not wake a thread blocked reading it).
        """
        timeout = httpx.Timeout(deadline_s, connect=min(self._connect_timeout_s, deadline_s))
        future = self._pool.submit(call, timeout)
        try:
            return future.result(timeout=deadline_s)
        except concurrent.futures.TimeoutError:
            # Give up on the stuck exchange: a fresh connection and helper thread for the next
            # call, so it never queues behind this one.
            stuck, self._client = self._client, self._new_client()
            stuck_pool, self._pool = self._pool, concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="offload")
            stuck.close()
            stuck_pool.shutdown(wait=False)
            raise OffloadTimeout(
                f"the cloud at {self.base_url} did not answer within {deadline_s:.2f} s"
            ) from None
        except httpx.TimeoutException:  # httpx's own timeout, set to the deadline, won the race
            raise OffloadTimeout(
                f"the cloud at {self.base_url} did not answer within {deadline_s:.2f} s"
            ) from None
        except httpx.HTTPError as exc:
            raise CloudUnavailable(
                f"cannot reach the cloud at {self.base_url}: {type(exc).__name__}: {exc}"
            ) from exc

    def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        raise CloudUnavailable(
            f"the cloud answered {response.status_code}: {_error_text(response)}"
        )


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


def _error_text(response: httpx.Response) -> str:
    try:
        body: Any = json.loads(response.content)
        return str(body.get("error", body))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
