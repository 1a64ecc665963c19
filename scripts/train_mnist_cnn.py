"""Train the zoo's MNIST CNN on scikit-learn's bundled digits and ship the weights.

MNIST itself would have to be downloaded; scikit-learn ships 1,797 8x8 handwritten digits, which
we upscale to MNIST's 28x28 layout (``edgesplit.core.zoo.digits_to_mnist``). The split, the
seed and the schedule are fixed, so the run is reproducible on a CPU:

    python scripts/train_mnist_cnn.py            # writes src/edgesplit/data/mnist_cnn.safetensors
    python scripts/train_mnist_cnn.py --test-set-only   # only the held-out digits (no training)

It prints the held-out accuracy, which the README reports and ``tests/test_zoo.py`` checks. The
held-out digits themselves ship too (``mnist_test.safetensors``: 8x8 as scikit-learn has them,
with labels), so that codec accuracy is measured on inputs the network never saw
(``edgesplit codecs``); ``tests/test_codec_accuracy.py`` checks they are exactly this split's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from edgesplit.core import zoo
from edgesplit.core.architectures import mnist_cnn

DATA = Path(__file__).resolve().parents[1] / "src" / "edgesplit" / "data"
OUT = DATA / zoo.MNIST_WEIGHTS
SPLIT_SEED = 0
TEST_SIZE = 0.25
SAMPLES = 16  # held-out digits shipped as the sample and calibration inputs


def raw_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) as scikit-learn has them:
    8x8 images of values 0..16."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=TEST_SIZE, random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    return x_train, y_train, x_test, y_test


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels), images 28x28 in [0, 1]."""
    x_train, y_train, x_test, y_test = raw_split()
    return (zoo.digits_to_mnist(x_train), torch.as_tensor(y_train),
            zoo.digits_to_mnist(x_test), torch.as_tensor(y_test))


def write_test_set(out: Path) -> None:
    """The held-out digits and labels as uint8 safetensors (about 30 KB, nothing to unpickle)."""
    _, _, x_test, y_test = raw_split()
    save_file({"images": torch.as_tensor(x_test.astype(np.uint8)),
               "labels": torch.as_tensor(y_test.astype(np.uint8))}, str(out),
              metadata={"source": "sklearn.datasets.load_digits", "split_seed": str(SPLIT_SEED),
                        "test_size": str(TEST_SIZE)})
    print(f"wrote {len(y_test)} held-out digits to {out}")


def normalise(images: torch.Tensor) -> torch.Tensor:
    return ((images - zoo.MNIST_MEAN[0]) / zoo.MNIST_STD[0]).unsqueeze(1)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return (model(normalise(images)).argmax(1) == labels).float().mean().item()


def train(epochs: int) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(SPLIT_SEED)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, x_test, y_test = digits_split()
    model = mnist_cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    inputs = normalise(x_train)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(inputs)).split(32):
            # The network ends in Softmax (Table 5.2), so train on the log of its output.
            loss = torch.nn.functional.nll_loss(
                torch.log(model(inputs[batch]).clamp_min(1e-12)), y_train[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        schedule.step()
    model.eval()
    return model, accuracy(model, x_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--test-set-only", action="store_true",
                        help="Write only the held-out digits, beside --out; train nothing.")
    args = parser.parse_args()
    write_test_set(args.out.parent / zoo.MNIST_TEST_SET)
    if args.test_set_only:
        return
    model, test_accuracy = train(args.epochs)
    samples = (digits_split()[2][:SAMPLES] * 255).round().to(torch.uint8)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["samples"] = samples
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"test_accuracy": f"{test_accuracy:.4f}"})
    print(f"held-out accuracy {test_accuracy:.4f} on {len(digits_split()[3])} digits; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
