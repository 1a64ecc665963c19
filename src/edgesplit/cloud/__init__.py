"""The stateless cloud server: ``create_app(settings, service=...)`` builds the FastAPI app.

settings (``ServerSettings``), service (``CloudService``: the models, running a tail), decoding
(request bodies to tensors), security (authentication, a dependency of every route), limits
(admission, body size and pace), tail (the one path that runs a tail: ``TailRunner``), state
(typed app state), metrics, and the routers (OIP v2, /offload, probe, metrics, docs).
"""

from edgesplit.cloud.app import create_app
from edgesplit.cloud.service import CloudService, TailResult
from edgesplit.cloud.settings import ServerSettings

__all__ = ["CloudService", "ServerSettings", "TailResult", "create_app"]
