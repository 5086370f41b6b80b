"""One experiment = data split -> trained model(s) -> metrics dict (JSON-ready)."""
from __future__ import annotations

import time

from .data import load_dataset, make_split
from .deepsad import DeepSAD, training_settings
from .device import get_device
from .metrics import PERCENTILES, auc, miss_rate, threshold


def split_for(dataset: str, normal_class: int, known_anomaly_class=None, labeled_ratio: float = 0.05,
              pollution_ratio: float = 0.0, seed: int = 0, root=None, download: bool = False):
    """The one-class split used by every experiment (digits keeps a larger validation share)."""
    data = load_dataset(dataset, root=root, download=download)
    val_ratio = 0.2 if data.name == "digits" else 0.1
    return make_split(data, normal_class, known_anomaly_class, labeled_ratio, pollution_ratio, val_ratio, seed)


def model_settings(dataset: str, quick: bool, epochs=None, ae_epochs=None) -> dict:
    """Training settings for ``dataset``, with optional epoch overrides (milestones scaled along)."""
    settings = training_settings(dataset, quick)
    if epochs is not None:
        scale = epochs / settings["epochs"] if settings["epochs"] else 1.0
        settings["milestones"] = tuple(int(round(m * scale)) for m in settings["milestones"] if m * scale < epochs)
        settings["epochs"] = int(epochs)
    if ae_epochs is not None:
        settings["ae_epochs"] = int(ae_epochs)
    return settings


def detection_metrics(model: DeepSAD, split) -> dict:
    """Clean AUC, thresholds tau_q from the validation normals, and the miss rate at each."""
    val_scores = model.decision_function(split.x_val)
    test_scores = model.decision_function(split.x_test)
    taus = {str(q): threshold(val_scores, q) for q in PERCENTILES}
    anomalous = test_scores[split.y_test.numpy() == 1]
    return {"auc": auc(test_scores, split.y_test.numpy()), "threshold": taus,
            "miss_rate": {q: miss_rate(anomalous, t) for q, t in taus.items()}}


def train_clean(dataset: str = "digits", normal_class: int = 0, known_anomaly_class=None,
                labeled_ratio: float = 0.05, pollution_ratio: float = 0.0, epochs=None, ae_epochs=None,
                seed: int = 0, device=None, quick: bool = True, progress: bool = False, root=None,
                download: bool = False):
    """Train one clean DeepSAD; returns (model, split, metrics)."""
    start = time.perf_counter()
    device = get_device(device)
    split = split_for(dataset, normal_class, known_anomaly_class, labeled_ratio, pollution_ratio, seed, root,
                      download)
    settings = model_settings(split.dataset, quick, epochs, ae_epochs)
    model = DeepSAD(split.dataset, **settings, seed=seed, device=device, progress=progress)
    model.fit(split.x_train, split.semi_targets, X_val=split.x_val)
    metrics = {"dataset": split.dataset, "normal_class": split.normal_class,
               "known_anomaly_classes": list(split.known_anomaly_classes), "labeled_ratio": labeled_ratio,
               "pollution_ratio": pollution_ratio, "seed": seed, "quick": quick, "device": str(device),
               **detection_metrics(model, split), "counts": split.counts(),
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
               "final_loss": model.history_[-1] if model.history_ else None,
               "seconds": time.perf_counter() - start}
    return model, split, metrics


