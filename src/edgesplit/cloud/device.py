"""Where the cloud runs its tails: checked once, at configuration, with one line if unusable."""

from __future__ import annotations

from edgesplit.errors import InvalidArgument


def check_device(device: str) -> str:
    """``device`` if tails can run there (cpu, cuda, cuda:N), else one line saying why not."""
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return device
    if kind != "cuda" or (index and not index.isdigit()):
        raise InvalidArgument(f"unknown device {device!r}: expected cpu, cuda or cuda:N")
    import torch  # only for a GPU: the settings (and `cloud serve --help`) must not need torch

    if not torch.cuda.is_available():
        raise InvalidArgument(
            f"--device {device}: this machine has no usable CUDA GPU (torch {torch.__version__}"
            f"{' is a CPU build' if torch.version.cuda is None else ' sees none'}); "
            "use --device cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise InvalidArgument(f"--device {device}: only {torch.cuda.device_count()} CUDA "
                              f"device(s) here, numbered from 0")
    return device
