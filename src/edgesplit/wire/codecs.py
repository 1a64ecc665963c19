"""Tensors on the wire: codecs, encoding and decoding. Pure functions; never pickle.

A *codec* names how an offloaded float tensor travels: a precision (``raw`` float32, ``float16``,
or ``int8`` with a scale and zero point carried beside it), optionally followed by a compression
of the bytes (``+lz4`` or ``+zstd``): ``raw``, ``float16+zstd``, ``int8+lz4``, ...

Bytes are little-endian and row-major, as the Open Inference Protocol's binary extension says. The
tensor's OIP datatype says what the (decompressed) bytes are: ``FP32``, ``FP16``, ``BF16``,
``INT8``, ... Parameters beside it say the rest: ``compression`` and, for a quantised tensor,
``quant_scale`` and ``quant_zero_point`` (and ``quant_nonfinite`` where it holds NaN or
infinities, which every codec carries exactly: a masked attention's -inf is an activation).
Decoding checks everything against the declared shape before it allocates, so any byte string
gives either the tensor or a ``WireFormatError``.

>>> import torch
>>> t = torch.rand(1, 64, 6, 6)
>>> enc = encode_tensor(t, parse_codec("float16+zstd"), "x")
>>> back = decode_tensor(enc.payload, enc.shape, enc.datatype, enc.parameters)
>>> bool(torch.allclose(back, t, atol=1e-3))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lz4.block
import numpy as np
import torch
import zstandard

from edgesplit.errors import WireFormatError

# OIP datatype -> little-endian numpy dtype (the wire) and torch dtype (in memory). numpy has no
# bfloat16: its bytes travel as 16-bit integers and are viewed as bfloat16 again on arrival.
DATATYPES: dict[str, tuple[str, torch.dtype]] = {
    "FP32": ("<f4", torch.float32),
    "FP16": ("<f2", torch.float16),
    "BF16": ("<i2", torch.bfloat16),
    "FP64": ("<f8", torch.float64),
    "INT8": ("i1", torch.int8),
    "UINT8": ("u1", torch.uint8),
    "INT16": ("<i2", torch.int16),
    "INT32": ("<i4", torch.int32),
    "INT64": ("<i8", torch.int64),
    "BOOL": ("?", torch.bool),
}
TORCH_TO_DATATYPE = {torch_dtype: name for name, (_, torch_dtype) in DATATYPES.items()}
# What numpy holds a dtype's bytes as, where it has no such dtype itself.
_NUMPY_STAND_INS = {torch.bfloat16: torch.int16}


def can_travel(dtype: torch.dtype) -> bool:
    """Whether tensors of ``dtype`` have an OIP datatype (complex and quantised ones do not)."""
    return dtype in TORCH_TO_DATATYPE
ZSTD_LEVEL = 3  # fast enough on a Pi-class edge, most of zstd's gain on activations


@dataclass(frozen=True)
class Codec:
    """How a float tensor is encoded: a precision and an optional byte compression."""

    precision: str = "raw"
    compression: str | None = None

    @property
    def name(self) -> str:
        return self.precision + (f"+{self.compression}" if self.compression else "")

    @property
    def lossy(self) -> bool:
        return PRECISIONS[self.precision].lossy

    @property
    def size_prior(self) -> float:
        """The encoded size over the raw float32 size, assumed before anything was sent."""
        ratio = PRECISIONS[self.precision].size_prior
        return ratio * (COMPRESSIONS[self.compression].size_prior if self.compression else 1.0)

    def __str__(self) -> str:
        return self.name


RAW = Codec()


def parse_codec(name: str) -> Codec:
    """``"int8+zstd"`` to a ``Codec``; anything else raises with the valid forms."""
    precision, _, compression = name.partition("+")
    if precision not in PRECISIONS or (compression and compression not in COMPRESSIONS):
        raise WireFormatError(
            f"unknown codec {name!r}: expected one of {', '.join(PRECISIONS)}, optionally "
            f"followed by +{' or +'.join(COMPRESSIONS)} (e.g. 'float16+zstd')"
        )
    return Codec(precision, compression or None)


def all_codecs() -> list[Codec]:
    return [Codec(p, c) for p in PRECISIONS for c in (None, *COMPRESSIONS)]


@dataclass(frozen=True)
class EncodedTensor:
    """One tensor ready for the wire: OIP name, shape and datatype, parameters and bytes."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    payload: bytes
    parameters: dict[str, Any] = field(default_factory=dict)


