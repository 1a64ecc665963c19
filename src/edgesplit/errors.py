"""One exception tree for everything edgesplit raises on purpose.

Every message is one line that says what was given, what was expected and what to do, so the CLI
can print it as it is and the server can return it as the body of a 4xx.
"""

from __future__ import annotations

from typing import Any


class EdgesplitError(Exception):
    """Root of every error edgesplit raises on purpose."""


class UnknownModel(EdgesplitError, LookupError):
    """A model name that is not in the registry (or not served by this cloud)."""


class InvalidSplitPoint(EdgesplitError, ValueError):
    """A split point outside 0..N for its model."""


class ModelNotSplittable(EdgesplitError, ValueError):
    """A module that cannot be turned into an ordered list of split points."""


class InvalidConditions(EdgesplitError, ValueError):
    """Bandwidth, round-trip time or clock speed out of their valid ranges."""


class InvalidArgument(EdgesplitError, ValueError):
    """A parameter (weight, strategy, price, deadline, ...) out of its valid range."""


class MissingLimit(InvalidArgument):
    """A strategy needs a limit the objective lacks; ``needs`` names the ``Objective`` field."""

    def __init__(self, message: str, needs: str) -> None:
        super().__init__(message)
        self.needs = needs


class ProfileError(EdgesplitError, ValueError):
    """A profile file that is missing, unreadable or does not match its model."""


class CalibrationError(EdgesplitError, ValueError):
    """Too few or inconsistent calibration measurements to fit a clock-speed law."""


class NotFitted(EdgesplitError, RuntimeError):
    """A predictor asked to predict before `fit` was called."""


class WireFormatError(EdgesplitError, ValueError):
    """Bytes that do not decode to the tensor(s) they claim to be."""


class InputError(EdgesplitError, ValueError):
    """An input file (image or tensor) that cannot be read or has the wrong shape."""


class CloudUnavailable(EdgesplitError, ConnectionError):
    """The cloud could not be reached, refused the request, or answered with an error."""


class CloudRefused(CloudUnavailable):
    """The cloud refused one request (400, 413, 422: this tensor, this split point), which
    says nothing about its other requests: not an outage."""


class ModelVersionMismatch(CloudRefused):
    """The cloud serves another version of the model (its digest differs from the one the edge
    sent): that inference must be finished where the right weights are. Not an outage."""


class OffloadTimeout(CloudUnavailable, TimeoutError):
    """The cloud did not answer within the deadline derived from the plan."""


class TestbedError(EdgesplitError):
    """The testbed could not be set up, changed or checked, or failed its self-check."""


class ModelSourceError(EdgesplitError, ValueError):
    """A model file or entry point that cannot be loaded: missing, truncated, not a
    ``torch.export`` program, holding what edgesplit does not load (pickles, compiled code), or a
    factory that raises or returns no module."""


class Unauthorized(EdgesplitError):
    """A missing, wrong, stale or replayed credential."""


class MissingExtra(EdgesplitError, ImportError):
    """A command or module needs a package that only one of edgesplit's extras installs."""


def first_validation_error(exc: Any) -> str:
    """One line from a pydantic ``ValidationError``: where, then what (the first problem)."""
    errors = exc.errors()
    if not errors:
        return "invalid input"
    where = ".".join(str(part) for part in errors[0]["loc"])
    return f"{where}: {errors[0]['msg']}" if where else errors[0]["msg"]
