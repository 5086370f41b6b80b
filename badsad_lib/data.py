"""Datasets as in-memory float tensors, and the one-class semi-supervised split.

Every image tensor is float32 in [0, 1], shaped (N, C, H, W). Labels are int64 class ids. Which
datasets exist, and how each is read, is ``registry``'s (the built-in file formats are in
``readers``); ``load_dataset`` checks whatever a loader returns before anything trains on it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetCorruptError
from .readers import ImageData
from .registry import dataset_info, dataset_name

__all__ = ["ImageData", "OneClassSplit", "data_root", "dataset_name", "load_dataset", "make_split"]
_PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``root`` if given, else ``$BADSAD_DATA``, else the package's ``data/``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("BADSAD_DATA")
    if env:
        return Path(env).expanduser()
    return _PACKAGE_DATA


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> ImageData:
    """Load a registered dataset ("digits", "mnist", "fmnist", "cifar10", or one of your own) as float tensors.

    ``digits`` is scikit-learn's embedded 8x8 set (no download). The others are read from
    ``data_root(root)`` in torchvision's layout; ``download=True`` fetches them there first (needs a
    network). The splits are checked against the registry: image shape, dtype, range, label ids.
    """
    info = dataset_info(name)
    folder = data_root(root)
    if download and info.download is not None:
        info.download(folder)
    data = info.load(folder)
    _check_loaded(data, info)
    return data


def _check_loaded(data, info) -> None:
    """Raise DatasetCorruptError unless ``data`` is the ImageData that ``info`` promises."""
    def bad(why):
        return DatasetCorruptError(f"the {info.name} loader returned {why}; its registry entry expects images "
                                   f"(N, {', '.join(map(str, info.architecture.image_shape))}) float32 in [0, 1] "
                                   f"and labels 0..{info.n_classes - 1}")
    if not isinstance(data, ImageData):
        raise bad(f"a {type(data).__name__}, not an ImageData")
    if data.name != info.name:
        raise bad(f"data named {data.name!r}")
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or tuple(x.shape[1:]) != \
                info.architecture.image_shape or x.ndim != 4 or len(x) == 0:
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise bad(f"{split} images {what}")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise bad(f"{split} images outside [0, 1]")
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (len(x),):
            what = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise bad(f"{split} labels {what} for {len(x)} images")
        if y.min() < 0 or y.max() >= info.n_classes:
            raise bad(f"{split} labels {int(y.min())}..{int(y.max())}")


@dataclass
class OneClassSplit:
    """The semi-supervised one-class split (Ruff et al., ICLR 2020, section 4: gamma_l, gamma_p).

    ``semi_targets``: 0 = unlabeled, +1 = labeled normal, -1 = labeled anomaly (reference convention).
    ``y_test``: 0 = normal class, 1 = any other class.
    """
    dataset: str
    normal_class: int
    known_anomaly_classes: tuple[int, ...]
    x_train: torch.Tensor          # (N, C, H, W)
    semi_targets: torch.Tensor     # (N,) in {0, +1, -1}
    train_labels: torch.Tensor     # (N,) original class ids
    train_index: np.ndarray        # (N,) indices into the dataset's train split
    x_val: torch.Tensor            # (V, C, H, W) held-out clean normals, for thresholds
    val_index: np.ndarray
    x_test: torch.Tensor           # (T, C, H, W) the full official test split
    y_test: torch.Tensor           # (T,) 0 normal / 1 anomaly
    test_labels: torch.Tensor      # (T,) original class ids
    settings: dict = field(default_factory=dict)

    @property
    def x_test_normal(self) -> torch.Tensor:
        return self.x_test[self.y_test == 0]

    @property
    def x_test_anomalous(self) -> torch.Tensor:
        return self.x_test[self.y_test == 1]

    def counts(self) -> dict:
        st = self.semi_targets
        return {"train_unlabeled_normal": int(((st == 0) & (self.train_labels == self.normal_class)).sum()),
                "train_polluted": int(((st == 0) & (self.train_labels != self.normal_class)).sum()),
                "train_labeled_anomalies": int((st == -1).sum()),
                "validation_normal": len(self.val_index),
                "test_normal": int((self.y_test == 0).sum()), "test_anomalous": int((self.y_test == 1).sum())}


def _check_class(value, what: str, n_classes: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < n_classes:
        raise ValueError(f"{what} must be a class id from 0 to {n_classes - 1}, got {value!r}")
    return int(value)


def make_split(data: ImageData, normal_class: int, known_anomaly_classes=None, labeled_ratio: float = 0.0,
               pollution_ratio: float = 0.0, val_ratio: float | None = None, seed: int = 0) -> OneClassSplit:
    """Build the one-class split: normal class ``normal_class`` vs. all the other classes.

    The normal training images are split into training and a held-out validation set
    (``val_ratio``; None: the dataset's registered share). As in the reference code, ``labeled_ratio`` (gamma_l) and ``pollution_ratio``
    (gamma_p) are fractions of the final training set: labeled anomalies are drawn from
    ``known_anomaly_classes`` (default: the class after the normal one), unlabeled pollution from
    all anomaly classes, never the same image twice. The test set is the full test split.
    """
    info = dataset_info(data.name)
    n_classes, val_ratio = info.n_classes, info.val_ratio if val_ratio is None else val_ratio
    normal_class = _check_class(normal_class, "normal_class", n_classes)
    for value, what in ((labeled_ratio, "labeled_ratio"), (pollution_ratio, "pollution_ratio")):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{what}={value} must be in [0, 1)")
    if labeled_ratio + pollution_ratio >= 1.0:
        raise ValueError(f"labeled_ratio + pollution_ratio = {labeled_ratio + pollution_ratio} must be below 1")
    if not 0.0 <= float(val_ratio) < 1.0:
        raise ValueError(f"val_ratio={val_ratio} must be in [0, 1)")
    if known_anomaly_classes is None:
        known_anomaly_classes = ((normal_class + 1) % n_classes,) if labeled_ratio > 0 else ()
    elif isinstance(known_anomaly_classes, (int, np.integer)):
        known_anomaly_classes = (known_anomaly_classes,)
    known = tuple(_check_class(k, "known anomaly class", n_classes) for k in known_anomaly_classes)
    if normal_class in known:
        raise ValueError(f"known anomaly classes {known} must not include the normal class {normal_class}")
    if labeled_ratio > 0 and not known:
        raise ValueError("labeled_ratio > 0 needs at least one known anomaly class")

    rng = np.random.default_rng(seed)
    y = data.y_train.numpy()
    normal = rng.permutation(np.flatnonzero(y == normal_class))
    if normal.size == 0:
        raise ValueError(f"class {normal_class} has no training images in {data.name}")
    n_val = int(round(val_ratio * normal.size))
    val_idx, normal_train = np.sort(normal[:n_val]), normal[n_val:]
    free = 1.0 - labeled_ratio - pollution_ratio
    n_labeled = int(round(normal_train.size * labeled_ratio / free))
    n_polluted = int(round(normal_train.size * pollution_ratio / free))
    known_pool = rng.permutation(np.flatnonzero(np.isin(y, known)))
    if n_labeled > known_pool.size:
        raise ValueError(f"labeled_ratio={labeled_ratio} needs {n_labeled} labeled anomalies but classes {known} "
                         f"have only {known_pool.size} training images")
    labeled_idx = known_pool[:n_labeled]
    pollution_pool = rng.permutation(np.setdiff1d(np.flatnonzero(y != normal_class), labeled_idx))
    if n_polluted > pollution_pool.size:
        raise ValueError(f"pollution_ratio={pollution_ratio} needs {n_polluted} anomalies, only "
                         f"{pollution_pool.size} are left")
    polluted_idx = pollution_pool[:n_polluted]

    train_idx = np.concatenate([normal_train, polluted_idx, labeled_idx])
    semi = np.concatenate([np.zeros(normal_train.size + n_polluted, np.int64), -np.ones(n_labeled, np.int64)])
    order = np.argsort(train_idx, kind="stable")  # a fixed, seed-independent order of the training set
    train_idx, semi = train_idx[order], semi[order]
    t = torch.from_numpy(train_idx)
    return OneClassSplit(
        dataset=data.name, normal_class=normal_class, known_anomaly_classes=known,
        x_train=data.x_train[t], semi_targets=torch.from_numpy(semi), train_labels=data.y_train[t],
        train_index=train_idx, x_val=data.x_train[torch.from_numpy(val_idx)], val_index=val_idx,
        x_test=data.x_test, y_test=(data.y_test != normal_class).long(), test_labels=data.y_test,
        settings={"labeled_ratio": labeled_ratio, "pollution_ratio": pollution_ratio, "val_ratio": val_ratio,
                  "seed": seed})