def encode_tensor(tensor: torch.Tensor, codec: Codec = RAW, name: str = "input") -> EncodedTensor:
    """Encode ``tensor`` with ``codec`` (lossy precisions apply to floating tensors only)."""
    tensor = tensor.detach().contiguous()
    parameters: dict[str, Any] = {}
    if tensor.is_floating_point():
        tensor, parameters = PRECISIONS[codec.precision].encode(tensor)
    datatype = TORCH_TO_DATATYPE.get(tensor.dtype)
    if datatype is None:
        raise WireFormatError(f"tensors of dtype {tensor.dtype} cannot be sent: the Open "
                              "Inference Protocol has no datatype for them")
    stand_in = _NUMPY_STAND_INS.get(tensor.dtype)
    array = (tensor.view(stand_in) if stand_in else tensor).cpu().numpy()
    raw = array.astype(DATATYPES[datatype][0], copy=False).tobytes()
    payload = compress(raw, codec.compression)
    if codec.compression:
        parameters["compression"] = codec.compression
    return EncodedTensor(name, tuple(tensor.shape), datatype, payload, parameters)


def decode_tensor(payload: bytes, shape: tuple[int, ...] | list[int], datatype: str,
                  parameters: Mapping[str, Any] | None = None, *,
                  max_elements: int = 1 << 28) -> torch.Tensor:
    """The tensor ``encode_tensor`` made; a quantised tensor comes back as float32.

    Raises ``WireFormatError`` for an unknown datatype or compression, a shape that is negative or
    larger than ``max_elements``, a payload of the wrong size, or bad quantisation parameters.
    """
    parameters = parameters or {}
    count = element_count(shape, max_elements)
    if datatype not in DATATYPES:
        raise WireFormatError(
            f"unknown datatype {datatype!r}: expected one of {', '.join(DATATYPES)}"
        )
    wire_dtype, _ = DATATYPES[datatype]
    expected = count * np.dtype(wire_dtype).itemsize
    raw = decompress(payload, parameters.get("compression"), expected)
    if len(raw) != expected:
        raise WireFormatError(
            f"tensor of shape {list(shape)} and datatype {datatype} needs {expected} bytes, "
            f"got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=wire_dtype).reshape(tuple(shape))
    tensor = from_wire(array.astype(array.dtype.newbyteorder("="), copy=True), datatype)
    if {"quant_scale", "quant_zero_point", "quant_nonfinite"} & set(parameters):
        if datatype != "INT8":
            raise WireFormatError("quantisation parameters come only with INT8 data")
        tensor = dequantise_int8(tensor, parameters.get("quant_scale"),
                                 parameters.get("quant_zero_point"),
                                 parameters.get("quant_nonfinite", False))
    return tensor


def from_wire(array: np.ndarray[Any, Any], datatype: str) -> torch.Tensor:
    """A tensor of ``datatype`` from the native-order array its bytes were read into."""
    tensor = torch.from_numpy(array)
    dtype = DATATYPES[datatype][1]
    return tensor.view(dtype) if dtype in _NUMPY_STAND_INS else tensor


def element_count(shape: tuple[int, ...] | list[int], max_elements: int) -> int:
    """Elements in ``shape``, refusing negative dimensions and more than ``max_elements``."""
    if not isinstance(shape, tuple | list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise WireFormatError(f"shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise WireFormatError(f"shape {list(shape)} has a negative dimension")
    # Every dimension, not only the product: [2**64, 0] has no elements but no array has it.
    if any(d > max_elements for d in shape):
        raise WireFormatError(
            f"shape {_short(shape)} has a dimension over the {max_elements} elements allowed")
    count = math.prod(shape)
    if count > max_elements:
        raise WireFormatError(
            f"shape {_short(shape)} has {count} elements, more than the {max_elements} allowed"
        )
    return count


def _short(shape: tuple[int, ...] | list[int]) -> str:
    """A shape for a message, each dimension cut to 24 digits."""
    return "[" + ", ".join(str(d) if abs(d) < 10**24 else f"{str(d)[:21]}..." for d in shape) + "]"


def compress(data: bytes, compression: str | None) -> bytes:
    if compression is None:
        return data
    return _compression(compression).compress(data)


def decompress(data: bytes, compression: str | None, expected: int) -> bytes:
    """Decompress to exactly ``expected`` bytes, never allocating much more than that."""
    if compression is None:
        return data
    method = _compression(compression)
    try:
        return method.decompress(data, expected)
    except WireFormatError:
        raise
    except Exception as exc:  # lz4 and zstd raise their own types for corrupt input
        raise WireFormatError(f"{compression} data is corrupt: {exc}") from exc


def _compression(name: object) -> Compression:
    if not isinstance(name, str) or name not in COMPRESSIONS:
        raise WireFormatError(f"unknown compression {str(name)[:40]!r}: expected "
                              f"{' or '.join(COMPRESSIONS)}")
    return COMPRESSIONS[name]


def _lz4_decompress(data: bytes, expected: int) -> bytes:
    out: bytes = lz4.block.decompress(data, uncompressed_size=expected)
    return out


def _zstd_decompress(data: bytes, expected: int) -> bytes:
    declared = zstandard.frame_content_size(data)
    if declared not in (-1, expected):
        raise WireFormatError(f"zstd frame declares {declared} bytes, the tensor needs {expected}")
    # One frame, no more than the tensor's bytes (0 would mean no limit), and nothing after it:
    # trailing data is refused, not ignored.
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=max(expected, 1),
                                                   allow_extra_data=False)


def _lz4_compress(data: bytes) -> bytes:
    out: bytes = lz4.block.compress(data, store_size=False)
    return out


def _zstd_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


# With ``quant_nonfinite``, the lowest int8 codes stand for what no scale can carry, and the
# finite values take the 253 codes above them.
_NAN_CODE, _NEG_INF_CODE, _POS_INF_CODE = -128, -127, -126
_SPECIAL_VALUES = {_NAN_CODE: math.nan, _NEG_INF_CODE: -math.inf, _POS_INF_CODE: math.inf}


def quantise_int8(tensor: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """Affine per-tensor int8: ``x ~ (q - zero_point) * scale`` over the tensor's range.

    Where the tensor holds NaN or infinities, the finite values are quantised over their own
    range into codes -125..127 and the non-finite ones take the codes below (``_SPECIAL_VALUES``).
    """
    finite = torch.isfinite(tensor)
    special = not bool(finite.all())
    values = tensor[finite] if special else tensor
    low = min(float(values.min()), 0.0) if values.numel() else 0.0
    high = max(float(values.max()), 0.0) if values.numel() else 0.0
    bottom = _POS_INF_CODE + 1 if special else -128
    scale = (high - low) / (127 - bottom) or 1.0
    if not math.isfinite(scale):  # finite values spanning more than float32's range
        scale = float(torch.finfo(torch.float32).max)
    zero_point = max(-128, min(127, round(bottom - low / scale)))
    q = torch.clamp(torch.round(torch.where(finite, tensor, 0.0) / scale) + zero_point,
                    bottom, 127).to(torch.int8)
    if special:
        q[torch.isnan(tensor)] = _NAN_CODE
        q[tensor == -math.inf] = _NEG_INF_CODE
        q[tensor == math.inf] = _POS_INF_CODE
    return q, scale, zero_point


def _positive_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) and number > 0 else None


def _to_int8(tensor: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    q, scale, zero_point = quantise_int8(tensor)
    nonfinite = {} if bool(torch.isfinite(tensor).all()) else {"quant_nonfinite": True}
    return q, {"quant_scale": scale, "quant_zero_point": zero_point} | nonfinite


def dequantise_int8(q: torch.Tensor, scale: object, zero_point: object,
                    nonfinite: object = False) -> torch.Tensor:
    value = _positive_float(scale)
    if value is None:
        raise WireFormatError(f"quant_scale must be a positive number, got {str(scale)[:40]}")
    if not isinstance(zero_point, int) or isinstance(zero_point, bool) or not (
            -128 <= zero_point <= 127):
        raise WireFormatError(f"quant_zero_point must be an integer in -128..127, got "
                              f"{str(zero_point)[:40]}")
    if not isinstance(nonfinite, bool):
        raise WireFormatError(f"quant_nonfinite must be true or false, got {str(nonfinite)[:40]}")
    out = (q.to(torch.float32) - zero_point) * value
    if nonfinite:
        for code, special in _SPECIAL_VALUES.items():
            out[q == code] = special
    return out


@dataclass(frozen=True)
class Precision:
    """How floats travel: ``encode`` gives the tensor to send and its OIP parameters."""

    size_prior: float  # the encoded size over float32's, assumed before anything was sent
    lossy: bool
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, Any]]]


@dataclass(frozen=True)
class Compression:
    """A byte compression: ``decompress(data, expected)`` gives at most ``expected`` bytes."""

    size_prior: float  # compressed size over the uncompressed, before anything was sent
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]


# The codecs: every precision, alone or followed by one compression. Adding one is one entry
# here (the planner's priors, the CLI's choices and the edge's options read these tables).
PRECISIONS: dict[str, Precision] = {
    "raw": Precision(1.0, False, lambda t: (t, {})),
    "float16": Precision(0.5, True, lambda t: (t.to(torch.float16), {})),
    "int8": Precision(0.25, True, _to_int8),
}
COMPRESSIONS: dict[str, Compression] = {
    "lz4": Compression(0.8, _lz4_compress, _lz4_decompress),
    "zstd": Compression(0.65, _zstd_compress, _zstd_decompress),
}
