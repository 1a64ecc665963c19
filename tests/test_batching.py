"""Dynamic batching and load reporting in the built-in cloud: a real server, real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.rescheduling import ReschedulePolicy
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.sensors import FixedClock
from edgesplit.testbed.processes import CloudProcess
from edgesplit.wire.codecs import encode_tensor, parse_codec
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

from .helpers import SetLink

SplitFactory = Callable[[str], SplitModel]
FULL = "4"  # a batch runs when it holds this many rows; the wait below never ends one first


@pytest.fixture(scope="module")
def batching_cloud() -> Iterator[CloudProcess]:
    with CloudProcess("--max-batch-size", FULL, "--batch-wait-ms", "600000",
                      models="mnist_cnn,alexnet") as server:
        yield server


def body(tensor: torch.Tensor, split_point: int,
         codec: str = "raw") -> tuple[bytes, dict[str, str]]:
    return encode_request([encode_tensor(tensor, parse_codec(codec), "x")],
                          {"split_point": split_point})


async def post_all(url: str, model: str,
                   bodies: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(client.post(f"/v2/models/{model}/infer", content=content,
                                                  headers=headers)
                                      for content, headers in bodies))


def answer(response: httpx.Response) -> tuple[dict[str, Any], torch.Tensor]:
    assert response.status_code == 200, response.text
    header, outputs = parse_response(response.content, response.headers.get(HEADER_LENGTH))
    return header["parameters"], outputs[0]


def cuts(split: SplitModel, model: str, split_point: int, n: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(split_point)
    x = zoo.sample_input(model)
    return [split.head(x + 0.5 * torch.randn(x.shape, generator=generator), split_point)[0]
            for _ in range(n)]


@pytest.mark.parametrize(("model", "split_point"), [("alexnet", 14), ("mnist_cnn", 5)])
def test_batched_results_equal_unbatched_ones(batching_cloud: CloudProcess,
                                              split_model: SplitFactory, model: str,
                                              split_point: int) -> None:
    split = split_model(model)
    tensors = cuts(split, model, split_point, int(FULL))
    responses = asyncio.run(post_all(batching_cloud.url, model,
                                     [body(t, split_point) for t in tensors]))
    for tensor, response in zip(tensors, responses, strict=True):
        parameters, output = answer(response)
        assert parameters["batch_size"] == int(FULL)
        alone = split.tail([tensor], split_point)
        torch.testing.assert_close(output, alone, rtol=1e-4, atol=1e-5)
        assert int(output.argmax()) == int(alone.argmax())
        assert len(parameters["layer_times_s"]) == split.n_layers - split_point
        assert parameters["queue_s"] >= 0 and parameters["compute_s"] <= parameters["cloud_s"]


def test_rows_add_up_and_codecs_decode_before_batching(batching_cloud: CloudProcess,
                                                       split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    one, two, three = cuts(split, "mnist_cnn", 5, 3)
    pair = torch.cat([two, three])  # one request with a batch of two rows
    responses = asyncio.run(post_all(batching_cloud.url, "mnist_cnn", [
        body(one, 5), body(pair, 5), body(one, 5, "float16+zstd")]))
    outputs = [answer(r)[1] for r in responses]
    assert [answer(r)[0]["batch_size"] for r in responses] == [3, 3, 3]
    assert outputs[1].shape[0] == 2
    torch.testing.assert_close(outputs[1], split.tail([pair], 5), rtol=1e-4, atol=1e-5)
    assert int(outputs[2].argmax()) == int(outputs[0].argmax())


def test_a_bad_request_never_fails_its_batch_mates(batching_cloud: CloudProcess,
                                                   split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    good = cuts(split, "mnist_cnn", 5, int(FULL))
    nan = good[0].clone()
    nan[0, 0, 0, 0] = float("nan")
    wrong_shape = torch.zeros(1, 3, 3, 3)
    bodies = [body(good[0], 5), body(nan, 5), body(good[1], 5), body(wrong_shape, 5),
              body(good[2], 5), body(good[3], 5)]
    responses = asyncio.run(post_all(batching_cloud.url, "mnist_cnn", bodies))
    assert [r.status_code for r in responses] == [200, 400, 200, 400, 200, 200]
    assert "NaN" in responses[1].json()["error"]
    for tensor, response in zip(good, [responses[i] for i in (0, 2, 4, 5)], strict=True):
        parameters, output = answer(response)
        assert parameters["batch_size"] == int(FULL)
        torch.testing.assert_close(output, split.tail([tensor], 5), rtol=1e-4, atol=1e-5)


def test_a_request_whose_rows_overflow_fails_alone(batching_cloud: CloudProcess,
                                                  split_model: SplitFactory) -> None:
    """Finite rows that overflow the tail (3e38) join a batch; that request alone gets 422."""
    split = split_model("mnist_cnn")
    good = cuts(split, "mnist_cnn", 5, 3)
    bodies = [body(good[0], 5), body(torch.full_like(good[0], 3e38), 5), body(good[1], 5),
              body(good[2], 5)]
    responses = asyncio.run(post_all(batching_cloud.url, "mnist_cnn", bodies))
    assert [r.status_code for r in responses] == [200, 422, 200, 200]
    assert "holds" in responses[1].json()["error"]
    for tensor, response in zip(good, [responses[i] for i in (0, 2, 3)], strict=True):
        parameters, output = answer(response)
        assert parameters["batch_size"] == int(FULL)
        torch.testing.assert_close(output, split.tail([tensor], 5), rtol=1e-4, atol=1e-5)


def test_by_default_batches_form_only_while_work_queues(cloud: CloudProcess,
                                                        split_model: SplitFactory) -> None:
    """The default server batches adaptively: a lone request runs at once and alone, requests
    that queue behind busy workers run together, and each answer equals the request's own."""
    split = split_model("alexnet")
    tensors = cuts(split, "alexnet", 14, 16)
    for tensor in tensors[:3]:
        parameters, _ = answer(httpx.post(f"{cloud.url}/v2/models/alexnet/infer",
                                          content=body(tensor, 14)[0],
                                          headers=body(tensor, 14)[1], timeout=60))
        assert parameters["batch_size"] == 1
    responses = asyncio.run(post_all(cloud.url, "alexnet", [body(t, 14) for t in tensors]))
    sizes = []
    for tensor, response in zip(tensors, responses, strict=True):
        parameters, output = answer(response)
        sizes.append(parameters["batch_size"])
        torch.testing.assert_close(output, split.tail([tensor], 14), rtol=1e-4, atol=1e-5)
    assert max(sizes) > 1, sizes


