"""One place that decides where tensors live: CUDA, then Apple MPS, then the CPU."""
from __future__ import annotations

import torch


def get_device(name: str | None = None) -> torch.device:
    """The device to compute on: ``name`` if given, else cuda > mps > cpu.

    ``name`` is anything ``torch.device`` accepts ("cpu", "cuda", "cuda:1", "mps").
    """
    if name is not None and name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} asked for, but Apple MPS is not available here; use 'cpu' or 'auto'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_report(device: torch.device | None = None, quick: bool = True) -> str:
    """One line naming the device, with a hint that fits the mode when only the CPU is in use."""
    device = device or get_device()
    if device.type == "cuda":
        return f"Using GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Using Apple GPU (MPS)"
    if quick:
        return ("Using CPU (no GPU found). Quick mode is made for a CPU; on Colab, "
                "Runtime > Change runtime type > GPU makes it faster still.")
    return ("Using CPU (no GPU found). Full mode (the paper's settings) takes several minutes per model here; "
            "on Colab, Runtime > Change runtime type > GPU, or use quick mode.")


def memory_format_for(device) -> torch.memory_format:
    """The memory format networks and image batches use on ``device``: channels-last on the CPU."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


# The CPU's allocator (glibc) maps every block above its mmap threshold (at most 32 MiB, and raised only by
# what was freed before) afresh and unmaps it on free, so each batch whose activations are that large pays
# page faults on all of them. Measured, 10000 MNIST test images through the encoder (one thread): 388 ms at
# 4096 a batch (103 k page faults), 188 ms at 512 (none); 4096 Fashion-MNIST images 930 -> 386 ms at 256;
# 1017 CIFAR-10 images 846 -> 520 ms at 128.
CPU_BATCH_BYTES = 16 * 2 ** 20


def eval_batch_size(device, activation_values: int) -> int:
    """Images per batch when evaluating a network whose largest activation holds ``activation_values``
    float32 values per image: 4096 on a GPU; on the CPU the largest power of two from 64 to 4096 whose
    activation stays within ``CPU_BATCH_BYTES`` (MNIST 512, Fashion-MNIST 256, CIFAR-10 128)."""
    if torch.device(device).type != "cpu":
        return 4096
    size = 4096
    while size > 64 and size * activation_values * 4 > CPU_BATCH_BYTES:
        size //= 2
    return size
