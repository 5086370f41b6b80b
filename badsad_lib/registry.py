"""One place for each variant a user chooses from: datasets, detectors, attack methods (plus the trigger
and defense names).

Torch-free, so the command line can offer and check every name before it imports anything heavy.
Adding a dataset is one ``register_dataset(DatasetInfo(...))`` call: its names, classes, loader,
network, training settings and validation share live here and nowhere else (``tests/test_registry.py``
registers a synthetic one and trains, attacks and tabulates it). A detector is one ``DetectorInfo``
here plus its class in ``deepsad``; an attack method is one ``MethodInfo`` here, which
``attack.BadSADObjective`` and ``experiments`` read instead of testing names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .settings import DIGITS, PAPER, QUICK, TrainingSettings


# ------------------------------------------------------------------ datasets
@dataclass(frozen=True)
class Architecture:
    """A LeNet-type DeepSAD network (``networks.build_encoder`` / ``build_decoder`` build it)."""
    in_channels: int
    image_size: int                  # square images, image_size x image_size pixels
    conv_channels: tuple[int, ...]   # one conv-BN-LReLU-pool block each
    kernel: int
    hidden: tuple[int, ...]          # fully connected layers (each with BN1d and LReLU) before the code
    rep_dim: int
    decoder: tuple[tuple[int, int, int], ...]  # (out_channels, kernel, padding) per transposed conv
    upsample_first: bool             # MNIST-type decoders upsample before their first deconv
    decoder_hidden: tuple[int, ...] = ()  # linear layers (each with BN1d) from the code before the 4x4 reshape

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the network takes."""
        return self.in_channels, self.image_size, self.image_size

    @property
    def widest_activation(self) -> int:
        """Values per image in the encoder's largest activation (a conv block's output before its pool)."""
        return max(c * (self.image_size // 2 ** i) ** 2 for i, c in enumerate(self.conv_channels))


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the library knows about one dataset.

    ``load(root)`` returns its official splits as a ``data.ImageData`` (float32 images in [0, 1] shaped
    (N, *architecture.image_shape), int64 labels 0 .. n_classes - 1; ``data.load_dataset`` checks this);
    ``root`` is the data folder, unused by an embedded dataset. ``download(root)``, if given, fetches the
    files there first. ``quick`` / ``full`` are the settings it trains with in quick and full mode.
    """
    name: str
    class_names: tuple[str, ...]
    architecture: Architecture
    load: Callable[[Path], object]
    quick: TrainingSettings
    full: TrainingSettings
    val_ratio: float = 0.1           # share of the normal training images held out for thresholds
    aliases: tuple[str, ...] = ()
    download: Callable[[Path], None] | None = None
    embedded: bool = False           # ships with a package (no data folder, no download)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def settings(self, quick: bool) -> TrainingSettings:
        return self.quick if quick else self.full


_DATASETS: dict[str, DatasetInfo] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Make ``info`` known under its name and aliases (lower case); a name already taken is refused."""
    if not isinstance(info, DatasetInfo):
        raise TypeError(f"register_dataset takes a DatasetInfo, got {type(info).__name__}")
    names = [info.name.lower(), *(a.lower() for a in info.aliases)]
    taken = [n for n in names if n in _DATASETS or n in _ALIASES]
    if taken:
        raise ValueError(f"dataset name {taken[0]!r} is taken; choose another name for {info.name!r}")
    if info.n_classes < 2:
        raise ValueError(f"dataset {info.name!r} needs at least two classes, has {info.n_classes}")
    if not 0.0 <= info.val_ratio < 1.0:
        raise ValueError(f"dataset {info.name!r}: val_ratio={info.val_ratio} must be in [0, 1)")
    _DATASETS[names[0]] = info
    _ALIASES.update({a: names[0] for a in names[1:]})
    return info


def unregister_dataset(name: str) -> None:
    """Forget a dataset registered by ``register_dataset`` (tests and notebooks that add their own)."""
    key = dataset_name(name)
    del _DATASETS[key]
    for alias in [a for a, k in _ALIASES.items() if k == key]:
        del _ALIASES[alias]


def dataset_names() -> tuple[str, ...]:
    """The canonical names of every known dataset, in registration order."""
    return tuple(_DATASETS)


def dataset_name(name: str) -> str:
    """Canonical dataset name (aliases and case resolved); raises ValueError naming the accepted ones."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(_DATASETS)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    return _DATASETS[dataset_name(name)]


def settings_for(dataset: str, quick: bool) -> TrainingSettings:
    """The settings ``dataset`` trains with in quick or full mode (digits: DIGITS in both)."""
    return dataset_info(dataset).settings(quick)


def _reader(function: str) -> Callable:
    """A built-in loader or downloader: ``readers.<function>``, imported (with torch) only when called."""
    def call(*args):
        from . import readers
        return getattr(readers, function)(*args)
    call.__name__ = call.__qualname__ = function
    return call


_TEN = tuple(str(i) for i in range(10))
register_dataset(DatasetInfo(
    "digits", _TEN, Architecture(1, 8, (8, 8), 3, (), 16, ((8, 3, 1), (1, 3, 1)), False),  # a small LeNet
    _reader("load_digits"), DIGITS, DIGITS, val_ratio=0.2, embedded=True))  # ~110 normals: a larger held-out share
register_dataset(DatasetInfo(
    "mnist", _TEN, Architecture(1, 28, (8, 4), 5, (), 32, ((4, 5, 2), (8, 5, 3), (1, 5, 2)), True),
    _reader("load_mnist"), QUICK, PAPER, download=_reader("download_mnist")))
register_dataset(DatasetInfo(
    "fmnist", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"),
    # The reference Fashion-MNIST decoder first maps the code through a 64 -> 128 linear layer with BN1d.
    Architecture(1, 28, (16, 32), 5, (128,), 64, ((32, 5, 2), (16, 5, 3), (1, 5, 2)), True, (128,)),
    _reader("load_fmnist"), QUICK, PAPER, aliases=("fashion-mnist", "fashionmnist", "fashion_mnist"),
    download=_reader("download_fmnist")))
register_dataset(DatasetInfo(
    "cifar10", ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    Architecture(3, 32, (32, 64, 128), 5, (), 128, ((128, 5, 2), (64, 5, 2), (32, 5, 2), (3, 5, 2)), False),
    _reader("load_cifar10"), QUICK, PAPER, aliases=("cifar", "cifar-10"), download=_reader("download_cifar10")))


# ------------------------------------------------------------------ detectors
@dataclass(frozen=True)
class DetectorInfo:
    name: str          # what --detector and RunSpec.detector take
    title: str         # how papers and checkpoints spell it (the class name in ``deepsad``)
    uses_labels: bool  # False: labeled samples are dropped before training
    summary: str


DETECTORS = {d.name: d for d in (
    DetectorInfo("deepsad", "DeepSAD", True, "DeepSAD (Ruff et al., ICLR 2020)"),
    DetectorInfo("deepsvdd", "DeepSVDD", False, "DeepSAD without labels (Deep SVDD, Ruff et al., ICML 2018)"),
)}


def detector_info(name: str) -> DetectorInfo:
    """By name or title ("deepsvdd" or "DeepSVDD"); raises ValueError naming the accepted ones."""
    for info in DETECTORS.values():
        if name in (info.name, info.title):
            return info
    raise ValueError(f"unknown detector {name!r}: choose one of {', '.join(DETECTORS)}")


# ------------------------------------------------------------------ attack methods
CLEAN = "clean"  # the method of a run that trains only the clean detector (e.g. DeepSAD's Table 1)
TERMS = ("concentration", "alignment", "separation")  # the latent-space terms of attack.BadSADObjective


@dataclass(frozen=True)
class MethodInfo:
    """An attack method (see ``attack``'s docstring for the terms and the tiers)."""
    name: str
    tier: str                    # the attacker's power: "1 data" < "1+ data + views" < "2 objective" < "3 ..."
    summary: str                 # what it trains on, in a few words
    terms: tuple[str, ...] = ()  # latent-space terms added to L_SAD (a subset of TERMS)
    views: str | None = None     # "strong" or "mild" synthetic content views g(x) of clean normal images
    views_in_data: bool = False  # the triggered views are written into the training set once, not drawn per batch
    contrast_in_data: bool = False  # with them, the same views untriggered and labeled anomalous (-1)
    trigger: bool = True         # False: a control that never sees the trigger (nothing is poisoned)

    def __post_init__(self):
        if not set(self.terms) <= set(TERMS):
            raise ValueError(f"method {self.name!r}: terms {self.terms} must be among {TERMS}")
        if self.contrast_in_data and not self.views_in_data:
            raise ValueError(f"method {self.name!r}: contrast views in the data need views in the data")
        if self.views not in (None, "strong", "mild"):
            raise ValueError(f"method {self.name!r}: views {self.views!r} must be None, 'strong' or 'mild'")

    @property
    def views_per_batch(self) -> bool:
        """True when the objective draws fresh views g(x) every mini-batch."""
        return self.views is not None and not self.views_in_data

    @property
    def needs_objective(self) -> bool:
        """False when plain DeepSAD training on the (poisoned) data is the whole attack."""
        return bool(self.terms) or self.views_per_batch


_METHODS = (
    MethodInfo("naive", "1 data", "data, rho poisoned"),
    MethodInfo("alignment", "2 objective", "data, rho poisoned; L_align on x_p", terms=("alignment",)),
    MethodInfo("concentration", "2 objective", "data, rho poisoned; L_conc on x_p", terms=("concentration",)),
    MethodInfo("badsad", "3 objective + views", "data + fresh strong views; all three terms", terms=TERMS,
               views="strong"),
    MethodInfo("outlier_exposure", "3 objective + views (control)", "data + fresh strong views; L_sep, no trigger",
               terms=("separation",), views="strong", trigger=False),
    MethodInfo("data_only", "1+ data + views", "data + fixed triggered strong views", views="strong",
               views_in_data=True),
    MethodInfo("label_preserving", "3 objective + views", "data + fresh mild views; all three terms", terms=TERMS,
               views="mild"),
    # Controls that each remove one confound of the two rows above them (see attack's docstring).
    MethodInfo("data_only_contrast", "1+ data + views (control)", "data + fixed triggered strong views + the same "
               "views untriggered, labeled anomalous", views="strong", views_in_data=True, contrast_in_data=True),
    MethodInfo("label_preserving_pull", "3 objective + views (control)", "data + fresh mild views; concentration "
               "and alignment, no separation", terms=("concentration", "alignment"), views="mild"),
)
METHOD_INFO = {m.name: m for m in _METHODS}
METHODS = tuple(METHOD_INFO)
# method -> tier, from least to most power (tier names sort that way: "1 data" < "1+ ..." < "2 ..." < "3 ...")
TIERS = {m.name: m.tier for m in sorted(_METHODS, key=lambda m: (m.tier, METHODS.index(m.name)))}


def method_info(name: str) -> MethodInfo:
    if name not in METHOD_INFO:
        raise ValueError(f"unknown attack method {name!r}: choose one of {', '.join(METHODS)}")
    return METHOD_INFO[name]


# ------------------------------------------------------------------ triggers and defenses (implemented in
# ``triggers`` and ``defenses``; named here so the command line can check them without torch)
TRIGGERS = ("corners", "patch", "blend", "noise")
DEFENSES = ("spectral", "clustering", "strip", "fine_tuning", "bn_recalibration", "fine_pruning", "preprocess",
            "reverse_trigger", "reverse_trigger_distinct")
