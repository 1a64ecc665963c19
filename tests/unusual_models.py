"""Models the project had never seen, for the end-to-end tests of splitting (not the product zoo).

Each kind stresses one thing a split must get right: inverted residuals and depthwise convs,
parallel branches, skip connections across the network, squeeze-and-excitation (shape queries),
attention, an LSTM with a zero state sized by the batch, positional embeddings with ``arange``,
several outputs, buffers and a parameter used in two places, an early ``x.size(0)``, views with
in-place operations, an optional forward argument and a tensor without a batch dimension; and
issue 19's: counts and rows taken from the data (masks, ``nonzero``), outputs without a batch
dimension, -inf from masked attention, bfloat16, complex and quint8 tensors, a NamedTuple.
``build(name)`` gives the module (deterministic weights, eval mode) and ``sample(name)`` one input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project, residual when shapes match."""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False),
                                    nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True))
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True))
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.depthwise(self.expand(x)))


class MobileNetV2Like(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(8), nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(InvertedResidual(8), InvertedResidual(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class InceptionLike(nn.Module):
    """Four parallel branches concatenated on the channels, twice."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(3, 4, 1)
        self.b3 = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.b5 = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Conv2d(2, 4, 5, padding=2))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(3, 4, 1))
        self.mix = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)
        y = F.relu(self.mix(F.relu(y)))
        return self.fc(y.mean(dim=(2, 3)))


class UNetLike(nn.Module):
    """Encoder, bottleneck, decoder; each decoder level concatenates its encoder's output."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.bottom = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(32, 8, 3, padding=1), nn.ReLU())
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec1 = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        return self.dec1(torch.cat([self.up1(d2), e1], dim=1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // 2)
        self.fc2 = nn.Linear(channels // 2, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.size(0), x.size(1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * s.view(b, c, 1, 1)


class SENet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.se1 = SqueezeExcite(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.se2 = SqueezeExcite(8)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se1(F.relu(self.conv1(x)))
        y = self.se2(F.relu(self.conv2(y)))
        return self.fc(y.reshape(y.size(0), -1))


class HandAttention(nn.Module):
    """Scaled dot-product attention written out, shapes taken from the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.scale = dim ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        return self.out(weights @ v)


class AttentionNet(nn.Module):
    """A token mixer: MultiheadAttention, then hand-written attention, then a mean-pool head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.hand = HandAttention(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        attended, _ = self.mha(h, h, h, need_weights=False)
        h = self.norm(h + attended)
        h = h + self.hand(h)
        return self.head(h.mean(dim=1))


class LSTMNet(nn.Module):
    """An LSTM over a sequence with a zero initial state sized by the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(5, 12)
        self.lstm = nn.LSTM(12, 12, batch_first=True)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(1, x.size(0), 12)
        c0 = torch.zeros(1, x.size(0), 12)
        out, (hn, _) = self.lstm(torch.tanh(self.proj(x)), (h0, c0))
        return self.head(out[:, -1] + hn[0])


class PositionalNet(nn.Module):
    """Token ids plus learned positions ``pos(arange(length))``: the positions are no data."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(50, 16)
        self.pos = nn.Embedding(32, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 7)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tokens(ids) + self.pos(torch.arange(ids.size(1)))
        h = torch.relu(self.mix(h))
        return self.head(h + self.pos(torch.arange(ids.size(1))))


class TwoOutputs(nn.Module):
    """Class scores and an embedding, as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.embed = nn.Linear(6 * 8 * 8, 12)
        self.classify = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(torch.flatten(F.relu(self.conv(x)), 1))
        return self.classify(torch.relu(features)), F.normalize(features, dim=1)


class DictOutputs(nn.Module):
    """Named outputs of two dtypes: float scores and the int64 top class."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.fc2(torch.relu(self.fc1(x)))
        return {"scores": scores, "label": scores.argmax(dim=1)}


class Buffers(nn.Module):
    """BatchNorm statistics, a registered buffer and a parameter used far apart."""

    centre: torch.Tensor  # a buffer: registered, so torch's types do not know it

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("centre", torch.linspace(-1, 1, 8).view(1, 8, 1, 1))
        self.gate = nn.Parameter(torch.linspace(0.5, 1.5, 8).view(1, 8, 1, 1))
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x))) * self.gate - self.centre
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.conv3(y) * self.gate + self.centre
        return self.fc(y.mean(dim=(2, 3)))


class EarlySize(nn.Module):
    """Takes the batch size before three convolutions and uses it at the end (item 15)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        y = self.c3(F.relu(self.c2(F.relu(self.c1(x)))))
        return torch.sigmoid(y).reshape(b, -1)


class LateSize(EarlySize):
    """``EarlySize``'s twin that takes the size at the reshape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c3(F.relu(self.c2(F.relu(self.c1(x)))))
        return torch.sigmoid(y).reshape(y.size(0), -1)


class ViewInPlace(nn.Module):
    """Item 14: an in-place op on a view changes its base after another layer read it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        v = a.narrow(1, 0, 4)
        w = torch.sigmoid(a)
        v.relu_()
        return a + w


class OptionalMask(nn.Module):
    """``forward(x, mask=None)``: the mask is optional and left out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if mask is not None:
            h = h * mask
        return self.fc2(h)


class BatchStatistics(nn.Module):
    """Scales by a per-feature maximum over the batch: data without a batch dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc3 = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        peak = h.abs().amax(dim=0) + 1.0
        h = torch.relu(self.fc2(h))
        return self.fc3(h / peak)


class CountNormalised(nn.Module):
    """Issue 19 item 15: a mean over the rows a data-dependent mask picks, divided by their
    count (which differs from the sample's at any other input)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed(x))
        flat = h.flatten(0, 1)
        picked = flat[flat[:, 0] > 0]
        mean = picked.sum(0) / picked.size(0)
        return self.head(h.mean(dim=1) + mean)


class CountByNonzero(nn.Module):
    """Item 15's variant: the count from ``nonzero`` and the values from ``masked_select``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        where = torch.nonzero(h > 0)
        positive = torch.masked_select(h, h > 0)
        scale = positive.sum() / where.shape[0]
        return self.head(torch.tanh(h) * scale)


class Routed(nn.Module):
    """Item 17: the tokens a gate picks go through an expert (``e0(h[mask])``) and are
    scattered back, so the expert's rows are a count taken from the data."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 16)
        self.gate = nn.Linear(16, 1)
        self.e0 = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        mask = self.gate(h).squeeze(-1) > 0
        routed = self.e0(h[mask])
        h = h + torch.zeros_like(h).masked_scatter(mask.unsqueeze(-1), routed)
        return self.head(h.mean(dim=1))


class RoutedByIndex(nn.Module):
    """Item 17's variant: the rows are picked by ``nonzero`` indices and added back with
    ``index_add``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.expert = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.embed(x).flatten(0, 1)
        chosen = (flat[:, 0] > 0).nonzero().squeeze(1)
        flat = flat.index_add(0, chosen, torch.relu(self.expert(flat[chosen])))
        return self.head(flat.view(x.size(0), x.size(1), 8).amax(dim=1))


class Squeezed(nn.Module):
    """Item 16: ``.squeeze()`` on a classifier's output drops the batch dimension at batch 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3))).squeeze()


class Similarity(nn.Module):
    """Item 16's variant: CLIP-like B x B logits between two embeddings of the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(12, 8)
        self.text = nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.normalize(self.image(x), dim=-1)
        b = F.normalize(self.text(x.flip(-1)), dim=-1)
        return a @ b.t() * 10.0


class CausalAttention(nn.Module):
    """Item 18: nanoGPT's attention, ``masked_fill(bias[:, :, :T, :T] == 0, -inf)`` before the
    softmax, so -inf crosses the cut after the fill."""

    def __init__(self, dim: int = 16, heads: int = 2, block: int = 12) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias: torch.Tensor
        self.register_buffer("bias", torch.tril(torch.ones(block, block)).view(
            1, 1, block, block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.attn = CausalAttention()
        self.head = nn.Linear(16, 20)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return self.head(h + self.attn(h))


class PaddingMasked(nn.Module):
    """Item 18's variant: a key-padding mask from the data (tokens whose first feature is 0),
    filled with -inf; the attention weights leave the model beside the pooled answer."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 8)
        self.k = nn.Linear(4, 8)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.q(x) @ self.k(x).transpose(1, 2)
        padding = (x[:, :, 0] == 0).unsqueeze(1)
        scores = scores.masked_fill(padding, -math.inf)
        weights = torch.softmax(scores, dim=-1)
        return self.head((weights @ x).mean(dim=1)), weights.amax(dim=1)


def padded_tokens() -> torch.Tensor:
    x = torch.randn(1, 6, 4)
    x[:, 4:, 0] = 0.0  # two padding tokens
    return x


class Bfloat16Net(nn.Module):
    """Item 19: a bfloat16 middle (half the bytes of float32 at its cuts) and output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 32)
        self.fc2 = nn.Linear(32, 32).to(torch.bfloat16)
        self.fc3 = nn.Linear(32, 6).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x)).to(torch.bfloat16)
        return self.fc3(torch.relu(self.fc2(h)))


class ComplexSpectrum(nn.Module):
    """Item 19: a complex spectrum in the middle, which no OIP datatype carries."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 16)
        self.fc2 = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(self.fc1(x), dim=-1)
        return self.fc2(spectrum.abs())


class QuantisedMiddle(nn.Module):
    """Item 19: a quint8 tensor in the middle (quantised, then dequantised)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor(torch.relu(self.fc1(x)), 0.05, 0, torch.quint8)
        return self.fc2(q.dequantize())


class Prediction(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor


class NamedTupleOutput(nn.Module):
    """Item 21: a NamedTuple output is a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> Prediction:
        features = torch.relu(self.fc1(x))
        return Prediction(self.fc2(features), features)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor]]] = {
    "mobilenet_v2_like": (MobileNetV2Like, lambda: torch.randn(1, 3, 16, 16)),
    "inception_like": (InceptionLike, lambda: torch.randn(1, 3, 12, 12)),
    "unet_like": (UNetLike, lambda: torch.randn(1, 3, 16, 16)),
    "se_net": (SENet, lambda: torch.randn(1, 3, 16, 16)),
    "attention": (AttentionNet, lambda: torch.randn(1, 5, 6)),
    "lstm": (LSTMNet, lambda: torch.randn(1, 7, 5)),
    "positional": (PositionalNet, lambda: torch.randint(0, 50, (1, 9))),
    "two_outputs": (TwoOutputs, lambda: torch.randn(1, 3, 8, 8)),
    "dict_outputs": (DictOutputs, lambda: torch.randn(1, 10)),
    "buffers": (Buffers, lambda: torch.randn(1, 3, 8, 8)),
    "early_size": (EarlySize, lambda: torch.randn(1, 3, 8, 8)),
    "late_size": (LateSize, lambda: torch.randn(1, 3, 8, 8)),
    "view_in_place": (ViewInPlace, lambda: torch.randn(1, 3, 6, 6)),
    "optional_mask": (OptionalMask, lambda: torch.randn(1, 8)),
    "batch_statistics": (BatchStatistics, lambda: torch.randn(1, 6)),
    "count_normalised": (CountNormalised, lambda: torch.randn(1, 7, 6)),
    "count_by_nonzero": (CountByNonzero, lambda: torch.randn(1, 6, 5)),
    "routed": (Routed, lambda: torch.randn(1, 6, 5)),
    "routed_by_index": (RoutedByIndex, lambda: torch.randn(1, 5, 4)),
    "squeezed": (Squeezed, lambda: torch.randn(1, 3, 6, 6)),
    "similarity": (Similarity, lambda: torch.randn(1, 12)),
    "tiny_gpt": (TinyGPT, lambda: torch.randint(0, 20, (1, 10))),
    "padding_masked": (PaddingMasked, padded_tokens),
    "bfloat16": (Bfloat16Net, lambda: torch.randn(1, 10)),
    "complex_spectrum": (ComplexSpectrum, lambda: torch.randn(1, 16)),
    "quantised_middle": (QuantisedMiddle, lambda: torch.randn(1, 8)),
    "named_tuple": (NamedTupleOutput, lambda: torch.randn(1, 6)),
}


class ScatterRouter(nn.Module):
    """Item 21: ``out[mask] = ...``, which torch.fx cannot trace (a leaf module it is)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(8, 1)
        self.e0 = nn.Linear(8, 8)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mask = self.gate(h).squeeze(-1) > 0
        out = torch.zeros_like(h)
        out[mask] = self.e0(h[mask])
        return h + out


class ScatterRouted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.router = ScatterRouter()
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.router(self.embed(x)).mean(dim=1))


class PackedEncoder(nn.Module):
    """Item 21: an inline ``pack_padded_sequence`` with lengths from the data."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x[:, :, 0] != 0).sum(1)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        padded, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return padded


class PackedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.encoder = PackedEncoder()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.proj(x) * (x[:, :, :1] != 0)).amax(dim=1))


class SquareSide(nn.Module):
    """Item 21: ``int(math.sqrt(n))`` in ``forward`` itself (no submodule to keep whole)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        side = int(math.sqrt(h.size(1)))
        return self.conv(h.view(h.size(0), 1, side, side))


# What torch.fx cannot trace: the model, its sample, the source line the refusal must quote, and
# the submodule type that keeps it whole (None: the code is in forward itself).
UNTRACEABLE: dict[str, tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], str,
                             type[nn.Module] | None]] = {
    "scatter_routed": (ScatterRouted, lambda: torch.randn(1, 5, 4),
                       "`out[mask] = self.e0(h[mask])`", ScatterRouter),
    "packed": (PackedNet, padded_tokens, "`packed = pack_padded_sequence(", PackedEncoder),
    "square_side": (SquareSide, lambda: torch.randn(1, 16),
                    "`side = int(math.sqrt(h.size(1)))`", None),
}


def build(name: str) -> nn.Module:
    """The model with deterministic weights (BatchNorm statistics too), in eval mode."""
    torch.manual_seed(sum(map(ord, name)))
    model = (MODELS[name][0] if name in MODELS else UNTRACEABLE[name][0])()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def sample(name: str, batch: int = 1) -> torch.Tensor:
    """A deterministic input of ``batch`` samples."""
    torch.manual_seed(1000 + sum(map(ord, name)))
    make = MODELS[name][1] if name in MODELS else UNTRACEABLE[name][1]
    return torch.cat([make() for _ in range(batch)])
