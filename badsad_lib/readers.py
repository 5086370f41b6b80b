"""The built-in datasets' files, read into float tensors: scikit-learn's digits, MNIST and Fashion-MNIST
(IDX files), CIFAR-10 (python batches), in torchvision's layout under a data folder.

Nothing read here is trusted: CIFAR-10's pickled batches are read by an unpickler that builds plain
containers and numpy arrays and nothing else (a batch that names any other callable is refused, never
run), and every file's image and label counts, shapes, dtypes and label range are checked. A file that
fails is a ``DatasetCorruptError`` naming it and what is wrong. ``registry`` names these functions as
the built-in datasets' loaders; ``data.load_dataset`` calls them.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetCorruptError, DatasetNotFoundError


@dataclass
class ImageData:
    """A dataset's official train and test splits."""
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64 class ids
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(root: Path | None = None) -> ImageData:
    """scikit-learn's 1,797 8x8 digits (embedded, ``root`` unused): a fixed stratified 2/3 : 1/3 train/test split."""
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
    """MNIST or Fashion-MNIST from ``root/<MNIST|FashionMNIST>/raw``."""
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


def load_cifar10(root: Path) -> ImageData:
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


def load_mnist(root: Path) -> ImageData:
    return _load_idx("mnist", root)


def load_fmnist(root: Path) -> ImageData:
    return _load_idx("fmnist", root)


def _download(name: str, root: Path) -> None:
    """Fetch ``name`` into ``root`` with torchvision (needs a network)."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fmnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # urllib/http/socket errors differ by platform; name the fix instead
        raise DatasetNotFoundError(
            f"could not download {name} into {root} ({type(err).__name__}: {err}). With no network, copy the "
            f"dataset there in torchvision's layout, or set BADSAD_DATA to a folder that holds it.") from err


def download_mnist(root: Path) -> None:
    _download("mnist", root)


def download_fmnist(root: Path) -> None:
    _download("fmnist", root)


def download_cifar10(root: Path) -> None:
    _download("cifar10", root)
