"""Training settings as one frozen, validated object, and the three instances the course uses.

``PAPER`` is the optimiser set-up of the DeepSAD reference code (Ruff et al., ICLR 2020):
Adam, 150 + 150 epochs, learning rate 1e-4 with a x0.1 step at epoch 50, batch 128, weight
decay 5e-7 (DeepSAD) and 5e-4 (autoencoder). ``QUICK`` trains the same networks for 10 + 20
epochs at a 10x larger learning rate, for CPUs and CI. ``DIGITS`` suits scikit-learn's 1,797 8x8
digits (about 110 normal training images): small batches, more epochs, a few seconds on a CPU.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that decides how a DeepSAD is optimised (not what it is trained on)."""
    epochs: int                      # DeepSAD epochs
    lr: float                        # DeepSAD learning rate (Adam)
    milestones: tuple[int, ...]      # epochs at which the learning rate is multiplied by 0.1
    weight_decay: float              # Adam's (coupled) weight decay for DeepSAD
    batch_size: int
    ae_epochs: int                   # autoencoder pretraining epochs (0 = none)
    ae_lr: float
    ae_milestones: tuple[int, ...]
    ae_weight_decay: float
    eta: float = 1.0                 # weight of the labeled terms of the DeepSAD loss
    name: str = "custom"             # "paper", "quick", "digits", or "custom" once changed

    def __post_init__(self):
        for name in ("epochs", "ae_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a whole number >= 0")
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size} must be >= 2 (BatchNorm needs two samples per batch)")
        for name in ("lr", "ae_lr", "eta"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a finite number > 0")
        for name in ("weight_decay", "ae_weight_decay"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r} must be a finite number >= 0")
        for name in ("milestones", "ae_milestones"):
            value = tuple(getattr(self, name))
            if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in value):
                raise ValueError(f"{name}={value!r} must be epoch numbers >= 1")
            object.__setattr__(self, name, tuple(sorted(value)))
        for name in ("lr", "ae_lr", "eta", "weight_decay", "ae_weight_decay"):
            object.__setattr__(self, name, float(getattr(self, name)) + 0.0)  # -0.0 weight decay is 0.0

    def replace(self, **changes) -> "TrainingSettings":
        """A copy with ``changes`` (named "custom" unless a name is given); unknown names are refused."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(unknown)}: "
                             f"choose from {', '.join(f.name for f in fields(self))}")
        if "epochs" in changes and "milestones" not in changes and changes["epochs"] != self.epochs:
            changes["milestones"] = _scaled(self.milestones, self.epochs, changes["epochs"])
        if "ae_epochs" in changes and "ae_milestones" not in changes and changes["ae_epochs"] != self.ae_epochs:
            changes["ae_milestones"] = _scaled(self.ae_milestones, self.ae_epochs, changes["ae_epochs"])
        changes.setdefault("name", "custom" if any(getattr(self, k) != v for k, v in changes.items()) else self.name)
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON- and checkpoint-ready (lists for the milestone tuples)."""
        d = asdict(self)
        d["milestones"], d["ae_milestones"] = list(self.milestones), list(self.ae_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingSettings":
        if not isinstance(d, dict):
            raise ValueError(f"training settings must be a mapping, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(n for n in names - set(d) if n not in ("eta", "name"))
        if unknown or missing:
            raise ValueError(f"training settings: unknown {unknown or 'none'}, missing {missing or 'none'}")
        d = dict(d)
        d["milestones"], d["ae_milestones"] = tuple(d["milestones"]), tuple(d["ae_milestones"])
        return cls(**d)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scaled(milestones, old: int, new: int) -> tuple[int, ...]:
    """Milestones moved with a change of the epoch count (dropped when they fall past the end)."""
    scale = new / old if old else 1.0
    return tuple(m2 for m2 in (int(round(m * scale)) for m in milestones) if 1 <= m2 < new)


PAPER = TrainingSettings(epochs=150, lr=1e-4, milestones=(50,), weight_decay=5e-7, batch_size=128,
                         ae_epochs=150, ae_lr=1e-4, ae_milestones=(), ae_weight_decay=5e-4, name="paper")
QUICK = PAPER.replace(epochs=20, lr=1e-3, milestones=(15,), ae_epochs=10, ae_lr=1e-3, name="quick")
DIGITS = PAPER.replace(epochs=300, lr=1e-3, milestones=(200,), batch_size=32, ae_epochs=60, ae_lr=1e-3,
                       name="digits")


def resolve_quick(default: bool | None = None) -> bool:
    """Quick or full mode: ``BADSAD_QUICK`` (1/0, true/false, on/off) wins, then ``CI`` (quick), then ``default``.

    ``default`` is the notebook's ``QUICK`` switch or the command line's ``--quick``/``--full``;
    with none of these, full mode (the paper's settings) for the command line.
    """
    flag = os.environ.get("BADSAD_QUICK", "").strip().lower()
    if flag:
        if flag in ("1", "true", "yes", "on"):
            return True
        if flag in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"BADSAD_QUICK={flag!r} is not understood: use 1 (quick) or 0 (the paper's settings)")
    if os.environ.get("CI"):
        return True
    return bool(default)
