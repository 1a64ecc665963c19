"""The model zoo: one registry of specs, each naming its network, input, weights and samples.

A ``ModelSpec`` is plain data plus hooks, so listing the zoo (``edgesplit models``, the CLI's
choices) imports neither torch nor numpy: the network is named as ``"module:callable"`` and built
only when asked for, and its layer and parameter counts are declared (``tests/test_zoo.py`` checks
them against the built network). Hooks on the spec say what differs between models: ``weights``
gives trained weights (the MNIST CNN's, shipped with the package, see
``scripts/train_mnist_cnn.py``), ``images`` the sample and calibration pictures. Adding a model is
one entry in ``MODELS`` (plus its network, wherever it lives, and its test).

Models without trained weights get deterministic synthetic ones: generated once per machine from
the spec's seed (the caller's RNG untouched) and cached as safetensors in the cache folder, so a
start-up maps them from disk instead of drawing a hundred million random numbers.

>>> from edgesplit.core.zoo import build_model, sample_input
>>> model = build_model("mnist_cnn")
>>> model(sample_input("mnist_cnn")).shape
torch.Size([1, 10])
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from edgesplit.errors import InvalidArgument, UnknownModel

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from edgesplit.core.splitting import SplitModel

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
MNIST_WEIGHTS = "mnist_cnn.safetensors"
MNIST_TEST_SET = "mnist_test.safetensors"  # the digits held out of training, with labels
WEIGHTS_FORMAT = 1  # bump when the way synthetic weights are generated changes


def synthetic_images(spec: ModelSpec) -> list[np.ndarray]:
    """Three deterministic scenes: the first is the sample, all three calibrate codecs."""
    return [synthetic_image(spec.image_size, phase) for phase in (0.0, 1.3, 2.6)]


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: how to build the network, what its input looks like, and its hooks."""

    name: str
    description: str
    architecture: str  # "module:callable" returning the nn.Module (imported when built)
    image_size: int  # inputs are square images of this side, after resizing
    channels: int  # 3 for RGB, 1 for grey
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layers: int  # declared, so listing the zoo builds nothing (tests check them)
    parameters: int
    seed: int = 0
    weights: Callable[[], Mapping[str, torch.Tensor]] | None = None  # trained; None: synthetic
    images: Callable[[ModelSpec], Sequence[np.ndarray]] = synthetic_images  # (C, H, W) in [0, 1]
    # Labelled inputs the weights never saw: (normalised inputs, labels); None: no such set.
    test_set: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.channels, self.image_size, self.image_size)

    @property
    def split_points(self) -> int:
        return self.layers + 1

    @property
    def trained(self) -> bool:
        """False for synthetic weights: deterministic but untrained, so the answers mean
        nothing and "a lossy codec keeps the top-1 answer" proves little."""
        return self.weights is not None

    def network(self) -> nn.Module:
        """A fresh instance of the architecture (weights initialised by its own code)."""
        module, _, attribute = self.architecture.partition(":")
        network: nn.Module = getattr(importlib.import_module(module), attribute)()
        return network


def _mnist_state() -> dict[str, torch.Tensor]:
    return {key: tensor.clone() for key, tensor in _mnist_data()[0].items()}


def _mnist_images(spec: ModelSpec) -> list[np.ndarray]:
    """Held-out digits shipped beside the trained weights (28x28 in [0, 1])."""
    return [image.numpy()[None, :, :] for image in _mnist_data()[1]]


