"""Inputs for the edge: image files (resized and normalised as the thesis does), .npy tensors.

Every problem is one ``InputError`` line naming the file and what was wrong with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgesplit.core.zoo import ModelSpec, normalise
from edgesplit.errors import InputError
from edgesplit.extras import needs_extra

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the images and .npy files in the folder ``path`` (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES | {".npy"})
        if not files:
            raise InputError(f"{path} holds no images or .npy files")
        return files
    if not path.exists():
        raise InputError(f"{path} does not exist: give an image, a .npy file or a folder")
    return [path]


def load_input(path: Path, spec: ModelSpec) -> torch.Tensor:
    """One input as a normalised ``(1, C, H, W)`` float32 tensor for the model ``spec``."""
    if path.suffix.lower() == ".npy":
        return _load_npy(path, spec)
    with needs_extra("reading images"):
        from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("L" if spec.channels == 1 else "RGB")
            image = image.resize((spec.image_size, spec.image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"{path} is not a readable image: {exc}") from exc
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return normalise(pixels, spec)


def _load_npy(path: Path, spec: ModelSpec) -> torch.Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable .npy tensor: {exc}") from exc
    expected = spec.input_shape
    if array.shape == expected[1:]:
        array = array[None]
    if array.shape != expected or array.dtype.kind not in "fiu":
        raise InputError(
            f"{path} holds a {array.dtype} array of shape {list(array.shape)}; {spec.name} "
            f"takes a numeric array of shape {list(expected)} (or {list(expected[1:])}), "
            "already normalised"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
