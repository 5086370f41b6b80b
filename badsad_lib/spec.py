"""One run specification: everything that decides what a run trains and measures.

The command line, the experiment grid, the lessons' model cache and the experiment runner all
describe a run with a ``RunSpec``. Its canonical form (every field, resolved defaults included,
floats at full precision) is hashed into the file names of cached models and grid cells, so two
different runs can never share a file and no run can reuse a model trained with other settings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from .registry import CLEAN, DEFENSES, DETECTORS, METHODS, TRIGGERS, dataset_info, dataset_name, method_info, settings_for
from .settings import TrainingSettings
from .validation import check_fraction, check_int, check_seed



@dataclass(frozen=True)
class RunSpec:
    """A run: a one-class split, a detector trained on it with ``settings``, optionally attacked and defended.

    ``method``: "clean" or one of ``registry.METHODS``. ``strength`` None means the trigger's usual
    strength; ``known_anomaly_class`` None means the class after the normal one (when labeled_ratio > 0).
    ``weights``: the latent-space terms' weights (concentration, alignment, separation), for the methods that
    train with an objective; None (or all 1) is the library's default, and only other weights enter the key.
    """
    dataset: str
    normal_class: int
    seed: int = 0
    method: str = "badsad"
    detector: str = "deepsad"
    trigger: str = "corners"
    strength: float | None = None
    poison_ratio: float = 0.1
    labeled_ratio: float = 0.01
    known_anomaly_class: int | None = None
    pollution_ratio: float = 0.0
    settings: TrainingSettings | None = None
    defenses: tuple[str, ...] = field(default=())
    weights: tuple[float, float, float] | None = None  # (lambda_conc, lambda_align, lambda_sep); None: all 1

    def __post_init__(self):
        from .triggers import DEFAULT_STRENGTH, check_strength

        put = object.__setattr__
        put(self, "dataset", dataset_name(self.dataset))
        n_classes = dataset_info(self.dataset).n_classes
        put(self, "normal_class", check_int(self.normal_class, "normal class", 0, n_classes - 1))
        put(self, "seed", check_seed(self.seed))
        if self.method not in (CLEAN, *METHODS):
            raise ValueError(f"unknown method {self.method!r}: choose {CLEAN} or one of {', '.join(METHODS)}")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r}: choose one of {', '.join(DETECTORS)}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {self.trigger!r}: choose one of {', '.join(TRIGGERS)}")
        put(self, "strength", check_strength(DEFAULT_STRENGTH[self.trigger] if self.strength is None else self.strength))
        put(self, "poison_ratio", check_fraction(self.poison_ratio, "poison ratio"))
        if self.method == CLEAN or not method_info(self.method).trigger:
            put(self, "poison_ratio", 0.0)  # nothing is poisoned: one spelling per run
        put(self, "labeled_ratio", check_fraction(self.labeled_ratio, "labeled ratio", allow_one=False))
        put(self, "pollution_ratio", check_fraction(self.pollution_ratio, "pollution ratio", allow_one=False))
        if self.labeled_ratio + self.pollution_ratio >= 1:
            raise ValueError(f"labeled ratio + pollution ratio = {self.labeled_ratio + self.pollution_ratio:g} "
                             f"must be below 1")
        known = self.known_anomaly_class
        if self.labeled_ratio == 0:
            known = None
        elif known is None:
            known = (self.normal_class + 1) % n_classes
        else:
            known = check_int(known, "known anomaly class", 0, n_classes - 1)
            if known == self.normal_class:
                raise ValueError(f"the known anomaly class {known} must differ from the normal class")
        put(self, "known_anomaly_class", known)
        settings = settings_for(self.dataset, quick=True) if self.settings is None else self.settings
        if not isinstance(settings, TrainingSettings):
            raise ValueError(f"settings must be a TrainingSettings, got {type(settings).__name__}")
        put(self, "settings", settings)
        if isinstance(self.defenses, str):
            raise ValueError(f"defenses must be a list of names, got the string {self.defenses!r}")
        unknown = [d for d in dict.fromkeys(self.defenses) if d not in DEFENSES]
        if unknown:
            raise ValueError(f"unknown defense(s) {', '.join(map(repr, unknown))}: choose from {', '.join(DEFENSES)}")
        defenses = tuple(d for d in DEFENSES if d in self.defenses)  # each runs on its own: one order per run
        put(self, "defenses", defenses)
        put(self, "weights", _check_weights(self.weights, self.method))

    # ------------------------------------------------------------------ derived specs
    @property
    def attacked(self) -> bool:
        return self.method != CLEAN

    def clean(self) -> "RunSpec":
        """The clean run this one compares against: same split, detector and settings, nothing attacked."""
        return replace(self, method=CLEAN, defenses=(), weights=None)

    def replace(self, **changes) -> "RunSpec":
        return replace(self, **changes)

    # ------------------------------------------------------------------ identity
    def canonical(self) -> dict:
        """Every field, resolved; JSON-ready. Two runs are the same run exactly when these are equal."""
        return {"dataset": self.dataset, "normal_class": self.normal_class, "seed": self.seed,
                "method": self.method, "detector": self.detector, "trigger": self.trigger,
                "strength": self.strength, "poison_ratio": self.poison_ratio, "labeled_ratio": self.labeled_ratio,
                "known_anomaly_class": self.known_anomaly_class, "pollution_ratio": self.pollution_ratio,
                "settings": self.settings.to_dict(), "defenses": list(self.defenses),
                **({"weights": list(self.weights)} if self.weights is not None else {})}

    @property
    def digest(self) -> str:
        """12 hex digits of the SHA-256 of the canonical form (floats at full precision)."""
        text = json.dumps(self.canonical(), sort_keys=True, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        """A file-name-safe identity: readable prefix + digest of the whole specification."""
        return f"{self.dataset}_class{self.normal_class}_seed{self.seed}_{self.method}_{self.digest}"

    @property
    def model_key(self) -> str:
        """Identity of the trained model (the defenses run on it do not change it)."""
        return replace(self, defenses=()).key

    @classmethod
    def from_canonical(cls, d: dict) -> "RunSpec":
        d = dict(d)
        d["settings"] = TrainingSettings.from_dict(d["settings"])
        d["defenses"] = tuple(d.get("defenses", ()))
        if d.get("weights") is not None:
            d["weights"] = tuple(d["weights"])
        return cls(**d)

    def describe(self) -> str:
        """One line for logs and figure titles."""
        what = "clean" if self.method == CLEAN else f"{self.method}, {self.trigger} mu={self.strength:g}, " \
                                                    f"rho={self.poison_ratio:g}" + \
            ("" if self.weights is None else ", weights " + "/".join(f"{w:g}" for w in self.weights))
        return (f"{self.detector} on {self.dataset} class {self.normal_class} (seed {self.seed}, "
                f"{self.settings.name} settings, labeled {self.labeled_ratio:g}): {what}")


WEIGHT_NAMES = ("concentration", "alignment", "separation")


def _check_weights(weights, method: str):
    """None, or 3 finite numbers >= 0 (concentration, alignment, separation) as floats; None where they are all 1
    or the method trains without an objective (one spelling per run)."""
    if weights is None or method == CLEAN or not method_info(method).needs_objective:
        return None
    import math

    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be 3 numbers ({', '.join(WEIGHT_NAMES)}), got {weights!r}") from None
    if len(values) != 3 or isinstance(weights, (str, bytes)) or not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f"weights must be 3 finite numbers >= 0 ({', '.join(WEIGHT_NAMES)}), got {weights!r}")
    return None if values == (1.0, 1.0, 1.0) else values