@cache
def _mnist_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits that ``scripts/train_mnist_cnn.py`` held out of training, shipped
    as they come (8x8, values 0..16), made MNIST-like and normalised here."""
    import torch
    from safetensors.torch import load

    tensors = load((resources.files("edgesplit") / "data" / MNIST_TEST_SET).read_bytes())
    images = digits_to_mnist(tensors["images"].numpy())
    spec = MODELS["mnist_cnn"]
    inputs = ((images - spec.mean[0]) / spec.std[0]).unsqueeze(1)
    return inputs.contiguous(), tensors["labels"].to(torch.int64)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("alexnet", "AlexNet, 19 layers (thesis Table 5.1)",
                  "edgesplit.core.architectures:alexnet", 224, 3, IMAGENET_MEAN, IMAGENET_STD,
                  layers=19, parameters=61_100_840, seed=1),
        ModelSpec("vgg16", "VGG16, 37 layers (thesis Table 5.3)",
                  "edgesplit.core.architectures:vgg16", 256, 3, IMAGENET_MEAN, IMAGENET_STD,
                  layers=37, parameters=138_357_544, seed=2),
        ModelSpec("mnist_cnn", "MNIST CNN, 9 layers (thesis Table 5.2), trained on digits",
                  "edgesplit.core.architectures:mnist_cnn", 28, 1, MNIST_MEAN, MNIST_STD,
                  layers=9, parameters=21_840, seed=3, weights=_mnist_state,
                  images=_mnist_images, test_set=_mnist_test_set),
        ModelSpec("resnet18", "ResNet-18, a DAG with residual branches",
                  "edgesplit.core.architectures:resnet18", 224, 3, IMAGENET_MEAN, IMAGENET_STD,
                  layers=68, parameters=11_689_512, seed=4),
    )
}


def synthetic_note(name: str) -> str:
    """One line saying that ``name`` runs with synthetic weights; empty for a trained model."""
    if get_spec(name).trained:
        return ""
    return (f"note: {name} has synthetic weights (deterministic, untrained): its answers are "
            "not real classes, and a lossy codec keeping them proves little; codec accuracy "
            "on real digits: `edgesplit codecs` (the trained mnist_cnn)")


def test_set(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``name``'s held-out test set: normalised inputs (N, C, H, W) and their labels (N)."""
    spec = get_spec(name)
    if spec.test_set is None:
        trained = ", ".join(n for n, s in MODELS.items() if s.test_set is not None)
        raise InvalidArgument(f"{name} has no labelled test set (its weights are "
                              f"{'trained' if spec.trained else 'synthetic'}): use {trained}")
    inputs, labels = spec.test_set()
    return inputs.clone(), labels.clone()  # the cached set stays as shipped


def model_names() -> list[str]:
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The zoo entry called ``name``; an unknown name raises with the list of known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(
            f"unknown model {name!r}: expected one of {', '.join(MODELS)}"
        ) from None


def build_model(name: str) -> nn.Module:
    """Build a zoo model in eval mode with its deterministic (or trained) weights.

    The network is built on the meta device (no memory, no initialisation), then its weights are
    assigned: the spec's trained ones, or the synthetic ones mapped from the cache.
    """
    import torch

    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.network()
    state = spec.weights() if spec.weights is not None else _synthetic_weights(spec, model)
    model.load_state_dict(state, assign=True)
    return model.requires_grad_(False).eval()


def build_split(name: str) -> SplitModel:
    """A zoo model as a ``SplitModel``, traced on its sample input."""
    from edgesplit.core.splitting import SplitModel

    return SplitModel(build_model(name), sample_input(name), take=True)


def sample_input(name: str) -> torch.Tensor:
    """The model's fixed sample input, already resized and normalised (batch of one)."""
    spec = get_spec(name)
    return normalise(spec.images(spec)[0], spec)


def calibration_inputs(name: str) -> torch.Tensor:
    """A few inputs to check that a lossy codec keeps the model's top-1 prediction."""
    import torch

    spec = get_spec(name)
    return torch.cat([normalise(pixels, spec) for pixels in spec.images(spec)])


