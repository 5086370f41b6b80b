"""Datasets as in-memory float tensors, and the one-class semi-supervised split.

Every image tensor is float32 in [0, 1], shaped (N, C, H, W). Labels are int64 class ids.

Files under the data root are not trusted: CIFAR-10's pickled batches are read by an unpickler
that builds plain containers and numpy arrays and nothing else (a batch that names any other
callable is refused, never run), and every file's image and label counts, shapes, dtypes and label
range are checked. A file that fails is a ``DatasetCorruptError`` naming it and what is wrong.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetCorruptError, DatasetNotFoundError
from .names import DATASETS

_ALIASES = {"fashion-mnist": "fmnist", "fashionmnist": "fmnist", "fashion_mnist": "fmnist", "cifar": "cifar10",
            "cifar-10": "cifar10"}
CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fmnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
_PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"


@dataclass
class ImageData:
    """A dataset's official train and test splits."""
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64 class ids
    x_test: torch.Tensor
    y_test: torch.Tensor


def dataset_name(name: str) -> str:
    """Canonical dataset name; raises ValueError naming the accepted ones."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return key


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: ``root`` if given, else ``$BADSAD_DATA``, else the package's ``data/``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("BADSAD_DATA")
    if env:
        return Path(env).expanduser()
    return _PACKAGE_DATA


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> ImageData:
    """Load ``name`` ("digits", "mnist", "fmnist", "cifar10") as float tensors in [0, 1].

    ``digits`` is scikit-learn's embedded 8x8 set (no download; a fixed stratified 2/3 : 1/3
    train/test split). The others are read from ``data_root(root)`` in torchvision's layout;
    ``download=True`` fetches them there first (needs a network).
    """
    name = dataset_name(name)
    if name == "digits":
        return _load_digits()
    root = data_root(root)
    if download:
        _download(name, root)
    if name == "cifar10":
        return _load_cifar10(root)
    return _load_idx(name, root)


def _load_digits() -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=1 / 3, random_state=0, stratify=digits.target)
    return ImageData("digits", x[idx_train], y[idx_train], x[idx_test], y[idx_test])


_IDX_FOLDERS = {"mnist": "MNIST", "fmnist": "FashionMNIST"}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _missing(name: str, root: Path, looked_for: Path) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name} is not in {root} (looked for {looked_for}). Either point BADSAD_DATA (or root=...) at a "
        f"folder that holds it in torchvision's layout, or download it once with download=True "
        f"(command line: --download), which needs a network.")


def _corrupt(path: Path, why: str) -> DatasetCorruptError:
    return DatasetCorruptError(f"{path} {why}; replace it with the original file (or a complete copy)")


def _read_idx(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """An IDX file of unsigned bytes whose dimensions after the first are ``shape[1:]`` (``shape[0]`` is -1)."""
    raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise _corrupt(path, f"is not an uncompressed IDX file of unsigned bytes ({len(raw)} bytes, "
                             f"first {raw[:4].hex() or 'none'}, expected 000008..)")
    ndim = raw[3]
    if ndim != len(shape):
        raise _corrupt(path, f"has {ndim} dimensions where {len(shape)} are expected")
    if len(raw) < 4 + 4 * ndim:
        raise _corrupt(path, f"is truncated inside its header ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if tuple(dims[1:]) != tuple(shape[1:]):
        raise _corrupt(path, f"holds items of shape {tuple(dims[1:])}, expected {tuple(shape[1:])}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise _corrupt(path, f"is truncated or padded: its header says {dims}, found {data.size} values")
    if dims[0] == 0:
        raise _corrupt(path, "holds no items")
    return data.reshape(dims)


def _checked_labels(path: Path, labels: np.ndarray, n_images: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n_images:
        raise _corrupt(path, f"holds {labels.size} labels for {n_images} images")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() > 9:
        raise _corrupt(path, f"holds labels outside the class ids 0-9 (dtype {labels.dtype}, "
                             f"range {labels.min()}..{labels.max()})")
    return labels.astype(np.int64)


class _CifarUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, bytes, numbers and numpy arrays; any other global is refused, not loaded."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("_codecs", "encode")}  # how protocol-2 pickles of Python 3 store bytes: str -> bytes, nothing else

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3, 32, 32) uint8, labels (n,) int64) from one CIFAR-10 python batch file."""
    try:
        with open(path, "rb") as fh:
            batch = _CifarUnpickler(fh, encoding="latin1").load()
    except Exception as err:  # anything the bytes can provoke means: not a CIFAR-10 batch
        raise _corrupt(path, f"is not a readable CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        found = sorted(map(str, batch))[:5] if isinstance(batch, dict) else type(batch).__name__
        raise _corrupt(path, f"is not a CIFAR-10 batch: a dict with 'data' and 'labels' expected, found {found}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or len(data) == 0:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"holds {what} as 'data'; expected a non-empty uint8 array of shape (n, 3072)")
    labels = batch["labels"]
    if not isinstance(labels, (list, np.ndarray)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise _corrupt(path, "holds 'labels' that are not a list of class ids")
    return data.reshape(-1, 3, 32, 32), _checked_labels(path, np.asarray(labels, dtype=np.int64), len(data))


def _load_idx(name: str, root: Path) -> ImageData:
    folder = root / _IDX_FOLDERS[name] / "raw"
    arrays = {}
    for split, (img_file, lbl_file) in _IDX_FILES.items():
        for f in (img_file, lbl_file):
            if not (folder / f).is_file():
                raise _missing(name, root, folder / f)
        images = _read_idx(folder / img_file, (-1, 28, 28))
        labels = _checked_labels(folder / lbl_file, _read_idx(folder / lbl_file, (-1,)), len(images))
        arrays[split] = (torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
                         torch.from_numpy(labels.astype(np.int64)))
    return ImageData(name, arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1])


def _load_cifar10(root: Path) -> ImageData:
    """Read CIFAR-10's python pickles directly: works for the full set and the md5-less subset."""
    folder = root / "cifar-10-batches-py"
    parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out = {}
    for split, files in parts.items():
        xs, ys = [], []
        for f in files:
            if not (folder / f).is_file():
                raise _missing("cifar10", root, folder / f)
            images, labels = _read_cifar_batch(folder / f)
            xs.append(images)
            ys.append(labels)
        out[split] = (torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0),
                      torch.from_numpy(np.concatenate(ys)))
    return ImageData("cifar10", out["train"][0], out["train"][1], out["test"][0], out["test"][1])


def _download(name: str, root: Path) -> None:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fmnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # urllib/http/socket errors differ by platform; name the fix instead
        raise DatasetNotFoundError(
            f"could not download {name} into {root} ({type(err).__name__}: {err}). With no network, copy the "
            f"dataset there in torchvision's layout, or set BADSAD_DATA to a folder that holds it.") from err


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


def _check_class(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 9:
        raise ValueError(f"{what} must be a class id from 0 to 9, got {value!r}")
    return int(value)


def make_split(data: ImageData, normal_class: int, known_anomaly_classes=None, labeled_ratio: float = 0.0,
               pollution_ratio: float = 0.0, val_ratio: float = 0.1, seed: int = 0) -> OneClassSplit:
    """Build the one-class split: normal class ``normal_class`` vs. the other nine.

    The normal training images are split into training and a held-out validation set
    (``val_ratio``). As in the reference code, ``labeled_ratio`` (gamma_l) and ``pollution_ratio``
    (gamma_p) are fractions of the final training set: labeled anomalies are drawn from
    ``known_anomaly_classes`` (default: the class after the normal one), unlabeled pollution from
    all anomaly classes, never the same image twice. The test set is the full test split.
    """
    normal_class = _check_class(normal_class, "normal_class")
    for value, what in ((labeled_ratio, "labeled_ratio"), (pollution_ratio, "pollution_ratio")):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{what}={value} must be in [0, 1)")
    if labeled_ratio + pollution_ratio >= 1.0:
        raise ValueError(f"labeled_ratio + pollution_ratio = {labeled_ratio + pollution_ratio} must be below 1")
    if not 0.0 <= float(val_ratio) < 1.0:
        raise ValueError(f"val_ratio={val_ratio} must be in [0, 1)")
    if known_anomaly_classes is None:
        known_anomaly_classes = ((normal_class + 1) % 10,) if labeled_ratio > 0 else ()
    elif isinstance(known_anomaly_classes, (int, np.integer)):
        known_anomaly_classes = (known_anomaly_classes,)
    known = tuple(_check_class(k, "known anomaly class") for k in known_anomaly_classes)
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
