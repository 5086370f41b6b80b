"""What the lesson notebooks share: the first cell's set-up, the lesson's data split, trained
detectors cached on disk (so a lesson and its solution, or a rerun, train each model once), and
the precomputed result grids the lessons read.

The cache lives in ``BADSAD_CACHE`` (default ``~/.cache/badsad``). A cached model's file name
holds a hash of its settings AND of this library's source code, so editing the library can never
serve a stale model.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .data import DatasetNotFoundError, OneClassSplit, load_dataset
from .deepsad import CheckpointError, DeepSAD
from .device import device_report, get_device, is_quick
from .experiments import model_settings, split_for, train_attacked

RESULTS = Path(__file__).parent / "results"


def on_colab() -> bool:
    return "google.colab" in sys.modules


@dataclass
class Lesson:
    """The data and settings every model of a lesson uses."""
    dataset: str
    normal_class: int = 0
    labeled_ratio: float = 0.01
    seed: int = 0
    quick: bool = True
    device: torch.device = field(default_factory=get_device)

    @property
    def settings(self) -> dict:
        return model_settings(self.dataset, self.quick)

    @cached_property
    def split(self) -> OneClassSplit:
        return split_for(self.dataset, self.normal_class, labeled_ratio=self.labeled_ratio, seed=self.seed,
                         download=on_colab())


def start(preferred: str = "mnist", normal_class: int = 0, labeled_ratio: float = 0.01, seed: int = 0) -> Lesson:
    """The first cell of every lesson: device, quick or full mode, and which dataset is used."""
    quick = is_quick()
    device = get_device()
    print(device_report(device))
    print(f"Mode: {'quick' if quick else 'full'} "
          f"({'few epochs, minutes on a CPU; BADSAD_QUICK=0 for the paper settings' if quick else 'paper settings'})")
    dataset = preferred
    try:
        load_dataset(preferred, download=on_colab())
    except DatasetNotFoundError as err:
        dataset = "digits"
        print(f"{preferred.upper()} is not available here ({str(err).splitlines()[0]}).\n"
              "Falling back to scikit-learn's 8x8 digits, which ship with the library: every step works the same, "
              "the images are just smaller. Set BADSAD_DATA to a folder holding MNIST to use it.")
    lesson = Lesson(dataset, normal_class, labeled_ratio, seed, quick, device)
    counts = lesson.split.counts()
    print(f"Data: {dataset}, normal class {normal_class}, {counts}")
    return lesson


def cache_dir() -> Path:
    return Path(os.environ.get("BADSAD_CACHE") or Path.home() / ".cache" / "badsad")


def _source_hash() -> str:
    digest = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cached(lesson: Lesson, what: dict, train) -> DeepSAD:
    spec = {"dataset": lesson.dataset, "normal_class": lesson.normal_class, "labeled_ratio": lesson.labeled_ratio,
            "seed": lesson.seed, "settings": lesson.settings, **what}
    key = hashlib.sha1((json.dumps(spec, sort_keys=True, default=str) + _source_hash()).encode()).hexdigest()[:16]
    path = cache_dir() / f"{lesson.dataset}_{what.get('method', 'clean')}_{key}.pt"
    if path.exists():
        try:
            return DeepSAD.load(path, device=lesson.device)
        except CheckpointError:
            path.unlink()
    model = train()
    model.save(path)
    return model


def clean_detector(lesson: Lesson, callback=None) -> DeepSAD:
    """DeepSAD trained on the lesson's split (from the cache when it was trained before).

    ``callback`` (e.g. ``widgets.LiveLoss()``) sees every epoch's loss; a cached model replays its history.
    """
    s = lesson.split

    def train():
        return DeepSAD(s.dataset, **lesson.settings, seed=lesson.seed, device=lesson.device,
                       progress=False).fit(s.x_train, s.semi_targets, X_val=s.x_val, callback=callback)
    model = _cached(lesson, {"method": "clean"}, train)
    if callback is not None and not model.fit_seconds_:
        for phase, history in (("autoencoder", model.ae_history_), ("DeepSAD", model.history_)):
            for epoch, loss in enumerate(history, 1):
                callback(phase, epoch, loss)
    return model


def backdoored_detector(lesson: Lesson, method: str = "badsad", strength: float | None = None,
                        poison_ratio: float = 0.1, trigger_name: str = "corners"):
    """A DeepSAD trained by the attacker on the lesson's split (cached).

    Returns (model, trigger, strength, poisoned indices into ``lesson.split.x_train``).
    """
    from .attack import poison_normals
    from .triggers import DEFAULT_STRENGTH, check_strength, trigger_for

    s = lesson.split
    trigger = trigger_for(s.x_train, trigger_name)
    strength = check_strength(DEFAULT_STRENGTH[trigger_name] if strength is None else strength)

    def train():
        return train_attacked(s, method, trigger_name, strength, poison_ratio, settings=lesson.settings,
                              seed=lesson.seed, device=lesson.device)[0]
    model = _cached(lesson, {"method": method, "strength": strength, "poison_ratio": poison_ratio,
                             "trigger": trigger_name}, train)
    _, poisoned = poison_normals(s.x_train, s.train_labels, s.semi_targets, s.normal_class, trigger, poison_ratio,
                                 strength, lesson.seed)
    return model, trigger, strength, poisoned


def collapse_to_center(model: DeepSAD) -> DeepSAD:
    """The trivial solution that bias terms allow: a copy of ``model`` whose phi ignores its input.

    The network gets bias terms (what DeepSAD's rules forbid), its last layer's weights are set to
    0 and its bias to c, so phi(x) = c for every x: DeepSAD loss 0 on unlabeled data, and every
    score is 0 (AUC 0.5). A bias-free network cannot do this, because c has no zero coordinate.
    """
    from .networks import build_encoder

    collapsed = DeepSAD.from_state(model.state(), device=model.device)
    net = build_encoder(model.dataset, bias=True).to(model.device)
    net.load_state_dict(model.net_.state_dict(), strict=False)
    last = net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(model.c_)
    collapsed.bias, collapsed.net_ = True, net.eval()
    return collapsed


def results_table(name: str) -> list[dict]:
    """Rows of a precomputed grid shipped with the library (``badsad_lib/results/<name>.csv``)."""
    path = RESULTS / f"{name}.csv"
    if not path.exists():
        available = sorted(p.stem for p in RESULTS.glob("*.csv"))
        raise ValueError(f"no precomputed results {name!r}; available: {', '.join(available) or 'none'}")
    with path.open() as f:
        return list(csv.DictReader(f))


def attack_row(lesson: Lesson, clean: DeepSAD, backdoored: DeepSAD, trigger, strength: float,
               poison_ratio: float) -> dict:
    """One row of the trade-off table, measured on the lesson's test split (ASR and miss rate at tau_95)."""
    from .experiments import backdoor_metrics

    clean_m = backdoor_metrics(clean, lesson.split, trigger, strength, strengths=())
    bad = backdoor_metrics(backdoored, lesson.split, trigger, strength, strengths=())
    return {"strength": strength, "poison_ratio": poison_ratio, "auc_clean_model": clean_m["auc"],
            "auc_backdoored": bad["auc"], "asr_95": bad["asr"]["95"], "miss_rate_95": bad["miss_rate"]["95"],
            "clean_model_asr_95": clean_m["asr"]["95"]}


def mean_by(rows, by="method", columns=("auc_clean_model", "auc_backdoored", "asr_95", "miss_rate_95")):
    """Mean of ``columns`` per value of ``by`` (a column, or a tuple of columns) over rows of a results
    table: {value: {column: mean, "cells": n}}. Empty entries are skipped; a column with none is None."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[by] if isinstance(by, str) else tuple(r[b] for b in by), []).append(r)

    def mean(group, c):
        values = [float(r[c]) for r in group if r[c] not in ("", None)]
        return sum(values) / len(values) if values else None
    return {k: {c: mean(g, c) for c in columns} | {"cells": len(g)} for k, g in groups.items()}


def format_table(means: dict, order=None) -> str:
    """A plain-text table of ``mean_by``'s result (n/a where a mean is None)."""
    order = [k for k in (order or means) if k in means]
    columns = [c for c in next(iter(means.values())) if c != "cells"]
    labels = {k: k if isinstance(k, str) else " / ".join(k) for k in order}
    width = max(14, *(len(v) + 2 for v in labels.values()))
    cell = max(11, *(len(c) + 2 for c in columns))

    def f(v):
        return f"{'n/a':>{cell}s}" if v is None else f"{v:{cell}.3f}"
    lines = [" " * width + "".join(f"{c:>{cell}s}" for c in columns) + f"{'cells':>7s}"]
    lines += [f"{labels[k]:{width}s}" + "".join(f(means[k][c]) for c in columns) + f"{means[k]['cells']:7d}"
              for k in order]
    return "\n".join(lines)


def format_defenses(results: dict) -> str:
    """A plain-text table of defense results: {attack: [DefenseResult dicts]}."""
    def f(v):
        return "    n/a" if v is None else f"{v:7.3f}"
    lines = [f"{'attack':8s}{'defense':17s}{'AUC before':>11s}{'after':>8s}{'ASR before':>11s}{'after':>8s}"
             f"{'DER':>8s}{'TPR':>8s}{'FPR':>8s}"]
    for attack, rows in results.items():
        for r in rows:
            lines.append(f"{attack:8s}{r['defense']:17s}{r['auc_before']:11.3f}{f(r['auc_after'])}"
                         f"{r['asr_before']:11.3f}{f(r['asr_after'])}{f(r['der'])}{f(r['tpr'])}{f(r['fpr'])}")
    return "\n".join(lines)
