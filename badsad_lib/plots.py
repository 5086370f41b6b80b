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


def plot_score_histograms(normal, anomalous, triggered=None, threshold=None, title: str = "anomaly scores"):
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
        ax.axvline(np.log10(threshold), color="k", linestyle="--", label="threshold (95th pct of normals)")
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
