"""Bytes on the wire per codec, relative to the raw float32 tensor, at every split point.

    python benchmarks/bench_codecs.py [--models alexnet,mnist_cnn,resnet18,vgg16]

For each model and split point, encodes what crosses the cut (the model's sample input) with every
codec and prints the encoded size over the raw size, and the encode plus decode time over raw's,
all measured in this one run. Lossy codecs also report whether the top-1 answer survived (on the
sample input; with synthetic weights that proves little: `edgesplit codecs` measures accuracy on
real held-out digits with the trained MNIST CNN). The
summary puts every codec beside the thesis's wire format (base64 of the float32 bytes in a JSON
body, encoded and decoded the same way), as bytes and time over base64 JSON's.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time

import torch

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.wire.codecs import Codec, all_codecs, decode_tensor, encode_tensor


def round_trip(tensors: tuple[torch.Tensor, ...],
               codec: Codec) -> tuple[int, float, list[torch.Tensor]]:
    began = time.perf_counter()
    encoded = [encode_tensor(t, codec) for t in tensors]
    decoded = [decode_tensor(e.payload, e.shape, e.datatype, e.parameters).to(t.dtype)
               for e, t in zip(encoded, tensors, strict=True)]
    return sum(len(e.payload) for e in encoded), time.perf_counter() - began, decoded


def base64_json_round_trip(tensors: tuple[torch.Tensor, ...]) -> tuple[int, float]:
    """The thesis's wire format: base64 of little-endian float32 in a JSON body, and back."""
    began = time.perf_counter()
    body = json.dumps({"tensor": base64.b64encode(b"".join(
        t.numpy().astype("<f4").tobytes() for t in tensors)).decode(), "splitting_point": 0,
        "model": "m"}).encode()
    raw = base64.b64decode(json.loads(body)["tensor"], validate=True)
    torch.frombuffer(bytearray(raw), dtype=torch.float32)
    return len(body), time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="alexnet,mnist_cnn,resnet18")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codecs = all_codecs()
    for name in args.models.split(","):
        x = zoo.sample_input(name)
        split = SplitModel(zoo.build_model(name), x)
        expected = int(split(x).argmax())
        print(f"\n### {name}: encoded size / raw size (top-1 changed: !)\n")
        print("| sp | layer | raw KiB | " + " | ".join(c.name for c in codecs) + " |")
        print("|---" * (len(codecs) + 3) + "|")
        ratios: dict[str, list[float]] = {c.name: [] for c in codecs}
        times: dict[str, list[float]] = {c.name: [] for c in codecs}
        json_sizes: list[float] = []
        json_times: list[float] = []
        for sp in split.split_points:
            sent = split.head(x, sp.split_point)
            raw = sp.offload_bytes
            size, seconds = base64_json_round_trip(sent)
            json_sizes.append(size / raw)
            json_times.append(seconds)
            cells = []
            for codec in codecs:
                size, seconds, decoded = round_trip(sent, codec)
                kept = int(split.tail(decoded, sp.split_point).argmax()) == expected
                ratios[codec.name].append(size / raw)
                times[codec.name].append(seconds)
                cells.append(f"{size / raw:.2f}{'' if kept else '!'}")
            print(f"| {sp.split_point} | {sp.layer} | {raw / 1024:.1f} | " + " | ".join(cells)
                  + " |")
        print(f"\n{name}, geometric mean over split points: " + ", ".join(
            f"{c}: size {statistics.geometric_mean(r):.2f}x, time "
            f"{statistics.median(t) / statistics.median(times['raw']):.1f}x raw's"
            for c, r, t in zip(ratios, ratios.values(), times.values(), strict=True)))
        base_size = statistics.geometric_mean(json_sizes)
        base_time = statistics.median(json_times)
        print(f"\n{name}, against base64 JSON (size {base_size:.2f}x raw), geometric mean of "
              "sizes, median of times:\n")
        print("| codec | bytes / base64 JSON's | encode+decode time / base64 JSON's |")
        print("|---|---|---|")
        for codec in codecs:
            size_ratio = statistics.geometric_mean(ratios[codec.name]) / base_size
            time_ratio = statistics.median(times[codec.name]) / base_time
            print(f"| {codec.name} | {size_ratio:.2f} | {time_ratio:.2f} |")


if __name__ == "__main__":
    main()
