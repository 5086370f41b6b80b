"""DeepSAD (Ruff et al., "Deep Semi-Supervised Anomaly Detection", ICLR 2020) as a scikit-learn /
PyOD style estimator, and Deep SVDD (Ruff et al., ICML 2018), which is DeepSAD without labels.

Objective, per mini-batch of n samples with semi-supervised targets y in {0, +1, -1}:

    L = 1/n * sum_i  ||phi(x_i) - c||^2                      if y_i = 0   (unlabeled)
                     eta * (||phi(x_i) - c||^2 + 1e-6) ** y_i  if y_i = +-1 (labeled)

so labeled anomalies (y = -1) are pushed away through the inverse distance. Weight decay comes
through Adam. The anomaly score is ||phi(x) - c||^2 (higher = more anomalous).

Fail-closed: training and ``transform`` refuse images with NaN or infinite pixels;
``decision_function`` scores such an image +inf (so ``predict`` calls it an anomaly, never
normal); a checkpoint whose weights, center or threshold are not finite is refused.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import CheckpointError
from .device import eval_batch_size, get_device
from .io import save_torch
from .metrics import threshold as percentile_threshold
from .networks import Autoencoder, architecture, build_encoder, in_memory_format, initialise, place
from .registry import DETECTORS, dataset_name, dataset_names, detector_info, settings_for
from .settings import TrainingSettings
from .validation import check_images, check_int, check_number, check_percentile, check_seed, check_targets

EPS = 1e-6
CENTER_EPS = 0.1
FORMAT = "badsad-deepsad-v2"

# objective(phi, c, x_batch (B, C, H, W), y_batch (B,), idx (B,)) -> scalar loss
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# callback(phase "autoencoder" | "DeepSAD", epoch (1-based), mean loss of that epoch), e.g. a live loss plot
EpochCallback = Callable[[str, int, float], None]
# center_rule(codes (N, rep_dim)) -> c (rep_dim,)
CenterRule = Callable[[torch.Tensor], torch.Tensor]


def deepsad_loss(dist: torch.Tensor, semi_targets: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """Mean DeepSAD loss of squared distances ``dist`` (n,) with targets (n,) in {0, +1, -1}."""
    labeled = eta * (dist + EPS) ** semi_targets.to(dist.dtype)
    return torch.where(semi_targets == 0, dist, labeled).mean()


def center_from(codes: torch.Tensor, eps: float = CENTER_EPS) -> torch.Tensor:
    """c = mean code (rep_dim,), with every |c_k| < eps moved to +-eps (keeping its sign; 0 -> +eps)."""
    c = codes.mean(dim=0)
    small = c.abs() < eps
    return torch.where(small & (c < 0), torch.full_like(c, -eps), torch.where(small, torch.full_like(c, eps), c))


def batches(n: int, batch_size: int, generator: torch.Generator, device=None):
    """Shuffled index batches over range(n); a trailing batch of one (which BatchNorm cannot take) joins the last.

    The permutation is drawn on ``generator`` (CPU) and copied to ``device`` once per epoch, so a GPU
    step loop indexes with device tensors and never waits for the host.
    """
    perm = torch.randperm(n, generator=generator)
    if device is not None:
        perm = perm.to(device)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for i, s in enumerate(starts):
        yield perm[s: starts[i + 1] if i + 1 < len(starts) else n]


def train_epochs(module: nn.Module, device: torch.device, n: int, batch_size: int, epochs: int, lr: float,
                 weight_decay: float, milestones, desc: str, gens: list[torch.Generator], batch_loss,
                 progress: bool = False, callbacks=None) -> list[list[float]]:
    """Train ``module``'s parameters for K models at once (one model: K = 1) with Adam and x0.1 steps at
    ``milestones``. Each epoch, model k's mini-batches come from ``batches(n, batch_size, gens[k])``;
    ``batch_loss([idx_1, ..., idx_K])`` -> (K,) losses of one step. Returns each model's mean loss per epoch;
    ``callbacks[k](desc, epoch, loss)`` is called after every epoch.

    The loop itself adds no wait for the device: the epochs' losses are summed on the device (in float64
    where the device has it, so the CPU figures equal a host-side sum bit for bit) and read once per
    epoch, the batch indices are on the device, Adam is fused (CUDA and the CPU), and CUDA uses cuDNN's
    autotuner. (BadSAD's objective waits for nothing either: its terms choose rows by 0/1 weights; only a
    learner's own term functions get the chosen rows by boolean indexing, which waits.) The models' losses
    are independent, so the gradient of their sum is each model's own gradient, and Adam acts element by
    element: K models trained here take the steps each would take alone.
    """
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    fused = device.type in ("cuda", "cpu")  # one kernel for all parameters' updates (MPS: the default loop)
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
    histories: list[list[float]] = [[] for _ in gens]
    module.train()
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        total = torch.zeros(len(gens), dtype=sum_dtype, device=device)
        for idxs in zip(*(batches(n, batch_size, g, device) for g in gens)):
            losses = batch_loss(list(idxs))
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            total += losses.detach().to(sum_dtype) * len(idxs[0])
        sched.step()
        for history, value in zip(histories, total.tolist()):
            history.append(value / n)
        bad = [h[-1] for h in histories if not math.isfinite(h[-1])]
        if bad:
            raise FloatingPointError(
                f"the {desc} loss became {bad[0]} at epoch {len(histories[0])} although every input is finite: "
                f"the optimisation diverged, so lower the learning rate (lr={lr:g})")
        bar.set_postfix(loss=f"{histories[0][-1]:.4g}")
        for k, callback in enumerate(callbacks or ()):
            if callback is not None:
                callback(desc, len(histories[k]), histories[k][-1])
    module.eval()
    return histories


class DeepSAD:
    """Deep Semi-supervised Anomaly Detection with autoencoder pretraining.

    ``settings``: a ``TrainingSettings`` (default: the paper's, or ``DIGITS`` for digits); keyword
    ``overrides`` change single fields (``DeepSAD("mnist", QUICK, epochs=5)``).
    After ``fit``: ``net_`` (phi), ``c_`` (rep_dim,) the fixed center, ``threshold_`` (a score),
    ``history_`` (mean loss per epoch) and ``ae_history_`` (reconstruction MSE per pixel, per epoch).
    """

    detector = "deepsad"  # its entry in registry.DETECTORS

    def __init__(self, dataset: str = "mnist", settings: TrainingSettings | None = None, *, q: float = 95.0,
                 bias: bool = False, device=None, seed: int = 0, progress: bool = True, **overrides):
        self._params = {"dataset": dataset, "q": q, "bias": bias, "device": device, "seed": seed, "progress": progress}
        self.dataset = dataset_name(dataset)
        settings = settings_for(self.dataset, quick=False) if settings is None else settings
        if not isinstance(settings, TrainingSettings):
            raise ValueError(f"settings must be a TrainingSettings (e.g. badsad_lib.settings.QUICK), "
                             f"got {type(settings).__name__}")
        self.settings = settings.replace(**overrides) if overrides else settings
        self.q, self.seed = check_percentile(q), check_seed(seed)
        self.bias = bool(bias)  # True breaks the anti-collapse rules (lesson 01's demonstration only)
        self.device = device if isinstance(device, torch.device) else get_device(device)
        self.progress = progress
        self.net_: nn.Module | None = None
        self.c_: torch.Tensor | None = None
        self.threshold_: float | None = None
        self.history_: list[float] = []
        self.ae_history_: list[float] = []
        self.fit_seconds_: float | None = None
        self.stack_ = 1  # how many models were trained at once with this one (badsad_lib.stacked)
        self.trained_for_: str | None = None  # the run a cached checkpoint was trained for (badsad_lib.cache)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments as given (settings with any overrides applied), scikit-learn's way:
        ``sklearn.base.clone(model)`` is then an unfitted model with the same parameters."""
        return {**self._params, "settings": self.settings}

    def set_params(self, **params) -> "DeepSAD":
        """Change constructor arguments (checked as the constructor checks them); the model is unfitted after."""
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}: choose from {', '.join(self.get_params())}")
        self.__init__(**{**self.get_params(), **params})
        return self

    @property
    def encoder(self) -> nn.Module:
        """phi, the network that maps images to codes (defenses prune and recalibrate its layers); None before fit."""
        return self.net_

    # ------------------------------------------------------------------ training
    def fit(self, X, y=None, *, X_val=None, objective: Objective | None = None,
            callback: EpochCallback | None = None, center_rule: CenterRule | None = None):
        """Pretrain an autoencoder on X, copy its encoder into phi, fix c, then train phi.

        X: (N, C, H, W) finite images in [0, 1]; y: (N,) semi-supervised targets in {0, +1, -1}
        (None = all 0). X_val: held-out clean normals; ``threshold_`` is their q-th percentile
        score (else the training images with y >= 0 are used). ``objective(phi, c, x, y, idx)``
        replaces the DeepSAD mini-batch loss (the BadSAD attack passes one; idx are the batch's
        indices into X). ``center_rule(codes)`` replaces ``center_from``. ``callback(phase, epoch,
        loss)`` is called after every epoch of both phases. Every input is checked before training.
        The weights and batch orders come from generators seeded with ``seed`` and owned by this fit;
        nothing process-wide is seeded, so fits in threads of one process do not disturb each other.
        """
        start = time.perf_counter()
        X, y, X_val = self._fit_inputs(X, y, X_val)
        init, gen = self._generators()
        s = self.settings

        self.net_ = place(initialise(build_encoder(self.dataset, self.bias), init), self.device)
        self.ae_history_ = []
        if s.ae_epochs > 0:
            ae = place(initialise(Autoencoder(self.dataset, self.bias), init), self.device)
            self.ae_history_ = self._pretrain(ae, X, gen, callback)
            self.net_.load_state_dict(ae.encoder.state_dict())
        self._set_center(X, center_rule)
        net, c = self.net_, self.c_

        def batch_loss(idx):
            if objective is None:
                return deepsad_loss(((net(X[idx]) - c) ** 2).sum(dim=1), y[idx], s.eta)
            return objective(net, c, X[idx], y[idx], idx)
        self.history_ = self._epochs(net, len(X), s.batch_size, s.epochs, s.lr, s.weight_decay, s.milestones,
                                     "DeepSAD", gen, batch_loss, callback)
        self.set_threshold(X_val if X_val is not None else X[y >= 0])
        self.fit_seconds_, self.stack_ = time.perf_counter() - start, 1
        return self

    def _fit_inputs(self, X, y, X_val):
        """``fit``'s inputs checked and on the device: (X, y) as trained on (``_training_set``), X_val or None."""
        X = check_images(X, self.dataset, finite=True, min_count=2)
        y = check_targets(y, len(X))
        if X_val is not None:
            X_val = check_images(X_val, self.dataset, "X_val", finite=True, min_count=1)
        X, y = self._training_set(X, y)
        return self._on_device(X), y.to(self.device), X_val

    def _generators(self) -> tuple[torch.Generator, torch.Generator]:
        """(weights, batch order): this fit's own streams, seeded with ``seed``; nothing process-wide is seeded."""
        return torch.Generator().manual_seed(self.seed), torch.Generator().manual_seed(self.seed)

    def _set_center(self, X: torch.Tensor, center_rule: CenterRule | None = None) -> None:
        """Fix ``c_`` from the codes of the training images X (``center_from``, or ``center_rule``)."""
        c = (center_rule or center_from)(self._codes(X))
        self.c_ = torch.as_tensor(c, dtype=torch.float32, device=self.device).reshape(-1)
        if self.c_.shape != (architecture(self.dataset).rep_dim,) or not torch.isfinite(self.c_).all():
            raise ValueError(f"the center rule returned {tuple(self.c_.shape)} values "
                             f"(finite: {bool(torch.isfinite(self.c_).all())}); it must give one finite value per "
                             f"code coordinate, shape ({architecture(self.dataset).rep_dim},)")

    def _on_device(self, X: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) on the model's device, in the memory format its network uses there."""
        return in_memory_format(X, self.device)

    @property
    def uses_labels(self) -> bool:
        return detector_info(self.detector).uses_labels

    def _training_set(self, X: torch.Tensor, y: torch.Tensor):
        """Everything it is given, or (a detector that uses no labels) the unlabeled images only."""
        if self.uses_labels:
            return X, y
        keep = y == 0
        if int(keep.sum()) < 2:
            raise ValueError(f"{detector_info(self.detector).title} trains on unlabeled images only, and only "
                             f"{int(keep.sum())} of the {len(y)} given are unlabeled")
        return X[keep], y[keep]

    def _epochs(self, module: nn.Module, n: int, batch_size: int, epochs: int, lr: float, weight_decay: float,
                milestones, desc: str, gen: torch.Generator, batch_loss, callback=None) -> list[float]:
        """``train_epochs`` for this one model: ``batch_loss(idx)`` -> the loss of one mini-batch."""
        return train_epochs(module, self.device, n, batch_size, epochs, lr, weight_decay, milestones, desc, [gen],
                            lambda idxs: batch_loss(idxs[0]).reshape(1), self.progress,
                            None if callback is None else [callback])[0]

    def _pretrain(self, ae: Autoencoder, X: torch.Tensor, gen: torch.Generator, callback=None) -> list[float]:
        """Reconstruction pretraining; the loss is the per-pixel mean squared error, as in the reference code."""
        s = self.settings

        def batch_loss(idx):
            xb = X[idx]
            return ((ae(xb) - xb) ** 2).mean()
        return self._epochs(ae, len(X), s.batch_size, s.ae_epochs, s.ae_lr, s.ae_weight_decay, s.ae_milestones,
                            "autoencoder", gen, batch_loss, callback)

    def fine_tune(self, X, y=None, *, epochs: int = 5, lr: float = 1e-4, X_val=None):
        """Continue training phi on X (N, C, H, W) with targets y (default all 0) and the DeepSAD loss.

        The center c stays frozen; ``threshold_`` is re-set from X_val when given. Model repair
        (fine-tuning, fine-pruning) and trigger unlearning use this.
        """
        self._require_fitted()
        epochs, lr = check_int(epochs, "epochs", 0), check_number(lr, "lr", 0.0, low_open=True)
        X = self._on_device(check_images(X, self.dataset, finite=True, min_count=2))
        y = check_targets(y, len(X)).to(self.device)
        if X_val is not None:
            X_val = check_images(X_val, self.dataset, "X_val", finite=True, min_count=1)
        gen = torch.Generator().manual_seed(self.seed + 1)
        net, c, eta = self.net_, self.c_, self.settings.eta

        def batch_loss(idx):
            return deepsad_loss(((net(X[idx]) - c) ** 2).sum(dim=1), y[idx], eta)
        self.history_ = self.history_ + self._epochs(net, len(X), min(self.settings.batch_size, len(X)), epochs, lr, self.settings.weight_decay, (), "fine-tune", gen,
                                                     batch_loss)
        if X_val is not None:
            self.set_threshold(X_val)
        return self

    def copy(self) -> "DeepSAD":
        """An independent copy (weights, center, threshold, histories)."""
        return type(self).from_state(self.state(), device=self.device)

    # ------------------------------------------------------------------ inference
    def _require_fitted(self):
        if self.net_ is None or self.c_ is None:
            raise RuntimeError("this DeepSAD is not fitted yet: call fit(X) or DeepSAD.load(path) first")

    @torch.inference_mode()
    def _codes(self, X: torch.Tensor) -> torch.Tensor:
        """Codes (N, rep_dim) of X, in eval mode, in batches of ``device.eval_batch_size``."""
        if len(X) == 0:
            return torch.empty(0, architecture(self.dataset).rep_dim, device=self.device)
        batch_size = eval_batch_size(self.device, architecture(self.dataset).widest_activation)
        was_training = self.net_.training
        self.net_.eval()
        out = torch.cat([self.net_(self._on_device(X[i:i + batch_size])) for i in range(0, len(X), batch_size)])
        self.net_.train(was_training)
        return out

    def transform(self, X) -> np.ndarray:
        """Latent codes phi(X): (N, rep_dim). Images with NaN or infinite pixels are refused."""
        self._require_fitted()
        return self._codes(check_images(X, self.dataset, finite=True)).cpu().numpy()

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable scores ||phi(x) - c||^2 (N,) of a batch on the model's device (eval mode)."""
        self._require_fitted()
        self.net_.eval()
        return ((self.net_(x) - self.c_) ** 2).sum(dim=1)

    def decision_function(self, X) -> np.ndarray:
        """Anomaly scores ||phi(x) - c||^2: (N,), higher = more anomalous.

        Fail-closed: an image with a NaN or infinite pixel, or one whose code is not finite, scores +inf.
        """
        self._require_fitted()
        X = check_images(X, self.dataset)
        bad = ~torch.isfinite(X).flatten(1).all(dim=1)
        if bad.any():
            X = torch.where(bad.view(-1, 1, 1, 1), torch.zeros_like(X), X)
        scores = ((self._codes(X) - self.c_) ** 2).sum(dim=1).cpu().numpy().astype(np.float64)
        scores[bad.numpy() | ~np.isfinite(scores)] = np.inf
        return scores

    def set_threshold(self, X_normal, q: float | None = None) -> float:
        """Set ``threshold_`` to the q-th percentile score of clean normal images (N, C, H, W), N >= 1."""
        q = self.q if q is None else check_percentile(q)
        X_normal = check_images(X_normal, self.dataset, "X_normal", finite=True, min_count=1)
        self.q, self.threshold_ = q, percentile_threshold(self.decision_function(X_normal), q)
        return self.threshold_

    def predict(self, X) -> np.ndarray:
        """1 = anomaly (score > threshold_), 0 = normal: (N,) int. Non-finite images are anomalies."""
        if self.threshold_ is None:
            raise RuntimeError("no threshold_ yet: fit with X_val=..., or call set_threshold(X_normal)")
        if not math.isfinite(self.threshold_):
            raise RuntimeError(f"threshold_ is {self.threshold_}; call set_threshold(X_normal) to set a finite one")
        return (~(self.decision_function(X) <= self.threshold_)).astype(np.int64)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict:
        self._require_fitted()
        return {"format": FORMAT, "detector": detector_info(self.detector).title, "dataset": self.dataset,
                "settings": self.settings.to_dict(), "q": self.q, "bias": self.bias, "seed": self.seed,
                "net": {k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
                "c": self.c_.detach().cpu(), "threshold": self.threshold_,
                "history": list(self.history_), "ae_history": list(self.ae_history_),
                "trained_for": self.trained_for_, "stack": self.stack_}

    def save(self, path) -> None:
        """Write the fitted model to ``path`` atomically (loadable with weights_only=True)."""
        save_torch(path, self.state())

    @classmethod
    def load(cls, path, device=None) -> "DeepSAD":
        """Load a model saved by ``save``; only tensors and plain values are read (weights_only=True)."""
        _check_size(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:
            raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
        return cls.from_state(state, device=device, source=str(path))

    @classmethod
    def from_state(cls, state, device=None, source: str = "state") -> "DeepSAD":
        """Rebuild a model from ``state()``; anything incomplete, foreign or non-finite is a CheckpointError."""
        state = _validated_state(state, source)
        kind = detector_class(state["detector"]) if cls is DeepSAD else cls
        try:
            model = kind(state["dataset"], TrainingSettings.from_dict(state["settings"]), q=state["q"],
                         bias=state["bias"], seed=state["seed"], device=device, progress=False)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{source}: its settings are not valid ({err})") from err
        model.net_ = place(build_encoder(model.dataset, model.bias), model.device)
        expected = {k: tuple(v.shape) for k, v in model.net_.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state["net"].items()}
        if found != expected:
            wrong = sorted(set(found) ^ set(expected)) or sorted(k for k in found if found[k] != expected[k])
            name = wrong[0]
            raise CheckpointError(f"{source}: its weights do not fit a {model.dataset} network (bias={model.bias}): "
                                  f"{name!r} is {found.get(name, 'missing')}, the network has "
                                  f"{expected.get(name, 'no such weight')}")
        model.net_.load_state_dict(state["net"])
        model.c_ = state["c"].float().to(model.device)
        model.threshold_ = None if state["threshold"] is None else float(state["threshold"])
        model.history_, model.ae_history_ = list(state["history"]), list(state["ae_history"])
        model.trained_for_ = state.get("trained_for")
        model.stack_ = state.get("stack", 1)  # checkpoints from before stacking: trained alone
        model.net_.eval()
        return model


class DeepSVDD(DeepSAD):
    """One-class Deep SVDD: DeepSAD without supervision. Labeled samples are dropped, so it trains on
    the unlabeled data alone with the plain distance loss (Ruff et al., ICML 2018, soft-boundary-free)."""

    detector = "deepsvdd"


def detector_class(name: str) -> type[DeepSAD]:
    """The class of a registered detector, by name or title ("deepsvdd" or "DeepSVDD")."""
    info = detector_info(name)
    return next(cls for cls in (DeepSAD, *DeepSAD.__subclasses__()) if cls.detector == info.name)


_STATE_KEYS = ("format", "detector", "dataset", "settings", "q", "bias", "seed", "net", "c", "threshold", "history",
               "ae_history")


MAX_CHECKPOINT_BYTES = 64 * 2**20  # the largest real checkpoint (CIFAR-10's encoder) is about 2 MB


def _check_size(path) -> None:
    """Refuse a checkpoint whose file, or whose zip members once unpacked, exceed MAX_CHECKPOINT_BYTES,
    before anything is allocated for it (a small compressed file can unpack to gigabytes)."""
    import os
    import stat
    import zipfile

    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path} is not a regular file (a folder, pipe or device); a checkpoint is a file")
    unpacked = info.st_size
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(member.file_size for member in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable checkpoint (its zip archive: {err})") from err
    if max(unpacked, info.st_size) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path} would take {max(unpacked, info.st_size) / 2**20:.0f} MB to read, more than "
                              f"the {MAX_CHECKPOINT_BYTES // 2**20} MB any BadSAD checkpoint needs; refused unread")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validated_state(state, source: str) -> dict:
    """The checkpoint ``state`` if every field has the type and range it should; else a CheckpointError naming
    the first that does not (weight names and shapes are checked against the architecture in ``from_state``)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{source} is not a BadSAD DeepSAD checkpoint: format {FORMAT!r} expected, "
                              f"found {found!r}")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{source} is incomplete: it lacks {', '.join(missing)}")
    titles = [detector_info(d).title for d in DETECTORS]
    if not isinstance(state["detector"], str) or state["detector"] not in titles:
        raise CheckpointError(f"{source}: unknown detector {state['detector']!r}; expected one of {', '.join(titles)}")
    if not isinstance(state["dataset"], str) or state["dataset"] not in dataset_names():
        raise CheckpointError(f"{source}: unknown dataset {state['dataset']!r}; expected one of "
                              f"{', '.join(dataset_names())}")
    if not isinstance(state["settings"], dict):
        raise CheckpointError(f"{source}: 'settings' must be a mapping, found {type(state['settings']).__name__}")
    for key in ("milestones", "ae_milestones"):  # a missing one is named by TrainingSettings.from_dict
        if key in state["settings"] and not isinstance(state["settings"][key], (list, tuple)):
            raise CheckpointError(f"{source}: settings {key!r} must be a list of epochs, "
                                  f"found {state['settings'].get(key)!r}")
    if not _is_number(state["q"]):
        raise CheckpointError(f"{source}: the percentile q {state['q']!r} is not a number")
    if not isinstance(state["bias"], bool):
        raise CheckpointError(f"{source}: 'bias' must be true or false, found {state['bias']!r}")
    if isinstance(state["seed"], bool) or not isinstance(state["seed"], int):
        raise CheckpointError(f"{source}: the seed {state['seed']!r} is not a whole number")
    net = state["net"]
    if not isinstance(net, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in net.items()):
        raise CheckpointError(f"{source}: 'net' must map layer names (strings) to tensors")
    for name, tensor in net.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: weight {name!r} holds NaN or infinite values")
    c, rep_dim = state["c"], architecture(state["dataset"]).rep_dim
    if not isinstance(c, torch.Tensor) or tuple(c.shape) != (rep_dim,):
        raise CheckpointError(f"{source}: the center c must be a tensor of shape ({rep_dim},)")
    if not torch.isfinite(c).all():
        raise CheckpointError(f"{source}: the center c holds NaN or infinite values")
    tau = state["threshold"]
    if tau is not None and (not _is_number(tau) or not math.isfinite(tau)):
        raise CheckpointError(f"{source}: the threshold {tau!r} is not a finite number")
    for key in ("history", "ae_history"):
        if not isinstance(state[key], list) or not all(_is_number(v) for v in state[key]):
            raise CheckpointError(f"{source}: {key!r} must be a list of numbers")
    stack = state.get("stack", 1)
    if isinstance(stack, bool) or not isinstance(stack, int) or stack < 1:
        raise CheckpointError(f"{source}: 'stack' (models trained at once) must be a whole number >= 1, found {stack!r}")
    if not isinstance(state.get("trained_for"), (str, type(None))):  # optional: older checkpoints lack it
        raise CheckpointError(f"{source}: 'trained_for' must be text, found {type(state['trained_for']).__name__}")
    return state
