"""One experiment: a ``RunSpec`` -> data split -> trained model(s) -> measurements (a ``CellResult``)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import OneClassSplit, load_dataset, make_split
from .deepsad import DeepSAD, detector_class
from .device import get_device
from .metrics import PERCENTILES, attack_success_rate, auc, conditional_success_rate, miss_rate, threshold
from .registry import TIERS, method_info
from .result import CellResult
from .spec import RunSpec
from .triggers import Trigger, apply_trigger, trigger_for

# test-time trigger strengths of every cell's curves: 0, 0.1, ..., 1 and the earlier tables' 0.25 and 0.75
STRENGTH_CURVE = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)


@dataclass
class RunResult:
    spec: RunSpec
    split: OneClassSplit
    clean: DeepSAD                 # the clean detector
    backdoored: DeepSAD | None     # None for a clean run
    trigger: Trigger
    poisoned: np.ndarray           # indices into the training set as trained on
    cell: CellResult               # what was measured

    @property
    def metrics(self) -> dict:
        """The measurements as JSON-ready data (``CellResult.to_dict``)."""
        return self.cell.to_dict()


def split_for(dataset: str, normal_class: int, known_anomaly_class=None, labeled_ratio: float = 0.05,
              pollution_ratio: float = 0.0, seed: int = 0, root=None, download: bool = False) -> OneClassSplit:
    """The one-class split used by every experiment (the validation share is the dataset's registered one)."""
    data = load_dataset(dataset, root=root, download=download)
    return make_split(data, normal_class, known_anomaly_class, labeled_ratio, pollution_ratio, seed=seed)


def split_of(spec: RunSpec, root=None, download: bool = False) -> OneClassSplit:
    return split_for(spec.dataset, spec.normal_class, spec.known_anomaly_class, spec.labeled_ratio,
                     spec.pollution_ratio, spec.seed, root, download)


def make_detector(spec: RunSpec, device=None, progress: bool = False) -> DeepSAD:
    """An unfitted detector of ``spec``'s kind and settings."""
    return detector_class(spec.detector)(spec.dataset, spec.settings, seed=spec.seed, device=device, progress=progress)


def detection_metrics(model: DeepSAD, split: OneClassSplit) -> dict:
    """Clean AUC, thresholds tau_q from the validation normals, and the miss rate at each."""
    val_scores = model.decision_function(split.x_val)
    test_scores = model.decision_function(split.x_test)
    taus = {str(q): threshold(val_scores, q) for q in PERCENTILES}
    anomalous = test_scores[split.y_test.numpy() == 1]
    return {"auc": auc(test_scores, split.y_test.numpy()), "threshold": taus,
            "miss_rate": {q: miss_rate(anomalous, t) for q, t in taus.items()}}


def backdoor_metrics(model: DeepSAD, split: OneClassSplit, trigger: Trigger, strength: float,
                     strengths=STRENGTH_CURVE) -> dict:
    """Detection metrics plus, at tau_90/95/99: ASR of the triggered test anomalies, the untriggered
    miss rate, the conditional ASR (among anomalies caught without the trigger, the share that passes
    with it) and ``triggered_normal_pass`` (clean test normals carrying the trigger at ``strength``
    that still pass: what a victim sees the trigger do to normal images). At tau_95, as the test-time
    strength mu varies over ``strengths``: ``asr_by_strength`` and ``normal_pass_by_strength``, and
    the strength where the ASR peaks (``best_strength``, ``best_strength_asr_95``; None without a curve)."""
    base = detection_metrics(model, split)
    anomalies, normals = split.x_test_anomalous, split.x_test_normal
    plain = model.decision_function(anomalies)
    triggered = model.decision_function(apply_trigger(anomalies, trigger, strength))
    triggered_normals = model.decision_function(apply_trigger(normals, trigger, strength))
    taus = base["threshold"]

    def passing(images, mu):
        return attack_success_rate(model.decision_function(apply_trigger(images, trigger, mu)), taus["95"])
    by_strength = {f"{mu:g}": passing(anomalies, mu) for mu in strengths}
    best = max(by_strength, key=lambda k: (by_strength[k], -float(k))) if by_strength else None  # ties: the weaker
    return {**base, "asr": {q: attack_success_rate(triggered, t) for q, t in taus.items()},
            "conditional_asr": {q: conditional_success_rate(plain, triggered, t) for q, t in taus.items()},
            "triggered_normal_pass": {q: attack_success_rate(triggered_normals, t) for q, t in taus.items()},
            "asr_by_strength": by_strength,
            "normal_pass_by_strength": {f"{mu:g}": passing(normals, mu) for mu in strengths},
            "best_strength": None if best is None else float(best),
            "best_strength_asr_95": None if best is None else by_strength[best]}


def train_clean_model(spec: RunSpec, split: OneClassSplit, device=None, progress: bool = False,
                      callback=None) -> DeepSAD:
    model = make_detector(spec.clean(), device, progress)
    return model.fit(split.x_train, split.semi_targets, X_val=split.x_val, callback=callback)


def weights_of(spec: RunSpec):
    """The ``attack.AttackWeights`` of ``spec`` (its ``weights``, or the defaults)."""
    from .attack import AttackWeights

    return AttackWeights() if spec.weights is None else AttackWeights(*spec.weights)


def trigger_exposure(spec: RunSpec, n_train: int, n_triggered: int) -> float:
    """Triggered images the network sees per epoch, as a share of the dataset's training images:
    every triggered image of the training set (poisoned normals, and data_only's synthetic views)
    plus, for the methods that make views during training, one fresh triggered view per image."""
    info = method_info(spec.method)
    if not info.trigger:
        return 0.0
    fresh_views = n_train if info.views_per_batch else 0
    return (n_triggered + fresh_views) / n_train


def attack_training_set(spec: RunSpec, split: OneClassSplit, device=None, weights=None, terms=None, combine=None,
                        trigger: Trigger | None = None):
    """What the attacker trains ``spec``'s model on: (x (N', C, H, W), semi_targets (N',), objective or None,
    trigger, indices of the triggered training images). ``terms`` / ``combine``: the learner's term functions
    and mini-batch objective (``attack.BadSADObjective``); ``trigger``: one of your own design
    (``triggers.custom_trigger``) in place of ``spec.trigger``."""
    from .attack import AttackTerms, BadSADObjective, poisoned_training_set

    device = get_device(device) if not isinstance(device, torch.device) else device
    if trigger is None:
        trigger = trigger_for(split.x_train, spec.trigger)
    elif trigger.shape != tuple(split.x_train.shape[1:]):
        raise ValueError(f"the trigger is for {trigger.shape} images, the training images are "
                         f"{tuple(split.x_train.shape[1:])}")
    x, semi, poisoned = poisoned_training_set(spec, split, trigger)
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[torch.from_numpy(poisoned)] = True
    objective = None
    if method_info(spec.method).needs_objective:
        clean_normals = (split.train_labels == split.normal_class) & (split.semi_targets == 0) & ~mask[:len(split.x_train)]
        objective = BadSADObjective(spec.method, trigger, spec.strength, mask.to(device),
                                    split.x_train[clean_normals].to(device), weights or weights_of(spec),
                                    eta=spec.settings.eta, seed=spec.seed, terms=terms or AttackTerms(),
                                    combine=combine)
    return x, semi, objective, trigger, poisoned


def train_attacked(spec: RunSpec, split: OneClassSplit, device=None, progress: bool = False, weights=None,
                   terms=None, combine=None, trigger: Trigger | None = None):
    """Train the attacker's DeepSAD for ``spec``; returns (model, trigger, indices of triggered training images).
    ``terms`` / ``combine``: the learner's term functions and mini-batch objective (``attack.BadSADObjective``)."""
    device = get_device(device) if not isinstance(device, torch.device) else device
    x, semi, objective, trigger, poisoned = attack_training_set(spec, split, device, weights, terms, combine, trigger)
    model = make_detector(spec, device, progress)
    model.fit(x, semi, X_val=split.x_val, objective=objective)
    return model, trigger, poisoned


def train_stacked(runs: list[RunSpec], device=None) -> list[DeepSAD]:
    """The models of ``runs`` (clean runs: the clean detector; attacks: the backdoored one, defenses aside),
    trained K at a time with ``stacked.fit_stacked``: runs that share dataset, settings and detector and
    whose training sets and forward passes have one size go into one stack (the others into their own).
    Each model is the one ``train_clean_model`` / ``train_attacked`` would train, stacked. In run order."""
    from .stacked import fit_stacked

    device = get_device(device) if not isinstance(device, torch.device) else device
    jobs = []
    for spec in runs:
        split = split_of(spec)
        if spec.attacked:
            x, semi, objective = attack_training_set(spec, split, device)[:3]
        else:
            x, semi, objective = split.x_train, split.semi_targets, None
        forward = 1 if objective is None or objective.views is None else 2 + method_info(spec.method).trigger
        model = make_detector(spec, device)
        group = (model.dataset, json.dumps(model.settings.to_dict(), sort_keys=True), type(model), len(x), forward)
        jobs.append((group, model, x, semi, split.x_val, objective))
    for group in dict.fromkeys(j[0] for j in jobs):
        members = [j for j in jobs if j[0] == group]
        fit_stacked([j[1] for j in members], [j[2] for j in members], [j[3] for j in members],
                    X_vals=[j[4] for j in members], objectives=[j[5] for j in members])
    return [j[1] for j in jobs]


def run(spec: RunSpec, *, root=None, download: bool = False, device=None, progress: bool = False,
        clean_model: DeepSAD | None = None, backdoored_model: DeepSAD | None = None, weights=None) -> RunResult:
    """Run ``spec``: train (or take) the clean model and, for an attack, the backdoored one; measure both;
    run the spec's defenses on the backdoored model. ``seconds`` counts all of it.

    ``clean_model`` / ``backdoored_model``: models trained before for exactly this spec (the grid's cache).
    """
    from .attack import poisoned_training_set

    start = time.perf_counter()
    device = get_device(device)
    split = split_of(spec, root, download)
    trigger = trigger_for(split.x_train, spec.trigger)
    if clean_model is None:
        clean_model = train_clean_model(spec, split, device, progress)
    clean = backdoor_metrics(clean_model, split, trigger, spec.strength)
    common = dict(key=spec.key, spec=spec.canonical(), dataset=spec.dataset, normal_class=spec.normal_class,
                  seed=spec.seed, method=spec.method, detector=spec.detector, settings_name=spec.settings.name,
                  labeled_ratio=spec.labeled_ratio, known_anomaly_class=spec.known_anomaly_class, device=str(device),
                  threads=torch.get_num_threads(), trigger=spec.trigger, strength=spec.strength,
                  clean_model={**_trigger_part(clean), "stack": clean_model.stack_})
    if not spec.attacked:  # defenses on a clean model are negative controls: what they flag with nothing to find
        defended = _defend(spec, split, clean_model) if spec.defenses else None
        cell = CellResult(**common, **_trainer(clean_model), auc=clean["auc"], threshold=clean["threshold"], miss_rate=clean["miss_rate"],
                          counts=split.counts(), final_loss=clean_model.history_[-1] if clean_model.history_ else None,
                          defenses=defended, seconds=time.perf_counter() - start)
        return RunResult(spec, split, clean_model, None, trigger, np.array([], dtype=np.int64), cell)
    weights = weights or weights_of(spec)
    if backdoored_model is None:
        backdoored, trigger, poisoned = train_attacked(spec, split, device, progress, weights)
    else:
        backdoored, poisoned = backdoored_model, poisoned_training_set(spec, split, trigger)[2]
    bad = backdoor_metrics(backdoored, split, trigger, spec.strength)
    defended = _defend(spec, split, backdoored) if spec.defenses else None
    n_dataset_poisoned = int((poisoned < len(split.x_train)).sum())
    cell = CellResult(**common, **_trainer(backdoored), tier=TIERS[spec.method], poison_ratio=spec.poison_ratio, n_poisoned=n_dataset_poisoned,
                      n_synthetic_triggered=int(len(poisoned) - n_dataset_poisoned),
                      trigger_exposure=trigger_exposure(spec, len(split.x_train), len(poisoned)),
                      auc_clean_model=clean["auc"], auc_backdoored=bad["auc"], asr=bad["asr"],
                      conditional_asr=bad["conditional_asr"], miss_rate=bad["miss_rate"], threshold=bad["threshold"],
                      asr_by_strength=bad["asr_by_strength"], **{k: bad[k] for k in CURVE_METRICS},
                      weights=asdict(weights), defenses=defended,
                      seconds=time.perf_counter() - start)
    return RunResult(spec, split, clean_model, backdoored, trigger, poisoned, cell)


def _defend(spec: RunSpec, split, model: DeepSAD) -> list[dict]:
    """The spec's defenses run on ``model`` (the backdoored one, or the clean one of a clean run)."""
    from .defenses import run_defenses, scenario_for

    return run_defenses(spec.defenses, scenario_for(spec, split, model))


def _trainer(model: DeepSAD) -> dict:
    """How the cell's model was trained: alone ("single", stack 1) or with others at once ("stacked", K)."""
    return {"trainer": "stacked" if model.stack_ > 1 else "single", "stack": model.stack_}


CURVE_METRICS = ("triggered_normal_pass", "normal_pass_by_strength", "best_strength", "best_strength_asr_95")


def _trigger_part(m: dict) -> dict:
    return {k: m[k] for k in ("asr", "conditional_asr", "miss_rate", "asr_by_strength", *CURVE_METRICS)}
