"""How much each codec costs in accuracy, measured on real inputs with known labels.

A lossy codec (float16, int8) changes what crosses the cut a little; whether that changes the
answers can only be told on a trained model and inputs it was not trained on. The zoo's MNIST CNN
is trained, and the package ships digits held out of its training (``zoo.mnist_test_set``):
``codec_accuracy`` encodes what crosses each cut for each input on its own (as the edge sends one
inference at a time, so int8's scale is per input), decodes it, runs the rest of the network and
counts right answers, beside the bytes each codec put on the wire.

>>> rows = codec_accuracy(split_points=[4], codecs=["raw", "int8+zstd"])
>>> [(r.codec, r.accuracy > 0.95) for r in rows]
[('raw', True), ('int8+zstd', True)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.wire.codecs import all_codecs, decode_tensor, encode_tensor, parse_codec


@dataclass(frozen=True)
class CodecAccuracy:
    """One codec at one split point, over the whole test set."""

    split_point: int
    layer: str
    codec: str
    raw_bytes: int  # what crosses the cut for one input, as float32
    bytes_per_input: float  # the codec's payload for one input, on average
    accuracy: float  # top-1 right, against the labels
    agrees_with_raw: float  # top-1 the same as with raw tensors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def codec_accuracy(model: str = "mnist_cnn", *, codecs: Sequence[str] | None = None,
                   split_points: Sequence[int] | None = None) -> list[CodecAccuracy]:
    """Every codec (default: all) at every split point that sends something (default: 0 to
    N-1) of a trained zoo model, on its held-out test set; raw's row first at each split."""
    inputs, labels = zoo.test_set(model)
    split = SplitModel(zoo.build_model(model), inputs[:1], take=True)
    names = ["raw", *(c for c in (codecs or [c.name for c in all_codecs()]) if c != "raw")]
    rows: list[CodecAccuracy] = []
    with torch.inference_mode():
        for sp in split_points if split_points is not None else range(split.n_layers):
            sent = split.head(inputs, sp)
            raw_answers = None
            for name in names:
                answers, nbytes = _answers(split, sent, sp, name)
                raw_answers = answers if raw_answers is None else raw_answers
                rows.append(CodecAccuracy(
                    sp, split.layers[sp - 1].name if sp else "input", name,
                    sum(t[:1].numel() * 4 for t in sent), nbytes / len(labels),
                    float((answers == labels).float().mean()),
                    float((answers == raw_answers).float().mean())))
    return rows


def _answers(split: SplitModel, sent: Sequence[torch.Tensor], split_point: int,
             codec: str) -> tuple[torch.Tensor, int]:
    """The top-1 answers with ``sent`` encoded input by input, and the bytes that took."""
    parsed = parse_codec(codec)
    received: list[list[torch.Tensor]] = [[] for _ in sent]
    nbytes = 0
    for i in range(sent[0].shape[0]):
        for tensor, out in zip(sent, received, strict=True):
            encoded = encode_tensor(tensor[i:i + 1], parsed)
            nbytes += len(encoded.payload)
            out.append(decode_tensor(encoded.payload, encoded.shape, encoded.datatype,
                                     encoded.parameters).to(tensor.dtype))
    output = split.tail([torch.cat(parts) for parts in received], split_point)
    first = output if isinstance(output, torch.Tensor) else split.output_tensors(output)[0]
    return first.reshape(first.shape[0], -1).argmax(1), nbytes
