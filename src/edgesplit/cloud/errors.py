"""The cloud's own refusals, and the HTTP status of every error the server answers with."""

from __future__ import annotations

from edgesplit.errors import (
    EdgesplitError,
    InvalidArgument,
    InvalidSplitPoint,
    ModelVersionMismatch,
    Unauthorized,
    UnknownModel,
    WireFormatError,
)


class Overloaded(EdgesplitError):
    """The server has ``max_pending`` requests already; the client should retry later."""


class PayloadTooLarge(EdgesplitError):
    """A request body over the configured limit."""


class RequestTimeout(EdgesplitError):
    """A request body that stopped arriving."""


class NotFinite(EdgesplitError):
    """Well-formed, finite input whose tail gives NaN or infinity (say values near 3e38 that
    overflow the first layer): the cloud answers no such output."""


STATUS: dict[type[EdgesplitError], int] = {
    UnknownModel: 404,
    InvalidSplitPoint: 400,
    ModelVersionMismatch: 409,
    WireFormatError: 400,
    InvalidArgument: 400,
    Unauthorized: 401,
    PayloadTooLarge: 413,
    RequestTimeout: 408,
    NotFinite: 422,
    Overloaded: 503,
}


def status_of(exc: EdgesplitError) -> int:
    """The HTTP status for ``exc``: its most specific kind in ``STATUS``, else 400."""
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
