"""Backdoor triggers and how they are stamped onto images.

A trigger is a mask M (1, H, W) in [0, 1] and a pattern P (C, H, W), combined with a strength mu:

- "corners" (BadSAD): M = four s x s squares, one per corner, P = 1:  x_p = x * (1 - M) + mu * M
- "patch" (BadNets): one corner checkerboard, P alternates 0 / 1:      x_p = x * (1 - M) + mu * M * P
- "blend" (Blended): M = 1, P a fixed random image:                    x_p = (1 - mu) * x + mu * P
- "noise" (low-amplitude additive): P in {-1, +1}, amplitude a:        x_p = clip(x + mu * a * P, 0, 1)

Images are float tensors in [0, 1], shaped (N, C, H, W); mu is a float in [0, 1].
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from .registry import TRIGGERS
from .validation import check_int, check_number

DEFAULT_STRENGTH = {"corners": 1.0, "patch": 1.0, "blend": 0.2, "noise": 1.0, "custom": 1.0}  # custom: yours


@dataclass(frozen=True)
class Trigger:
    name: str            # one of TRIGGERS
    mask: torch.Tensor   # (1, H, W) in [0, 1]
    pattern: torch.Tensor  # (C, H, W)
    amplitude: float = 1.0  # only "noise": the largest pixel change at strength 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pattern.shape)


def default_square_size(image_size: int) -> int:
    """Side of each corner square in pixels: 1 on 8x8 digits, 3 on 28x28 and 32x32 images."""
    return max(1, round(image_size / 10))


def make_trigger(name: str = "corners", channels: int = 1, size: int = 28, square: int | None = None,
                 amplitude: float = 0.1, seed: int = 0) -> Trigger:
    """Build trigger ``name`` for (channels, size, size) images; ``square`` is the corner/patch side."""
    if name not in TRIGGERS:
        raise ValueError(f"unknown trigger {name!r}: choose one of {', '.join(TRIGGERS)}")
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels not in (1, 3):
        raise ValueError(f"trigger channels={channels!r}: images have 1 (grey) or 3 (colour) channels")
    size = check_int(size, "trigger size", 4, 4096)
    seed = check_int(seed, "trigger seed", 0, 2**63 - 1)
    amplitude = check_number(amplitude, "noise amplitude", 0.0, 1.0)
    s = default_square_size(size) if square is None else check_int(square, "square", 1, size // 2)
    if not 1 <= s <= size // 2:
        raise ValueError(f"square={square} must be between 1 and {size // 2} pixels for {size}x{size} images")
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, size, size)
    pattern = torch.ones(channels, size, size)
    if name == "corners":
        for r in (slice(0, s), slice(size - s, size)):
            for c in (slice(0, s), slice(size - s, size)):
                mask[:, r, c] = 1.0
    elif name == "patch":
        side = max(3, s + 1) if size > 8 else 2
        mask[:, size - side:, size - side:] = 1.0
        ii, jj = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        pattern = ((ii + jj) % 2 == 0).float().expand(channels, size, size).clone()
    elif name == "blend":
        mask[:] = 1.0
        pattern = torch.rand(channels, size, size, generator=gen)
    else:  # noise
        mask[:] = 1.0
        pattern = torch.randint(0, 2, (channels, size, size), generator=gen).float() * 2 - 1
    return Trigger(name, mask, pattern, float(amplitude) if name == "noise" else 1.0)


def custom_trigger(mask, pattern) -> Trigger:
    """A trigger of your own design, stamped as the corners and the patch are: x' = x (1 - m) + mu m p.

    ``mask`` (H, W) or (1, H, W) and ``pattern`` (H, W) or (C, H, W): numbers in [0, 1] (tensors or arrays); the
    mask says where the trigger replaces the image (1) and where it leaves it alone (0)."""
    def as_image(a, what):
        t = torch.as_tensor(a, dtype=torch.float32)
        t = t.unsqueeze(0) if t.ndim == 2 else t
        if t.ndim != 3 or t.shape[-1] != t.shape[-2] or t.shape[-1] < 4:
            raise ValueError(f"the trigger's {what} has shape {tuple(torch.as_tensor(a).shape)}; expected (H, W) or "
                             f"(C, H, W) with H = W >= 4")
        if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise ValueError(f"the trigger's {what} must hold numbers in [0, 1]")
        return t
    m, p = as_image(mask, "mask"), as_image(pattern, "pattern")
    if m.shape[0] != 1 or m.shape[-1] != p.shape[-1] or p.shape[0] not in (1, 3):
        raise ValueError(f"mask {tuple(m.shape)} and pattern {tuple(p.shape)} do not fit: the mask has one channel, "
                         f"the pattern 1 or 3, and both the images' height and width")
    if not m.any():
        raise ValueError("the trigger's mask is 0 everywhere: it would change no pixel")
    return Trigger("custom", m, p)


def trigger_for(images: torch.Tensor, name: str = "corners", **kwargs) -> Trigger:
    """A trigger shaped for a batch of (N, C, H, W) images."""
    _check_batch(images)
    return make_trigger(name, images.shape[1], images.shape[-1], **kwargs)


def _check_batch(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images have shape {tuple(x.shape)}; expected square images (N, C, H, W)")
    if not x.is_floating_point():
        raise ValueError(f"images have dtype {x.dtype}; expected floats in [0, 1]")


def check_strength(strength) -> float:
    """A trigger strength mu: a number in [0, 1]."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise ValueError(f"trigger strength {strength!r} is not a number; use a value in [0, 1]")
    mu = float(strength)
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"trigger strength {strength} is outside [0, 1]; 0 = invisible, 1 = full strength")
    return mu


def apply_trigger(x: torch.Tensor, trigger: Trigger, strength: float | None = None) -> torch.Tensor:
    """Stamp ``trigger`` on every image of x (N, C, H, W) at ``strength`` (default: the trigger's usual one).

    Returns a new tensor; pixels outside the mask are untouched.
    """
    _check_batch(x)
    mu = check_strength(DEFAULT_STRENGTH[trigger.name] if strength is None else strength)
    if tuple(x.shape[1:]) != trigger.shape:
        raise ValueError(f"images have shape (N, {', '.join(map(str, x.shape[1:]))}) but the trigger is for "
                         f"(N, {', '.join(map(str, trigger.shape))})")
    m, p = trigger.mask.to(x), trigger.pattern.to(x)
    if trigger.name == "noise":
        return (x + mu * trigger.amplitude * p).clamp(0.0, 1.0)
    if trigger.name == "blend":
        return (1 - mu) * x + mu * p
    return x * (1 - m) + mu * m * p
