"""The course's metrics, defined once and used everywhere.

Scores are anomaly scores ``||phi(x) - c||^2``: higher means more anomalous.

- clean AUC: ROC AUC on the clean test split (normal 0, anomaly 1);
- tau_q: the q-th percentile of held-out clean normal scores (a false-alarm rate of 1 - q/100);
- ASR at tau: the share of triggered test anomalies scored <= tau, always read beside the miss rate
  (the same share without the trigger) and the conditional ASR (among the anomalies tau catches
  without the trigger, the share the trigger lets through);
- DER: BackdoorBench's defense effectiveness rate (Wu et al., NeurIPS 2022 Datasets and Benchmarks)
  with AUC in place of accuracy.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

PERCENTILES = (90, 95, 99)


def _as_1d(scores, name: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: need at least one score")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite scores")
    return arr


def auc(scores, labels) -> float:
    """ROC AUC of anomaly scores (N,) against labels (N,), 0 = normal, 1 = anomaly."""
    scores = _as_1d(scores, "scores")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"scores has {scores.size} entries but labels has {labels.size}")
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ValueError(f"labels must hold both 0 (normal) and 1 (anomaly), got {sorted(set(labels.tolist()))}")
    return float(roc_auc_score(labels, scores))


def threshold(normal_scores, q: float = 95) -> float:
    """tau: the q-th percentile of held-out clean normal scores (false-alarm rate 1 - q/100)."""
    from .validation import check_percentile

    q = check_percentile(q)
    return float(np.percentile(_as_1d(normal_scores, "normal_scores"), q))


def pass_rate(scores, tau: float) -> float:
    """Fraction of scores <= tau, i.e. judged normal at threshold tau."""
    return float(np.mean(_as_1d(scores, "scores") <= tau))


def attack_success_rate(triggered_anomaly_scores, tau: float) -> float:
    """ASR: fraction of triggered test anomalies that pass as normal (score <= tau)."""
    return pass_rate(triggered_anomaly_scores, tau)


def miss_rate(anomaly_scores, tau: float) -> float:
    """The detector's own miss rate: fraction of untriggered anomalies with score <= tau."""
    return pass_rate(anomaly_scores, tau)


def conditional_success_rate(anomaly_scores, triggered_anomaly_scores, tau: float) -> float | None:
    """Among anomalies caught at tau without the trigger (score > tau), the share that passes with it.

    Both arrays (N,) score the same anomalies, untriggered and triggered. None if tau catches none.
    """
    plain = _as_1d(anomaly_scores, "anomaly_scores")
    trig = _as_1d(triggered_anomaly_scores, "triggered_anomaly_scores")
    if plain.shape != trig.shape:
        raise ValueError(f"{plain.size} untriggered scores but {trig.size} triggered ones: they must score the "
                         "same anomalies")
    caught = plain > tau
    return float(np.mean(trig[caught] <= tau)) if caught.any() else None


def asr_curve(normal_scores, triggered_anomaly_scores, n_points: int = 101):
    """ASR as a function of the false-alarm rate on clean normals.

    Returns (false_alarm (n_points,), asr (n_points,)), false alarm in [0, 1].
    """
    normal = _as_1d(normal_scores, "normal_scores")
    trig = _as_1d(triggered_anomaly_scores, "triggered_anomaly_scores")
    fa = np.linspace(0.0, 1.0, n_points)
    taus = np.percentile(normal, 100 * (1 - fa))
    return fa, np.array([np.mean(trig <= t) for t in taus])


def defense_effectiveness_rate(asr_before: float, asr_after: float, auc_before: float, auc_after: float) -> float:
    """BackdoorBench's DER with AUC in place of accuracy, in [0, 1]; 0.5 = no change."""
    return (max(0.0, asr_before - asr_after) - max(0.0, auc_before - auc_after) + 1) / 2
