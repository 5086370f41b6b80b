"""DeepSAD's LeNet-type networks, as in the reference code (github.com/lukasruff/Deep-SAD-PyTorch,
``src/networks``): no bias terms, BatchNorm without affine parameters (eps 1e-4), leaky ReLU,
max-pooling, and a final linear layer with no activation. These rules keep the network from
mapping everything onto the center (the trivial solution; lesson 01 shows it).

Encoders map (N, C, H, W) images to (N, rep_dim) codes; decoders mirror them with transposed
convolutions and nearest-neighbour upsampling, ending in a sigmoid (images in [0, 1]).

Both are ``LeNet``s: nn.Sequential's layers and state dict, with a forward that computes the conv blocks on
2 x 2 phase grids (``polyphase``), the same maths in fewer, wider convolutions.

``place(module, device)`` moves a network to its device in the memory format that is fastest
there: channels-last on the CPU, where oneDNN then runs the transposed convolutions (the default
layout falls back to a slow im2col path) and max-pooling is several times faster; the default
layout elsewhere. The format changes where values sit in memory, not what they are: the same
weights give the same codes up to float rounding, and state dicts are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .device import memory_format_for
from .polyphase import run
from .registry import Architecture, dataset_info


def architecture(dataset: str) -> Architecture:
    """The registered network of ``dataset`` (``registry.Architecture``)."""
    return dataset_info(dataset).architecture


def _bn2d(c: int, bias: bool = False) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-4, affine=bias)


class LeNet(nn.Sequential):
    """A network's layers in order, as nn.Sequential holds them (same state dict); its forward computes the
    conv -> BatchNorm -> LeakyReLU -> max-pool and upsample -> transposed-conv blocks on 2 x 2 phase grids
    (``polyphase``), the same maths in fewer, wider convolutions, and calls every other layer as it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(list(self), x)


def build_encoder(dataset: str, bias: bool = False) -> nn.Sequential:
    """phi for ``dataset``: (N, C, H, W) -> (N, rep_dim).

    ``bias=True`` breaks DeepSAD's rules on purpose (bias terms and affine BatchNorm everywhere), so
    lesson 01 can show the collapse they prevent; never use it for a real detector.
    """
    a = architecture(dataset)
    layers: list[nn.Module] = []
    channels, size = a.in_channels, a.image_size
    for out in a.conv_channels:
        layers += [nn.Conv2d(channels, out, a.kernel, bias=bias, padding=a.kernel // 2), _bn2d(out, bias),
                   nn.LeakyReLU(), nn.MaxPool2d(2, 2)]
        channels, size = out, size // 2
    layers.append(nn.Flatten())
    features = channels * size * size
    for width in a.hidden:
        layers += [nn.Linear(features, width, bias=bias), nn.BatchNorm1d(width, eps=1e-4, affine=bias),
                   nn.LeakyReLU()]
        features = width
    layers.append(nn.Linear(features, a.rep_dim, bias=bias))
    return LeNet(*layers)


def build_decoder(dataset: str, bias: bool = False) -> nn.Sequential:
    """The mirrored decoder: (N, rep_dim) -> (N, C, H, W) in [0, 1]."""
    a = architecture(dataset)
    layers: list[nn.Module] = []
    features = a.rep_dim
    for width in a.decoder_hidden:
        layers += [nn.Linear(features, width, bias=bias), nn.BatchNorm1d(width, eps=1e-4, affine=bias)]
        features = width
    channels = features // 16
    layers += [nn.Unflatten(1, (channels, 4, 4)), nn.LeakyReLU()]
    for i, (out, kernel, padding) in enumerate(a.decoder):
        if i > 0 or a.upsample_first:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers.append(nn.ConvTranspose2d(channels, out, kernel, bias=bias, padding=padding))
        layers += [_bn2d(out, bias), nn.LeakyReLU()] if i < len(a.decoder) - 1 else [nn.Sigmoid()]
        channels = out
    return LeNet(*layers)


class Autoencoder(nn.Module):
    """Encoder + mirrored decoder, for reconstruction pretraining."""

    def __init__(self, dataset: str, bias: bool = False):
        super().__init__()
        self.encoder = build_encoder(dataset, bias)
        self.decoder = build_decoder(dataset, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def initialise(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Draw ``module``'s weights afresh from ``generator``, exactly as PyTorch's default initialisation does
    (Kaiming-uniform with a = sqrt(5), biases uniform in +-1/sqrt(fan_in); layers in order), but from this
    generator instead of the process-wide one: two models trained at once in one process (threads) draw
    from their own streams. Seeded as ``torch.manual_seed`` was, it gives the same weights bit for bit."""
    import math

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    return module


def in_memory_format(x: torch.Tensor, device) -> torch.Tensor:
    """Images x (N, C, H, W) on ``device`` in ``memory_format_for(device)``, the values unchanged.

    A one-channel batch is the same memory in both formats, so PyTorch leaves its default strides
    and the first convolution then answers in the default layout; it is given channels-last
    strides explicitly (a view, no copy), so every layer after it runs channels-last.
    """
    fmt = memory_format_for(device)
    x = x.to(device).contiguous(memory_format=fmt)
    if fmt is torch.channels_last and x.ndim == 4 and x.shape[1] == 1:
        n, c, h, w = x.shape
        x = x.as_strided(x.shape, (c * h * w, 1, w * c, c))
    return x


def place(module: nn.Module, device) -> nn.Module:
    """``module`` on ``device``, its 4-d weights in ``memory_format_for(device)``, and its input images
    put in that format on every call (a forward pre-hook; the state dict is unchanged). In place; returns it."""
    module.to(device=device, memory_format=memory_format_for(device))
    if memory_format_for(device) is not torch.contiguous_format:
        module.register_forward_pre_hook(_InputFormat(torch.device(device)))
    return module


@dataclass(frozen=True)
class _InputFormat:
    """Forward pre-hook of ``place``: the first input in the device's memory format (picklable, unlike a lambda)."""
    device: torch.device

    def __call__(self, module, args):
        return (in_memory_format(args[0], self.device), *args[1:])


def has_bias(module: nn.Module) -> bool:
    """True if any layer of ``module`` carries a bias or an affine BatchNorm parameter."""
    return any(name.endswith("bias") or name.endswith("weight") and isinstance(m, nn.modules.batchnorm._BatchNorm)
               for m in module.modules() for name, _ in m.named_parameters(recurse=False))
