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
