"""What the attack and the defenses need from a detector, as a structural type.

Anything with these members can be attacked (``experiments``) and defended (``defenses``) by the
same code: DeepSAD and Deep SVDD (``deepsad.DeepSVDD``, DeepSAD without labels) do. The attack
also needs a center-based score, because its objective pulls codes onto the center c.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@runtime_checkable
class Detector(Protocol):
    threshold_: float | None          # the deployed threshold tau on the anomaly score

    def fit(self, X, y=None, *, X_val=None, objective=None, callback=None):
        """Train on images X (N, C, H, W) with semi-supervised targets y (N,); returns self."""

    def decision_function(self, X) -> np.ndarray:
        """Anomaly scores (N,), higher = more anomalous; non-finite images score +inf."""

    def transform(self, X) -> np.ndarray:
        """Latent codes (N, d) that training-set inspection reads."""

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable scores (N,) of a batch on the detector's device, for trigger reverse-engineering."""

    def set_threshold(self, X_normal, q: float | None = None) -> float:
        """Set ``threshold_`` from clean normal images."""

    def copy(self) -> "Detector":
        """An independent copy that a defense may change."""

    def fine_tune(self, X, y=None, *, epochs: int = 5, lr: float = 1e-4, X_val=None):
        """Continue training on X with targets y; returns self."""

    @property
    def encoder(self) -> nn.Module:
        """The network whose layers pruning and BatchNorm recalibration act on (last layer: linear)."""
