"""A model of the user's own (a small DAG), split between a real edge and a real cloud."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
import torch
import uvicorn
from torch import nn

from edgesplit.cloud import CloudService, ServerSettings, create_app
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.errors import InvalidArgument
from edgesplit.measuring.profiler import profile_model
from edgesplit.testbed.processes import free_port

from .helpers import wait_until


class TwoPaths(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        return self.head(torch.flatten(self.left(x) * torch.sigmoid(self.right(x)), 1))


@pytest.fixture(scope="module")
def tiny() -> tuple[SplitModel, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    return SplitModel(TwoPaths().eval(), x), x


@pytest.fixture(scope="module")
def own_cloud(tiny: tuple[SplitModel, torch.Tensor]) -> Iterator[str]:
    """The cloud app serving the user's model, on a real uvicorn server in this process."""
    split, _ = tiny
    port = free_port()
    app = create_app(ServerSettings(), service=CloudService({"tiny": split}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the in-process cloud started")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_an_own_model_splits_everywhere_and_runs_split(tiny: tuple[SplitModel, torch.Tensor],
                                                        own_cloud: str) -> None:
    split, x = tiny
    profile = profile_model("tiny", split=split, sample=x, clocks_ghz=(), repeats=2)
    assert profile.n_layers == split.n_layers
    with build_runtime(EdgeOptions("tiny", own_cloud, codecs=("raw", "float16")), split=split,
                       profile=profile, calibration_inputs=torch.randn(4, 3, 16, 16)) as edge:
        results = [edge.infer(x) for _ in range(3)]
        assert edge.check_cloud() is None
    expected = split(x)
    for result in results:
        assert result.measurement.finished == "cloud"
        assert torch.allclose(result.output, expected, atol=1e-2)
    meta = httpx.get(f"{own_cloud}/v2/models/tiny").json()
    assert len(meta["parameters"]["split_points"]) == split.n_layers + 1


def test_own_models_say_what_they_need(tiny: tuple[SplitModel, torch.Tensor]) -> None:
    split, x = tiny
    with pytest.raises(InvalidArgument, match="pass split= and sample="):
        profile_model("tiny")
    with pytest.raises(InvalidArgument, match="clock calibration needs a zoo model"):
        profile_model("tiny", split=split, sample=x)
    with pytest.raises(InvalidArgument, match="pass split= and profile="):
        build_runtime(EdgeOptions("tiny"), split=split)
    profile = profile_model("tiny", split=split, sample=x, clocks_ghz=(), repeats=1)
    with pytest.raises(InvalidArgument, match="lossy codecs need calibration_inputs"):
        build_runtime(EdgeOptions("tiny", codecs=("int8",)), split=split, profile=profile)
