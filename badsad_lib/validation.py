"""Input checks shared by the library: each returns the cleaned value or raises a ValueError that
names the bad value and says what would be accepted. Everything is checked before any training."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

MAX_SEED = 2**32 - 1


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number (Python or NumPy int, not bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}={value!r} must be a whole number, not {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"from {low} to {high}" if low is not None and high is not None else \
            f">= {low}" if low is not None else f"<= {high}"
        raise ValueError(f"{name}={value} must be {span}")
    return value


def check_number(value, name: str, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in the interval given (open or closed at each end)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} must be a number, not {type(value).__name__}")
    value = float(value) + 0.0  # -0.0 becomes 0.0: one spelling of zero, so one hash per run
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "any" if low is None else f"{'(' if low_open else '['}{low:g}"
        right = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        span = f"in {left}, {right}" if low is not None and high is not None else \
            f"{'>' if low_open else '>='} {low:g}" if low is not None else f"{'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name}={value!r} must be a finite number {span}")
    return value


def check_fraction(value, name: str, allow_one: bool = True) -> float:
    """A ratio in [0, 1] (or [0, 1))."""
    return check_number(value, name, 0.0, 1.0, high_open=not allow_one)


def check_seed(value) -> int:
    return check_int(value, "seed", 0, MAX_SEED)


def check_percentile(q) -> float:
    """A percentile strictly between 0 and 100 (90, 95 and 99 are the usual ones)."""
    return check_number(q, "percentile q", 0.0, 100.0, low_open=True, high_open=True)


def as_tensor(x, name: str = "X") -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} is not an array of images ({type(x).__name__}: {err})") from None


def check_images(X, dataset: str, name: str = "X", finite: bool = False, min_count: int = 0) -> torch.Tensor:
    """Float images shaped for ``dataset``'s network: (N, C, H, W), N >= min_count, optionally all finite."""
    from .registry import dataset_info

    X = as_tensor(X, name)
    expected = dataset_info(dataset).architecture.image_shape
    if X.ndim != 4 or tuple(X.shape[1:]) != expected:
        raise ValueError(f"{name} has shape {tuple(X.shape)}; a {dataset} network takes (N, {', '.join(map(str, expected))})")
    if not X.is_floating_point():
        raise ValueError(f"{name} has dtype {X.dtype}; images must be floats in [0, 1]")
    if len(X) < min_count:
        raise ValueError(f"{name} holds {len(X)} images; at least {min_count} are needed")
    if finite:
        bad = int((~torch.isfinite(X)).sum())
        if bad:
            raise ValueError(f"{name} holds {bad} NaN or infinite pixel value(s); images must be finite, in [0, 1]")
    return X.float()


def check_targets(y, n: int) -> torch.Tensor:
    """Semi-supervised targets (n,) in {0, +1, -1}; None means all 0 (unlabeled)."""
    if y is None:
        return torch.zeros(n, dtype=torch.long)
    y = as_tensor(y, "y").reshape(-1)
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise ValueError("y must hold whole numbers 0, +1 or -1")
    y = y.long()
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} targets for {n} images")
    bad = sorted(set(torch.unique(y).tolist()) - {-1, 0, 1})
    if bad:
        raise ValueError(f"y holds {bad}; semi-supervised targets must be 0 (unlabeled), +1 (normal) or -1 (anomaly)")
    return y
