"""A cloud serving a model repository (``cloud serve --model-repository``): several versions,
one added and one removed while it runs, broken files reported and never served, and requests
for another version of the model refused with 409."""

from __future__ import annotations

import io
import logging
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch import nn

from edgesplit.cloud.repository import ModelConfig, load_version
from edgesplit.edge.client import CloudClient
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.runtime import check_cloud
from edgesplit.errors import InvalidArgument
from edgesplit.measuring.profiler import profile_model
from edgesplit.models.sources import load_model
from edgesplit.testbed.processes import CloudProcess

from .helpers import wait_until

SAMPLE = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        self.head = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def save(root: Path, name: str, version: int, seed: int) -> torch.Tensor:
    """Export ``Small`` with weights from ``seed`` as ``name``'s ``version``; its answer."""
    torch.manual_seed(seed)
    net = Small().eval()
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    partial = folder / "incoming.pt2"  # written aside and renamed, as a deployment would
    torch.export.save(torch.export.export(net, (SAMPLE,)), partial)
    partial.rename(folder / "model.pt2")
    with torch.no_grad():
        answer: torch.Tensor = net(SAMPLE)
    return answer


def a_pickle_not_ours(good: Path, marker: Path) -> bytes:
    """``good``'s archive with its sample input replaced by a pickle that would create
    ``marker`` if it were ever unpickled."""

    class Planted:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    planted = io.BytesIO()
    torch.save({"x": Planted()}, planted)
    out = io.BytesIO()
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, planted.getvalue() if "sample_inputs" in item.filename
                            else data)
    return out.getvalue()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Path, CloudProcess, dict[str, torch.Tensor]]]:
    """A repository with two versions of ``small``, three broken versions and one with a
    planted pickle, served."""
    root = tmp_path_factory.mktemp("repository")
    answers = {"1": save(root, "small", 1, seed=1), "2": save(root, "small", 2, seed=2)}
    (root / "small" / "config.toml").write_text(
        "split_points = [0, 2]\n[batching]\nmax_batch = 2\ndynamic = false\n")
    good = root / "small" / "1" / "model.pt2"
    for name, content in (("truncated", good.read_bytes()[:300]), ("not_a_program", b"hello"),
                          ("planted", a_pickle_not_ours(good, root.parent / "unpickled")),
                          ("misconfigured", good.read_bytes())):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.pt2").write_bytes(content)
    (root / "misconfigured" / "config.toml").write_text("split_points = [0, 99]\n")
    with CloudProcess("--model-repository", str(root), "--repository-poll-s", "0.2",
                      models="mnist_cnn") as server:
        yield root, server, answers


def infer(server: CloudProcess, path: str, **parameters: object) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32",
                        "data": SAMPLE.reshape(-1).tolist()}], "parameters": parameters}
    return httpx.post(f"{server.url}{path}/infer", json=body, timeout=60)


def output(response: httpx.Response) -> torch.Tensor:
    assert response.status_code == 200, response.text
    return torch.tensor(response.json()["outputs"][0]["data"]).reshape(1, 3)


def states(server: CloudProcess) -> dict[tuple[str, str], dict[str, Any]]:
    rows = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
    return {(row["name"], row["version"]): row for row in rows}


def test_versions_serve_side_by_side_and_changes_are_picked_up_while_serving(
        repository: tuple[Path, CloudProcess, dict[str, torch.Tensor]]) -> None:
    root, server, answers = repository
    index = states(server)
    assert {key: row["state"] for key, row in index.items()} == {
        ("mnist_cnn", "1"): "READY", ("small", "1"): "READY", ("small", "2"): "READY",
        ("truncated", "1"): "UNAVAILABLE", ("not_a_program", "1"): "UNAVAILABLE",
        ("misconfigured", "1"): "UNAVAILABLE",
        ("planted", "1"): "READY"}  # its sample input is never read: the program has the shape
    for broken in ("truncated", "not_a_program", "misconfigured"):
        reason = index[(broken, "1")]["reason"]
        assert reason and "\n" not in reason, reason
        assert infer(server, f"/v2/models/{broken}").status_code == 404
    assert not (root.parent / "unpickled").exists()  # the planted pickle was never unpickled
    assert "99" in index[("misconfigured", "1")]["reason"]
    assert index[("small", "1")]["digest"] != index[("small", "2")]["digest"]

    for version, answer in answers.items():
        served = infer(server, f"/v2/models/small/versions/{version}")
        assert served.json()["model_version"] == version
        assert torch.allclose(output(served), answer, atol=1e-5)
    assert torch.allclose(output(infer(server, "/v2/models/small")), answers["2"], atol=1e-5)
    metadata = httpx.get(f"{server.url}/v2/models/small", timeout=30).json()
    assert metadata["versions"] == ["1", "2"]
    assert metadata["parameters"]["model_digest"] == index[("small", "2")]["digest"]
    # config.toml: split points 0 and 2 only, two rows a request
    assert [p["split_point"] for p in metadata["parameters"]["split_points"]] == [0, 2]
    assert "not allowed" in infer(server, "/v2/models/small", split_point=1).json()["error"]
    three = {"inputs": [{"name": "x", "shape": [3, 1, 8, 8], "datatype": "FP32",
                         "data": [0.0] * 192}]}
    too_many = httpx.post(f"{server.url}/v2/models/small/infer", json=three, timeout=60)
    assert too_many.status_code == 400 and "max 2 rows" in too_many.json()["error"], too_many.text

    late = save(root, "late", 1, seed=3)  # added while serving
    wait_until(lambda: states(server).get(("late", "1"), {}).get("state") == "READY",
               "the model added while serving was loaded")
    assert torch.allclose(output(infer(server, "/v2/models/late")), late, atol=1e-5)
    shutil.rmtree(root / "late")
    wait_until(lambda: ("late", "1") not in states(server), "the removed model was dropped")
    assert infer(server, "/v2/models/late").status_code == 404
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=30).json() == {"ready": True}


