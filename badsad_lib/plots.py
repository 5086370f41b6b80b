"""Pure plotting functions: data in, matplotlib Figure out (tested by pytest, used by widgets and the CLI)."""
from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() in ("", "agg") or not matplotlib.rcParams.get("backend"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _image(ax, img):
    img = np.asarray(img)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    ax.set_xticks([]), ax.set_yticks([])


def plot_triggered_examples(clean, triggered, titles=("clean", "triggered"), n: int = 6):
    """Two rows of images (N, C, H, W): clean above, triggered below."""
    n = min(n, len(clean))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        _image(axes[0, i], clean[i])
        _image(axes[1, i], triggered[i])
    axes[0, 0].set_ylabel(titles[0])
    axes[1, 0].set_ylabel(titles[1])
    fig.tight_layout()
    return fig


def plot_score_histograms(normal, anomalous, triggered=None, threshold=None, title: str = "anomaly scores",
                          threshold_label: str = "threshold (95th pct of normals)"):
    """Histograms of log10 scores for normal / anomalous / triggered-anomalous test images, tau marked."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    groups = [("normal", normal, "tab:blue"), ("anomalous", anomalous, "tab:red")]
    if triggered is not None:
        groups.append(("anomalous + trigger", triggered, "tab:purple"))
    all_scores = np.log10(np.concatenate([np.asarray(g[1]) for g in groups]) + 1e-12)
    bins = np.linspace(all_scores.min(), all_scores.max(), 50)
    for label, scores, color in groups:
        ax.hist(np.log10(np.asarray(scores) + 1e-12), bins=bins, alpha=0.5, density=True, label=label, color=color)
    if threshold is not None:
        ax.axvline(np.log10(threshold), color="k", linestyle="--", label=threshold_label)
    ax.set_xlabel("log10 anomaly score ||phi(x) - c||^2")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_asr_by_strength(asr_by_strength: dict, miss_rate: float | None = None):
    """ASR at tau_95 against trigger strength mu, with the untriggered miss rate for reference."""
    mus = [float(k) for k in asr_by_strength]
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    ax.plot(mus, list(asr_by_strength.values()), "o-", label="ASR (triggered anomalies)")
    if miss_rate is not None:
        ax.axhline(miss_rate, color="gray", linestyle=":", label="miss rate without trigger")
    ax.set_xlabel("trigger strength mu")
    ax.set_ylabel("fraction judged normal")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_image_rows(rows: dict, n: int = 8):
    """One row of up to ``n`` images per entry of ``rows`` ({label: (N, C, H, W) images})."""
    n = min(n, *(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.4 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for i in range(n):
            _image(axes[r, i], images[i])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss_curves(ae_history, history, ax=None):
    """Mean loss per epoch: autoencoder pretraining (MSE) and DeepSAD, on a log scale."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8)) if ax is None else (ax[0].figure, ax)
    for a, values, title in ((axes[0], ae_history, "autoencoder pretraining"), (axes[1], history, "DeepSAD")):
        a.clear()
        if len(values):
            a.plot(range(1, len(values) + 1), values, "o-", ms=3)
            a.set_yscale("log")
        a.set_xlabel("epoch")
        a.set_title(title, fontsize=9)
    axes[0].set_ylabel("mean loss")
    fig.tight_layout()
    return fig


def plot_roc(scores, labels, title: str = "ROC curve"):
    """ROC curve of anomaly ``scores`` (N,) against ``labels`` (N,) (1 = anomaly), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores))
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    ax.set_xlabel("false-alarm rate (normals flagged)")
    ax.set_ylabel("detection rate (anomalies flagged)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def threshold_view(val_scores, normal_scores, anomalous_scores, q: float):
    """tau = q-th percentile of held-out normals; histograms with tau, and what it costs.

    Returns (figure, {"tau", "false_alarm" (test normals flagged), "detection" (test anomalies flagged)}).
    """
    from .metrics import threshold

    tau = threshold(val_scores, q)
    result = {"q": float(q), "tau": tau, "false_alarm": float(np.mean(np.asarray(normal_scores) > tau)),
              "detection": float(np.mean(np.asarray(anomalous_scores) > tau))}
    fig = plot_score_histograms(normal_scores, anomalous_scores, threshold=tau,
                                title=f"q = {q:g}: false alarms {result['false_alarm']:.1%}, "
                                      f"anomalies caught {result['detection']:.1%}",
                                threshold_label=f"threshold tau ({q:g}th pct of normals)")
    return fig, result


def plot_latent_2d(groups: dict, center=None, max_points: int = 600, seed: int = 0):
    """PCA projection to 2-D of latent codes ({label: (N, rep_dim) array}); the center c as a star."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    picked = {k: np.asarray(v)[rng.permutation(len(v))[:max_points]] for k, v in groups.items() if len(v)}
    pca = PCA(n_components=2, random_state=seed).fit(np.concatenate(list(picked.values())))
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for label, codes in picked.items():
        xy = pca.transform(codes)
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.5, label=label)
    if center is not None:
        cxy = pca.transform(np.asarray(center).reshape(1, -1))
        ax.scatter(cxy[:, 0], cxy[:, 1], marker="*", s=250, color="k", label="center c")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("latent space phi(x), PCA to 2-D")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    return fig


