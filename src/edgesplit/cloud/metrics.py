"""Prometheus metrics of one app, and the middleware that counts responses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
            self.counter.labels(route_of(scope), str(status)).inc()


def route_of(scope: Scope) -> str:
    """The route template a request matched (``/v2/models/{model}/infer``), or ``unmatched``."""
    return getattr(scope.get("route"), "path", "unmatched")
