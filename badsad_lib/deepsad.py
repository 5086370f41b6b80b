"""DeepSAD (Ruff et al., ICLR 2020) as a scikit-learn / PyOD style estimator.

Objective, per mini-batch of n samples with semi-supervised targets y in {0, +1, -1}:

    L = 1/n * sum_i  ||phi(x_i) - c||^2                      if y_i = 0   (unlabeled)
                     eta * (||phi(x_i) - c||^2 + 1e-6) ** y_i  if y_i = +-1 (labeled)

so labeled anomalies (y = -1) are pushed away through the inverse distance. Weight decay comes
through Adam. The anomaly score is ||phi(x) - c||^2 (higher = more anomalous).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import dataset_name
from .device import get_device
from .io import save_torch
from .metrics import threshold as percentile_threshold
from .networks import ARCHITECTURES, Autoencoder, build_encoder

EPS = 1e-6
CENTER_EPS = 0.1
# The optimiser settings of the paper's code, and a quick variant for CPU lessons and CI.
PAPER_SETTINGS = dict(epochs=150, lr=1e-4, milestones=(50,), weight_decay=5e-7, batch_size=128,
                      ae_epochs=150, ae_lr=1e-4, ae_milestones=(), ae_weight_decay=5e-4)
QUICK_SETTINGS = dict(PAPER_SETTINGS, epochs=20, lr=1e-3, milestones=(15,), ae_epochs=10, ae_lr=1e-3)
# 8x8 digits: ~110 normal training images, so small batches and more epochs (a few seconds on a CPU).
DIGITS_SETTINGS = dict(PAPER_SETTINGS, epochs=300, lr=1e-3, milestones=(200,), batch_size=32, ae_epochs=60,
                       ae_lr=1e-3)


def training_settings(dataset: str, quick: bool) -> dict:
    """Optimiser settings for ``dataset``: the paper's, or the quick variant (few epochs, larger lr)."""
    if dataset_name(dataset) == "digits":
        return dict(DIGITS_SETTINGS)
    return dict(QUICK_SETTINGS if quick else PAPER_SETTINGS)


# objective(phi, c, x_batch (B, C, H, W), y_batch (B,), idx (B,)) -> scalar loss
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# callback(phase "autoencoder" | "DeepSAD", epoch (1-based), mean loss of that epoch), e.g. a live loss plot
EpochCallback = Callable[[str, int, float], None]


class CheckpointError(ValueError):
    """A file is not a readable DeepSAD checkpoint."""