def strength_view(clean_image, triggered_image, strengths, scores, strength: float, tau: float, clean_score: float):
    """A triggered image at strength mu beside its score as mu moves, against the threshold tau.

    ``strengths`` (K,) and ``scores`` (K,) trace the score of the triggered image(s) against mu.
    Returns (figure, {"strength", "score", "passes"}) with the score interpolated at ``strength``.
    """
    score = float(np.interp(strength, strengths, scores))
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.8), gridspec_kw={"width_ratios": [1, 1, 2.2]})
    _image(axes[0], clean_image)
    axes[0].set_title("without trigger", fontsize=9)
    _image(axes[1], triggered_image)
    axes[1].set_title(f"trigger, mu = {strength:.2f}", fontsize=9)
    axes[2].plot(strengths, scores, "-", color="tab:purple", label="score with trigger")
    axes[2].axhline(clean_score, color="tab:red", linestyle=":", label="score without trigger")
    axes[2].axhline(tau, color="k", linestyle="--", label="threshold tau")
    axes[2].plot([strength], [score], "o", color="tab:purple")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("trigger strength mu")
    axes[2].set_ylabel("anomaly score")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig, {"strength": float(strength), "score": score, "passes": bool(score <= tau)}


def asr_view(val_scores, anomalous_scores, triggered_scores, false_alarm: float):
    """ASR and miss rate against the false-alarm rate, with the operating point ``false_alarm`` marked.

    Returns (figure, {"false_alarm", "tau", "asr", "miss_rate"}).
    """
    from .metrics import asr_curve, attack_success_rate, miss_rate, threshold

    fa, asr = asr_curve(val_scores, triggered_scores)
    _, miss = asr_curve(val_scores, anomalous_scores)
    tau = threshold(val_scores, 100 * (1 - false_alarm))
    result = {"false_alarm": float(false_alarm), "tau": tau, "asr": attack_success_rate(triggered_scores, tau),
              "miss_rate": miss_rate(anomalous_scores, tau)}
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(fa, asr, color="tab:purple", label="ASR (anomalies + trigger)")
    ax.plot(fa, miss, color="tab:red", label="miss rate (anomalies, no trigger)")
    ax.axvline(false_alarm, color="k", linestyle="--")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false-alarm rate on clean normals (1 - q/100)")
    ax.set_ylabel("fraction judged normal")
    ax.set_title(f"at {false_alarm:.1%} false alarms: ASR {result['asr']:.1%}, miss {result['miss_rate']:.1%}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, result


def tradeoff_view(rows, strength: float, poison_ratio: float):
    """Attack success against stealth over a grid of (strength, poison ratio) results.

    ``rows``: dicts with strength, poison_ratio, asr_95, auc_backdoored, auc_clean_model (e.g. a
    grid's results.csv). Returns (figure, the row at (strength, poison_ratio), or None if the grid lacks it).
    """
    rows = list(rows)
    match = [r for r in rows if np.isclose(float(r["strength"]), strength)
             and np.isclose(float(r["poison_ratio"]), poison_ratio)]
    if not rows:
        raise ValueError("the trade-off grid is empty")
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    sc = ax.scatter([float(r["auc_backdoored"]) for r in rows], [float(r["asr_95"]) for r in rows],
                    c=[float(r["strength"]) for r in rows], s=[400 * float(r["poison_ratio"]) + 10 for r in rows],
                    cmap="viridis", alpha=0.7)
    chosen = match[0] if match else None
    if chosen is not None:
        ax.scatter([float(chosen["auc_backdoored"])], [float(chosen["asr_95"])], s=250, facecolors="none",
                   edgecolors="red", linewidths=2)
    ax.axvline(float(rows[0]["auc_clean_model"]), color="gray", linestyle=":", label="clean model's AUC")
    fig.colorbar(sc, ax=ax, label="trigger strength mu")
    ax.set_xlabel("clean AUC of the backdoored model (stealth)")
    ax.set_ylabel("ASR at tau_95 (success)")
    ax.set_title(f"mu = {strength:g}, rho = {poison_ratio:g}" + ("" if chosen else ": not in the grid yet, "
                 "press the button to train it"), fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig, chosen


def pruning_view(rows, ratio: float):
    """Clean AUC and ASR after fine-pruning against the pruning ratio, the chosen ratio marked.

    ``rows``: dicts with ratio, auc_after, asr_after. Returns (figure, the row at ``ratio``).
    """
    rows = sorted(rows, key=lambda r: r["ratio"])
    match = [r for r in rows if np.isclose(r["ratio"], ratio)]
    if not match:
        raise ValueError(f"no fine-pruning result at ratio {ratio}; have {[r['ratio'] for r in rows]}")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ratios = [r["ratio"] for r in rows]
    ax.plot(ratios, [r["asr_after"] for r in rows], "o-", color="tab:purple", label="ASR at tau_95")
    ax.plot(ratios, [r["auc_after"] for r in rows], "s-", color="tab:blue", label="clean AUC")
    ax.axvline(ratio, color="k", linestyle="--")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("share of last-layer inputs pruned (then fine-tuned)")
    ax.set_title(f"ratio {ratio:g}: ASR {match[0]['asr_after']:.1%}, AUC {match[0]['auc_after']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, match[0]