def test_another_version_of_the_model_gets_409(
        repository: tuple[Path, CloudProcess, dict[str, torch.Tensor]]) -> None:
    root, server, answers = repository
    # Version 1's digest as an edge takes it, in this process, from the same file.
    one = load_model(str(root / "small" / "1" / "model.pt2")).digest
    refused = infer(server, "/v2/models/small", model_digest=one)  # the latest is version 2
    assert refused.status_code == 409
    message = refused.json()["error"]
    assert "(version 2, sha256:" in message and "\n" not in message, message
    assert torch.allclose(output(infer(server, "/v2/models/small/versions/1", model_digest=one)),
                          answers["1"], atol=1e-5)
    assert infer(server, "/v2/models/small", model_digest=7).status_code == 400
    assert torch.allclose(output(infer(server, "/v2/models/small")), answers["2"], atol=1e-5)


def test_the_edge_accepts_a_cloud_running_only_some_split_points(
        repository: tuple[Path, CloudProcess, dict[str, torch.Tensor]]) -> None:
    root, server, _ = repository
    # small's config.toml lets the cloud run split points 0 and 2 of its five or more.
    points = load_model(str(root / "small" / "2" / "model.pt2")).split.n_layers + 1
    with CloudClient(server.url) as client:
        assert check_cloud(client, "small", points) is None
        with pytest.raises(InvalidArgument, match="has split point 2, this edge's only 0 to 1"):
            check_cloud(client, "small", 2)  # an edge's model with fewer split points


def test_a_version_without_model_pt2_names_what_it_holds(tmp_path: Path) -> None:
    version = tmp_path / "my_net" / "1"
    version.mkdir(parents=True)
    with pytest.raises(ValueError) as caught:
        load_version(version, ModelConfig())
    assert str(caught.value) == "no model.pt2 in my_net/1/"
    (version / "my_net.pt2").write_bytes(b"")  # named after the model, as --models takes it
    with pytest.raises(ValueError) as caught:
        load_version(version, ModelConfig())
    assert str(caught.value) == ("no model.pt2 in my_net/1/ (it holds my_net.pt2: a version's "
                                 "program file must be named model.pt2)")


def test_an_edge_of_the_older_version_offloads_to_it_while_the_cloud_serves_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A rolling upgrade: the cloud's latest is version 2, this edge has version 1's weights.
    Its first offload is refused (409) and finishes on the edge; the edge finds version 1 in
    the cloud's metadata and offloads there until it is removed (404 on its route), then
    finishes on the edge again, saying so once."""
    answers = {"1": save(tmp_path, "small", 1, seed=1), "2": save(tmp_path, "small", 2, seed=2)}
    older = load_model(str(tmp_path / "small" / "1" / "model.pt2"))
    profile = profile_model("small", split=older.split, sample=SAMPLE, clocks_ghz=(), repeats=1)
    with CloudProcess("--model-repository", str(tmp_path), "--repository-poll-s", "0.2",
                      models="mnist_cnn") as server, \
            build_runtime(EdgeOptions("small", server.url), split=older.split,
                          profile=profile) as edge, caplog.at_level(logging.WARNING):

        def run() -> str:
            result = edge.infer(SAMPLE, split_point=0)
            assert torch.allclose(result.output, answers["1"], atol=1e-5)  # never version 2's
            return result.measurement.finished

        def pinned() -> tuple[str | None, str | None]:
            return edge.cloud_version, edge.cloud_down_reason

        assert [run(), run(), run()] == ["edge", "cloud", "cloud"]
        assert pinned() == ("1", None)
        shutil.rmtree(tmp_path / "small" / "1")
        wait_until(lambda: ("small", "1") not in states(server), "version 1 was dropped")
        assert [run(), run()] == ["edge", "edge"]
        assert pinned() == (None, None)
    said = [r.getMessage() for r in caplog.records if r.name == "edgesplit.edge.runtime"]
    assert sum("offloading to its version 1" in m for m in said) == 1, said
    assert sum("another version of small" in m for m in said) == 1, said
