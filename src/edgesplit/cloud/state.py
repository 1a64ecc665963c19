"""The app's state, typed: what the routes and dependencies share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from edgesplit.cloud.body import BodyBudget
from edgesplit.cloud.limits import Admission
from edgesplit.cloud.metrics import Metrics
from edgesplit.cloud.service import CloudService
from edgesplit.cloud.settings import ServerSettings
from edgesplit.cloud.tail import TailRunner

if TYPE_CHECKING:
    from edgesplit.cloud.security import Authenticator


@dataclass
class CloudState:
    """Everything one app shares; ``runner`` exists once the models are loaded."""

    settings: ServerSettings
    metrics: Metrics
    auth: Authenticator
    admission: Admission
    budget: BodyBudget
    runner: TailRunner | None = None

    @property
    def tails(self) -> TailRunner:
        if self.runner is None:
            raise RuntimeError("the cloud's models are not loaded yet")
        return self.runner

    @property
    def service(self) -> CloudService:
        return self.tails.service


def cloud_state(request: Request) -> CloudState:
    """The dependency that gives a route the app's state."""
    state: CloudState = request.app.state.cloud
    return state