def test_every_answer_and_the_status_endpoint_report_the_load(cloud: CloudProcess,
                                                             split_model: SplitFactory) -> None:
    split = split_model("alexnet")
    (tensor,) = cuts(split, "alexnet", 14, 1)
    parameters, _ = answer(httpx.post(f"{cloud.url}/v2/models/alexnet/infer",
                                      content=body(tensor, 14)[0], headers=body(tensor, 14)[1],
                                      timeout=60))
    assert parameters["queue_length"] >= 1  # itself, at least, while it ran
    assert parameters["recent_tail_s"] > 0
    assert parameters["expected_wait_s"] >= 0
    status = httpx.get(f"{cloud.url}/edgesplit/load", timeout=10).json()
    assert status["slots"] >= 1 and status["queue_length"] >= 0
    (entry,) = [t for t in status["tails"] if (t["model"], t["split_point"]) == ("alexnet", 14)]
    assert entry["tail_s"] > 0 and entry["queued"] >= 0


def test_the_load_endpoint_needs_the_credential() -> None:
    with CloudProcess("--token", "s3cret", models="mnist_cnn") as server:
        assert httpx.get(f"{server.url}/edgesplit/load").status_code == 401
        ok = httpx.get(f"{server.url}/edgesplit/load",
                       headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["tails"] == []


@pytest.mark.parametrize("load_aware", [True, False])
def test_the_edge_plans_with_the_wait_the_cloud_reports(
        cloud: CloudProcess, split_model: SplitFactory, alexnet_profile: Profile,
        load_aware: bool) -> None:
    options = EdgeOptions("alexnet", cloud.url, objective=Objective("latency"),
                          reschedule=ReschedulePolicy(interval_s=3600), load_aware=load_aware)
    edge = build_runtime(options, split=split_model("alexnet"), profile=alexnet_profile,
                         link=SetLink(bandwidth_kbps=1_000_000, rtt_ms=1), clock=FixedClock(2.0))
    x = zoo.sample_input("alexnet")
    with edge:
        idle = edge.infer(x).measurement
        assert 0 <= edge.cloud_wait_s < 5  # what the idle cloud's answer said
        edge.cloud_wait_s = 5.0  # as a cloud's answer says when thousands of edges queue there
        busy = edge.infer(x).measurement
        after = edge.infer(x).measurement  # the answer to `busy` said the cloud is idle again
    assert idle.replan == "first" and idle.split_point < 19
    if load_aware:
        assert busy.replan == "cloud load" and busy.split_point == 19
        assert after.replan == "cloud load" and after.split_point < 19  # back to the cloud
    else:
        assert busy.replan == after.replan == ""  # the wait is not among its conditions
        assert busy.split_point == after.split_point == idle.split_point