def backdoor_metrics(model: DeepSAD, split, trigger, strength: float, strengths=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict:
    """ASR of triggered test anomalies and the untriggered miss rate at tau_90/95/99, and ASR(strength) at tau_95."""
    from .metrics import attack_success_rate
    from .triggers import apply_trigger

    base = detection_metrics(model, split)
    anomalies = split.x_test_anomalous
    triggered = model.decision_function(apply_trigger(anomalies, trigger, strength))
    taus = base["threshold"]
    by_strength = {f"{mu:g}": attack_success_rate(model.decision_function(apply_trigger(anomalies, trigger, mu)),
                                                  taus["95"]) for mu in strengths}
    return {**base, "asr": {q: attack_success_rate(triggered, t) for q, t in taus.items()},
            "asr_by_strength": by_strength}


def train_attacked(split, method: str = "badsad", trigger_name: str = "corners", strength: float | None = None,
                   poison_ratio: float = 0.1, weights=None, settings: dict | None = None, seed: int = 0,
                   device=None, progress: bool = False):
    """Train a backdoored DeepSAD on ``split``; returns (model, trigger, strength, poisoned indices)."""
    import torch

    from .attack import AttackWeights, BadSADObjective, check_method, poison_normals
    from .triggers import DEFAULT_STRENGTH, check_strength, trigger_for

    check_method(method)
    trigger = trigger_for(split.x_train, trigger_name)
    strength = check_strength(DEFAULT_STRENGTH[trigger_name] if strength is None else strength)
    device = get_device(device)
    x_poisoned, poisoned = poison_normals(split.x_train, split.train_labels, split.semi_targets, split.normal_class,
                                          trigger, poison_ratio, strength, seed)
    mask = torch.zeros(len(x_poisoned), dtype=torch.bool)
    mask[torch.from_numpy(poisoned)] = True
    clean_normals = (split.train_labels == split.normal_class) & (split.semi_targets == 0) & ~mask
    objective = BadSADObjective(method, trigger, strength, mask.to(device), split.x_train[clean_normals].to(device),
                                weights or AttackWeights(), seed=seed)
    settings = settings or model_settings(split.dataset, True)
    model = DeepSAD(split.dataset, **settings, seed=seed, device=device, progress=progress)
    model.fit(x_poisoned, split.semi_targets, X_val=split.x_val, objective=objective)
    return model, trigger, strength, poisoned


def run_attack(dataset: str = "digits", normal_class: int = 0, method: str = "badsad", trigger_name: str = "corners",
               strength: float | None = None, poison_ratio: float = 0.1, labeled_ratio: float = 0.01,
               known_anomaly_class=None, epochs=None, ae_epochs=None, seed: int = 0, device=None, quick: bool = True,
               weights=None, clean_model: DeepSAD | None = None, root=None, download: bool = False,
               progress: bool = False):
    """Clean model vs. backdoored model on one split; returns (clean, backdoored, split, trigger, metrics)."""
    from dataclasses import asdict

    from .attack import AttackWeights, check_method
    from .triggers import check_strength

    check_method(method)
    if strength is not None:
        check_strength(strength)
    start = time.perf_counter()
    device = get_device(device)
    split = split_for(dataset, normal_class, known_anomaly_class, labeled_ratio, 0.0, seed, root, download)
    settings = model_settings(split.dataset, quick, epochs, ae_epochs)
    if clean_model is None:
        clean_model = DeepSAD(split.dataset, **settings, seed=seed, device=device, progress=progress)
        clean_model.fit(split.x_train, split.semi_targets, X_val=split.x_val)
    weights = weights or AttackWeights()
    backdoored, trigger, strength, poisoned = train_attacked(split, method, trigger_name, strength, poison_ratio,
                                                             weights, settings, seed, device, progress)
    clean = backdoor_metrics(clean_model, split, trigger, strength)
    bad = backdoor_metrics(backdoored, split, trigger, strength)
    metrics = {"dataset": split.dataset, "normal_class": split.normal_class, "method": method, "trigger": trigger_name,
               "strength": strength, "poison_ratio": poison_ratio, "n_poisoned": int(len(poisoned)),
               "labeled_ratio": labeled_ratio, "known_anomaly_classes": list(split.known_anomaly_classes),
               "seed": seed, "quick": quick, "device": str(device),
               "auc_clean_model": clean["auc"], "auc_backdoored": bad["auc"],
               "asr": bad["asr"], "miss_rate": bad["miss_rate"], "threshold": bad["threshold"],
               "asr_by_strength": bad["asr_by_strength"],
               "clean_model": {"asr": clean["asr"], "miss_rate": clean["miss_rate"]},
               "weights": asdict(weights),
               "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
               "seconds": time.perf_counter() - start}
    return clean_model, backdoored, split, trigger, metrics
