"""The stateless cloud server: ``create_app(settings, service=...)`` builds the FastAPI app.

settings (``ServerSettings``), service (``CloudService``: the models, running a tail), decoding
(request bodies to tensors), security (authentication, a dependency of every route), limits
(admission, body size and pace), tail (the one path that runs a tail: ``TailRunner``), state
(typed app state), metrics, and the routers (OIP v2, /offload, probe, metrics, docs).
Its names are imported when first used, so ``edgesplit.cloud.settings`` (which ``edgesplit cloud
serve --help`` reads) comes without FastAPI and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgesplit.cloud.app import create_app
    from edgesplit.cloud.service import CloudService, TailResult
    from edgesplit.cloud.settings import ServerSettings

__all__ = ["CloudService", "ServerSettings", "TailResult", "create_app"]

_HOME = {"create_app": "app", "CloudService": "service", "TailResult": "service",
         "ServerSettings": "settings"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgesplit.cloud.{_HOME[name]}"), name)