def normalise(pixels: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """(C, H, W) pixels in [0, 1] to a normalised (1, C, H, W) float32 tensor."""
    import numpy as np
    import torch

    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    array = (pixels.astype(np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(array[None]))


def synthetic_image(size: int, phase: float = 0.0) -> np.ndarray:
    """A deterministic RGB scene (sky, river, banks) in [0, 1], shape (3, size, size).

    Written with closed-form arithmetic, no RNG, so it is the same on every machine and version.
    """
    import numpy as np

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    river = 0.5 + 0.5 * np.sin(6 * math.pi * x + 3 * y + phase)
    banks = np.clip(1.5 * np.abs(y - 0.6 - 0.1 * np.sin(4 * math.pi * x + phase)), 0, 1)
    red = 0.25 + 0.5 * banks * (0.6 + 0.4 * river)
    green = 0.35 + 0.4 * (1 - y) * banks + 0.1 * river
    blue = 0.3 + 0.6 * (1 - banks) * river + 0.1 * (1 - y)
    image: np.ndarray = np.clip(np.stack([red, green, blue]), 0.0, 1.0).astype(np.float32)
    return image


def weights_path(spec: ModelSpec, model: nn.Module) -> Path:
    """Where the synthetic weights of ``spec`` are cached: keyed by everything that shapes them
    (the seed, torch's RNG by its version, and every tensor's name and shape)."""
    from importlib.metadata import version

    from edgesplit.core.profiles import cache_dir

    layout = sorted((key, tuple(t.shape)) for key, t in model.state_dict().items())
    key = repr((WEIGHTS_FORMAT, spec.seed, version("torch"), layout))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "weights" / f"{spec.name}-{digest}.safetensors"


def _synthetic_weights(spec: ModelSpec, meta_model: nn.Module) -> Mapping[str, torch.Tensor]:
    """The cached weights (memory-mapped), generating and caching them the first time (and
    again if the cached file is unreadable). Files are replaced, never rewritten in place: a
    running process keeps mapping the one it opened."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = weights_path(spec, meta_model)
    if path.exists():
        try:
            return load_file(path)  # memory-mapped: pages come in as a forward touches them
        except (SafetensorError, OSError) as exc:
            log.warning("re-generating %s's weights: the cached %s is unreadable (%s)",
                        spec.name, path, exc)
    state = _generate_weights(spec)
    return load_file(path) if _cache_weights(spec, state, path) else state


def _cache_weights(spec: ModelSpec, state: dict[str, torch.Tensor], path: Path) -> bool:
    """Write ``state`` to ``path`` atomically; False (and a warning) if it cannot be cached."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        save_file(state, partial)
        os.replace(partial, path)
    except OSError as exc:
        log.warning("cannot cache %s's weights in %s (%s): generating them at every start",
                    spec.name, path.parent, exc.strerror or exc)
        return False
    return True


def _generate_weights(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The architecture's own initialisation, drawn from the spec's seed (once per machine)."""
    import torch

    log.info("generating %s's weights (once; cached for later starts)", spec.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = spec.network()
    return {key: tensor.contiguous() for key, tensor in model.state_dict().items()}


@cache
def _mnist_data() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The trained state dict and the held-out sample digits shipped beside it."""
    import torch
    from safetensors.torch import load

    blob = (resources.files("edgesplit") / "data" / MNIST_WEIGHTS).read_bytes()
    tensors = load(blob)
    samples = tensors.pop("samples").to(torch.float32) / 255.0
    return tensors, samples


def digits_to_mnist(images: np.ndarray) -> torch.Tensor:
    """scikit-learn's 8x8 digits (values 0..16) as MNIST-like 28x28 images in [0, 1].

    MNIST centres a 20x20 digit in a 28x28 frame; so do we, with bilinear upscaling.
    """
    import numpy as np
    import torch

    small = torch.as_tensor(np.asarray(images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    big = torch.nn.functional.interpolate(small, size=(20, 20), mode="bilinear",
                                          align_corners=False)
    return torch.nn.functional.pad(big, (4, 4, 4, 4)).clamp(0.0, 1.0)[:, 0]