def deepsad_loss(dist: torch.Tensor, semi_targets: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """Mean DeepSAD loss of squared distances ``dist`` (n,) with targets (n,) in {0, +1, -1}."""
    labeled = eta * (dist + EPS) ** semi_targets.to(dist.dtype)
    return torch.where(semi_targets == 0, dist, labeled).mean()


def center_from(codes: torch.Tensor, eps: float = CENTER_EPS) -> torch.Tensor:
    """c = mean code (rep_dim,), with every |c_k| < eps moved to +-eps (keeping its sign; 0 -> +eps)."""
    c = codes.mean(dim=0)
    small = c.abs() < eps
    return torch.where(small & (c < 0), torch.full_like(c, -eps), torch.where(small, torch.full_like(c, eps), c))


def batches(n: int, batch_size: int, generator: torch.Generator):
    """Shuffled index batches over range(n); a trailing batch of one (which BatchNorm cannot take) joins the last."""
    perm = torch.randperm(n, generator=generator)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for i, s in enumerate(starts):
        yield perm[s: starts[i + 1] if i + 1 < len(starts) else n]


def _check_images(X, dataset: str, what: str = "X") -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        X = torch.as_tensor(np.asarray(X))
    a = ARCHITECTURES[dataset]
    expected = (a.in_channels, a.image_size, a.image_size)
    if X.ndim != 4 or tuple(X.shape[1:]) != expected:
        raise ValueError(f"{what} has shape {tuple(X.shape)}; a {dataset} network takes (N, {', '.join(map(str, expected))})")
    if not X.is_floating_point():
        raise ValueError(f"{what} has dtype {X.dtype}; images must be floats in [0, 1]")
    return X.float()


class DeepSAD:
    """Deep Semi-supervised Anomaly Detection with autoencoder pretraining.

    After ``fit``: ``net_`` (phi), ``c_`` (rep_dim,) the fixed center, ``threshold_`` (a score),
    ``history_`` (mean loss per epoch) and ``ae_history_`` (reconstruction MSE per epoch).
    """

    def __init__(self, dataset: str = "mnist", *, eta: float = 1.0, epochs: int = 150, lr: float = 1e-4,
                 milestones=(50,), weight_decay: float = 5e-7, batch_size: int = 128, ae_epochs: int = 150,
                 ae_lr: float = 1e-4, ae_milestones=(), ae_weight_decay: float = 5e-4, q: float = 95.0,
                 bias: bool = False, device=None, seed: int = 0, progress: bool = True):
        self.dataset = dataset_name(dataset)
        if eta <= 0:
            raise ValueError(f"eta={eta} must be positive")
        for value, what in ((epochs, "epochs"), (ae_epochs, "ae_epochs")):
            if int(value) < 0:
                raise ValueError(f"{what}={value} must be >= 0")
        if int(batch_size) < 2:
            raise ValueError(f"batch_size={batch_size} must be >= 2 (BatchNorm needs two samples)")
        self.eta, self.epochs, self.lr, self.milestones = float(eta), int(epochs), float(lr), tuple(milestones)
        self.weight_decay, self.batch_size = float(weight_decay), int(batch_size)
        self.ae_epochs, self.ae_lr, self.ae_milestones = int(ae_epochs), float(ae_lr), tuple(ae_milestones)
        self.ae_weight_decay, self.q, self.seed, self.progress = float(ae_weight_decay), float(q), int(seed), progress
        self.bias = bool(bias)  # True breaks the anti-collapse rules (lesson 01's demonstration only)
        self.device = get_device(device) if not isinstance(device, torch.device) else device
        self.net_: nn.Module | None = None
        self.c_: torch.Tensor | None = None
        self.threshold_: float | None = None
        self.history_: list[float] = []
        self.ae_history_: list[float] = []
        self.fit_seconds_: float | None = None

    # ------------------------------------------------------------------ training
    def config(self) -> dict:
        return dict(dataset=self.dataset, eta=self.eta, epochs=self.epochs, lr=self.lr,
                    milestones=list(self.milestones), weight_decay=self.weight_decay, batch_size=self.batch_size,
                    ae_epochs=self.ae_epochs, ae_lr=self.ae_lr, ae_milestones=list(self.ae_milestones),
                    ae_weight_decay=self.ae_weight_decay, q=self.q, bias=self.bias, seed=self.seed)

    def fit(self, X, y=None, *, X_val=None, objective: Objective | None = None,
            callback: EpochCallback | None = None):
        """Pretrain an autoencoder on X, copy its encoder into phi, fix c, then train phi.

        X: (N, C, H, W) images in [0, 1]; y: (N,) semi-supervised targets in {0, +1, -1} (None = all 0).
        X_val: held-out clean normals; ``threshold_`` is their q-th percentile score (else the
        training images with y >= 0 are used). ``objective(phi, c, x, y, idx)`` replaces the DeepSAD
        mini-batch loss (the BadSAD attack passes one; idx are the batch's indices into X).
        ``callback(phase, epoch, loss)`` is called after every epoch of both phases.
        """
        start = time.perf_counter()
        X = _check_images(X, self.dataset)
        y = torch.zeros(len(X), dtype=torch.long) if y is None else torch.as_tensor(np.asarray(y)).long().reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"y has {y.shape[0]} targets for {X.shape[0]} images")
        bad = set(torch.unique(y).tolist()) - {-1, 0, 1}
        if bad:
            raise ValueError(f"y holds {sorted(bad)}; semi-supervised targets must be 0, +1 or -1")
        if len(X) < 2:
            raise ValueError(f"need at least 2 training images, got {len(X)}")
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        X, y = X.to(self.device), y.to(self.device)

        self.net_ = build_encoder(self.dataset, self.bias).to(self.device)
        if self.ae_epochs > 0:
            ae = Autoencoder(self.dataset, self.bias).to(self.device)
            self.ae_history_ = self._pretrain(ae, X, gen, callback)
            self.net_.load_state_dict(ae.encoder.state_dict())
        self.c_ = center_from(self._codes(X))
        self.history_ = self._train(X, y, gen, objective, callback)
        if X_val is not None:
            self.set_threshold(X_val)
        else:
            self.set_threshold(X[y >= 0])
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _epochs(self, module: nn.Module, n: int, batch_size: int, epochs: int, lr: float, weight_decay: float,
                milestones, desc: str, gen: torch.Generator, batch_loss, callback=None) -> list[float]:
        """Adam with x0.1 steps at ``milestones``; ``batch_loss(idx)`` -> loss of one mini-batch. Mean loss per epoch."""
        opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
        history = []
        module.train()
        bar = tqdm(range(epochs), desc=desc, disable=not self.progress, leave=False)
        for _ in bar:
            total = 0.0
            for idx in batches(n, batch_size, gen):
                loss = batch_loss(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            sched.step()
            history.append(total / n)
            if not math.isfinite(history[-1]):
                raise FloatingPointError(f"{desc} loss became {history[-1]} at epoch {len(history)}; lower lr={lr}")
            bar.set_postfix(loss=f"{history[-1]:.4g}")
            if callback is not None:
                callback(desc, len(history), history[-1])
        return history

    def _pretrain(self, ae: Autoencoder, X: torch.Tensor, gen: torch.Generator, callback=None) -> list[float]:
        def batch_loss(idx):
            xb = X[idx]
            return ((ae(xb) - xb) ** 2).flatten(1).sum(1).mean()
        return self._epochs(ae, len(X), self.batch_size, self.ae_epochs, self.ae_lr, self.ae_weight_decay,
                            self.ae_milestones, "autoencoder", gen, batch_loss, callback)

    def _train(self, X, y, gen, objective, callback=None) -> list[float]:
        net, c = self.net_, self.c_

        def batch_loss(idx):
            if objective is None:
                return deepsad_loss(((net(X[idx]) - c) ** 2).sum(dim=1), y[idx], self.eta)
            return objective(net, c, X[idx], y[idx], idx)
        return self._epochs(net, len(X), self.batch_size, self.epochs, self.lr, self.weight_decay, self.milestones,
                            "DeepSAD", gen, batch_loss, callback)

    def fine_tune(self, X, y=None, *, epochs: int = 5, lr: float = 1e-4, X_val=None):
        """Continue training phi on X (N, C, H, W) with targets y (default all 0) and the DeepSAD loss.

        The center c stays frozen; ``threshold_`` is re-set from X_val when given. Model repair
        (fine-tuning, fine-pruning) and trigger unlearning use this.
        """
        self._require_fitted()
        X = _check_images(X, self.dataset).to(self.device)
        y = torch.zeros(len(X), dtype=torch.long) if y is None else torch.as_tensor(np.asarray(y)).long().reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"y has {y.shape[0]} targets for {X.shape[0]} images")
        y = y.to(self.device)
        gen = torch.Generator().manual_seed(self.seed + 1)
        net, c = self.net_, self.c_

        def batch_loss(idx):
            return deepsad_loss(((net(X[idx]) - c) ** 2).sum(dim=1), y[idx], self.eta)
        self.history_ = self.history_ + self._epochs(net, len(X), min(self.batch_size, len(X)), int(epochs), lr,
                                                     self.weight_decay, (), "fine-tune", gen, batch_loss)
        net.eval()
        if X_val is not None:
            self.set_threshold(X_val)
        return self

    # ------------------------------------------------------------------ inference
    def _require_fitted(self):
        if self.net_ is None or self.c_ is None:
            raise RuntimeError("this DeepSAD is not fitted yet: call fit(X) or DeepSAD.load(path) first")

    @torch.inference_mode()
    def _codes(self, X: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        was_training = self.net_.training
        self.net_.eval()
        out = torch.cat([self.net_(X[i:i + batch_size].to(self.device)) for i in range(0, len(X), batch_size)])
        self.net_.train(was_training)
        return out

    def transform(self, X) -> np.ndarray:
        """Latent codes phi(X): (N, rep_dim)."""
        self._require_fitted()
        return self._codes(_check_images(X, self.dataset)).cpu().numpy()

    def decision_function(self, X) -> np.ndarray:
        """Anomaly scores ||phi(x) - c||^2: (N,), higher = more anomalous."""
        self._require_fitted()
        codes = self._codes(_check_images(X, self.dataset))
        return ((codes - self.c_) ** 2).sum(dim=1).cpu().numpy()

    def set_threshold(self, X_normal, q: float | None = None) -> float:
        """Set ``threshold_`` to the q-th percentile score of clean normal images (N, C, H, W)."""
        self.q = float(self.q if q is None else q)
        self.threshold_ = percentile_threshold(self.decision_function(X_normal), self.q)
        return self.threshold_

    def predict(self, X) -> np.ndarray:
        """1 = anomaly (score > threshold_), 0 = normal: (N,) int."""
        if self.threshold_ is None:
            raise RuntimeError("no threshold_ yet: fit with X_val=..., or call set_threshold(X_normal)")
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict:
        self._require_fitted()
        return {"format": "badsad-deepsad-v1", "config": self.config(),
                "net": {k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
                "c": self.c_.detach().cpu(), "threshold": self.threshold_,
                "history": list(self.history_), "ae_history": list(self.ae_history_)}

    def save(self, path) -> None:
        """Write the fitted model to ``path`` atomically (loadable with weights_only=True)."""
        save_torch(path, self.state())

    @classmethod
    def load(cls, path, device=None) -> "DeepSAD":
        """Load a model saved by ``save``; only tensors and plain values are read (weights_only=True)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:
            raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
        return cls.from_state(state, device=device, source=str(path))

    @classmethod
    def from_state(cls, state, device=None, source: str = "state") -> "DeepSAD":
        if not isinstance(state, dict) or state.get("format") != "badsad-deepsad-v1":
            raise CheckpointError(f"{source} is not a BadSAD DeepSAD checkpoint (format 'badsad-deepsad-v1' expected)")
        config = dict(state["config"])
        config["milestones"] = tuple(config["milestones"])
        config["ae_milestones"] = tuple(config["ae_milestones"])
        model = cls(**config, device=device, progress=False)
        model.net_ = build_encoder(model.dataset, model.bias).to(model.device)
        try:
            model.net_.load_state_dict(state["net"])
        except RuntimeError as err:
            raise CheckpointError(f"{source}: weights do not fit a {model.dataset} network: {err}") from err
        model.c_ = state["c"].to(model.device)
        model.threshold_ = state["threshold"]
        model.history_, model.ae_history_ = list(state["history"]), list(state["ae_history"])
        model.net_.eval()
        return model
