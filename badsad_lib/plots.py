"""Pure plotting functions: data in, matplotlib Figure out (tested by pytest, used by widgets and the CLI).

Every figure has a title and axis labels, and reads without colour: the Okabe-Ito colour-blind-safe
palette, and every group also differs by marker, line style or hatching.
"""
from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() in ("", "agg") or not matplotlib.rcParams.get("backend"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, MaxNLocator  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision deficiency.
OKABE_ITO = {"blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "orange": "#E69F00",
             "green": "#009E73", "sky": "#56B4E9", "yellow": "#F0E442", "black": "#000000"}
# One style per group the course plots: colour + marker + line style + hatch.
STYLES = {
    "normal": dict(color=OKABE_ITO["blue"], marker="o", linestyle="-", hatch=""),
    "anomalous": dict(color=OKABE_ITO["vermillion"], marker="s", linestyle="--", hatch="//"),
    "anomalous + trigger": dict(color=OKABE_ITO["purple"], marker="^", linestyle=":", hatch="\\\\"),
    "known anomalies": dict(color=OKABE_ITO["orange"], marker="D", linestyle="-.", hatch="xx"),
    "poisoned": dict(color=OKABE_ITO["green"], marker="v", linestyle=(0, (5, 1)), hatch=".."),
    "normal + trigger": dict(color=OKABE_ITO["sky"], marker="P", linestyle=(0, (3, 1, 1, 1, 1, 1)), hatch="++"),
}
_CYCLE = list(STYLES.values())


def style(label: str, i: int = 0) -> dict:
    """The style of a group: by its name where the course has one, else the i-th of the cycle."""
    key = label if label in STYLES else max((k for k in STYLES if label.startswith(k)), key=len, default=None)
    if key is None:
        key = "anomalous + trigger" if "trigger" in label else "poisoned" if "poison" in label else \
            "known anomalies" if "known" in label else "anomalous" if "anomal" in label else \
            "normal" if "normal" in label else None
    return dict(STYLES[key] if key else _CYCLE[i % len(_CYCLE)])


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, legend: dict | None = None):
    """Axis labels, title and legend on ``ax``; a tight layout; returns ``fig``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(**(legend or {"fontsize": 8}))
    fig.tight_layout()
    return fig


def _image(ax, img):
    img = np.asarray(img)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1))
    ax.set_xticks([]), ax.set_yticks([])


def plot_triggered_examples(clean, triggered, titles=("clean", "triggered"), n: int = 6, title: str | None = None):
    """Two rows of images (N, C, H, W): clean above, triggered below."""
    return plot_image_rows({titles[0]: clean, titles[1]: triggered}, n=n, title=title or "with and without the trigger")


def plot_image_rows(rows: dict, n: int = 8, title: str = "examples"):
    """One row of up to ``n`` images per entry of ``rows`` ({label: (N, C, H, W) images})."""
    n = min(n, *(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), n, figsize=(max(1.3 * n, 3.2), 1.4 * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for i in range(n):
            _image(axes[r, i], images[i])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_score_histograms(normal, anomalous, triggered=None, threshold=None, title: str = "anomaly scores",
                          threshold_label: str = "threshold (95th pct of normals)"):
    """Histograms of log10 scores for normal / anomalous / triggered-anomalous test images, tau marked."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    groups = [("normal", normal), ("anomalous", anomalous)]
    if triggered is not None:
        groups.append(("anomalous + trigger", triggered))
    logs = {label: np.log10(np.clip(np.asarray(scores, dtype=float), 1e-12, None)) for label, scores in groups}
    finite = np.concatenate([v[np.isfinite(v)] for v in logs.values()])
    bins = np.linspace(finite.min(), finite.max() + 1e-9, 50)
    for label, values in logs.items():
        st = style(label)
        ax.hist(values[np.isfinite(values)], bins=bins, density=True, histtype="stepfilled", alpha=0.25,
                color=st["color"], hatch=st["hatch"], edgecolor=st["color"])
        ax.hist(values[np.isfinite(values)], bins=bins, density=True, histtype="step", linewidth=1.6,
                color=st["color"], linestyle=st["linestyle"], label=label)
    if threshold is not None:
        ax.axvline(np.log10(max(threshold, 1e-12)), color="k", linestyle="-", linewidth=2, label=threshold_label)
    return _finish(fig, ax, "log10 anomaly score ||phi(x) - c||^2", "density", title)


def plot_asr_by_strength(asr_by_strength: dict, miss_rate: float | None = None, title: str | None = None,
                         normal_pass_by_strength: dict | None = None):
    """ASR at tau_95 against trigger strength mu ({"0.5": asr, ...}), with the untriggered miss rate for
    reference and, if given, the share of triggered clean normals that pass (what a victim would see)."""
    mus = [float(k) for k in asr_by_strength]
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    st = style("anomalous + trigger")
    ax.plot(mus, list(asr_by_strength.values()), marker=st["marker"], linestyle="-", color=st["color"],
            label="ASR (triggered anomalies)")
    if normal_pass_by_strength:
        nt = style("normal + trigger")
        ax.plot([float(k) for k in normal_pass_by_strength], list(normal_pass_by_strength.values()),
                marker=nt["marker"], linestyle=nt["linestyle"], color=nt["color"], label="triggered normals passing")
    if miss_rate is not None:
        ax.axhline(miss_rate, color=style("anomalous")["color"], linestyle="--", label="miss rate without trigger")
    ax.set_ylim(-0.02, 1.02)
    return _finish(fig, ax, "trigger strength mu at test time", "fraction judged normal",
                   title or "attack success against trigger strength")


def plot_loss_curves(ae_history, history, ax=None):
    """Mean loss per epoch: autoencoder pretraining (per-pixel MSE) and DeepSAD, on a log scale."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.8)) if ax is None else (ax[0].figure, ax)
    for a, values, title, marker in ((axes[0], ae_history, "autoencoder pretraining (MSE per pixel)", "o"),
                                     (axes[1], history, "DeepSAD loss", "s")):
        a.clear()
        if len(values):
            a.plot(range(1, len(values) + 1), values, marker=marker, ms=3, color=OKABE_ITO["blue"])
            a.set_yscale("log")
        a.set_xlabel("epoch")
        a.set_ylabel("mean loss")
        a.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_roc(scores, labels, title: str = "ROC curve"):
    """ROC curve of anomaly ``scores`` (N,) against ``labels`` (N,) (1 = anomaly), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores))
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.plot(fpr, tpr, color=OKABE_ITO["blue"], linewidth=2, label=f"AUC = {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    return _finish(fig, ax, "false-alarm rate (normals flagged)", "detection rate (anomalies flagged)", title,
                   {"loc": "lower right", "fontsize": 8})


def threshold_view(val_scores, normal_scores, anomalous_scores, q: float, rule=None):
    """tau = q-th percentile of held-out normals (or ``rule(val_scores, q)``); histograms with tau, and what it costs.

    Returns (figure, {"tau", "false_alarm" (test normals flagged), "detection" (test anomalies flagged)}).
    """
    from .metrics import threshold

    tau = float(rule(val_scores, q)) if rule is not None else threshold(val_scores, q)
    result = {"q": float(q), "tau": tau, "false_alarm": float(np.mean(np.asarray(normal_scores) > tau)),
              "detection": float(np.mean(np.asarray(anomalous_scores) > tau))}
    fig = plot_score_histograms(normal_scores, anomalous_scores, threshold=tau,
                                title=f"q = {q:g}: false alarms {result['false_alarm']:.1%}, "
                                      f"anomalies caught {result['detection']:.1%}",
                                threshold_label=f"threshold tau ({q:g}th pct of normals)")
    return fig, result


def plot_latent_2d(groups: dict, center=None, max_points: int = 600, seed: int = 0,
                   title: str = "latent space phi(x), PCA to 2-D"):
    """PCA projection to 2-D of latent codes ({label: (N, rep_dim) array}); the center c as a star."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    picked = {k: np.asarray(v)[rng.permutation(len(v))[:max_points]] for k, v in groups.items() if len(v)}
    pca = PCA(n_components=2, random_state=seed).fit(np.concatenate(list(picked.values())))
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    handles = []
    for i, (label, codes) in enumerate(picked.items()):
        st = style(label, i)
        xy = pca.transform(codes)
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.5, color=st["color"], marker=st["marker"], linewidths=0)
        handles.append(Line2D([], [], linestyle="", marker=st["marker"], color=st["color"], markersize=6, label=label))
    if center is not None:
        cxy = pca.transform(np.asarray(center).reshape(1, -1))
        ax.scatter(cxy[:, 0], cxy[:, 1], marker="*", s=220, color="k", edgecolors="white", linewidths=1, zorder=5)
        handles.append(Line2D([], [], linestyle="", marker="*", color="k", markersize=10, label="center c"))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def strength_view(clean_image, triggered_image, strengths, scores, strength: float, tau: float, clean_score: float):
    """A triggered image at strength mu beside its score as mu moves, against the threshold tau.

    ``strengths`` (K,) and ``scores`` (K,) trace the score of the triggered image(s) against mu.
    Returns (figure, {"strength", "score", "passes"}) with the score interpolated at ``strength``.
    """
    score = float(np.interp(strength, strengths, scores))
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.9), gridspec_kw={"width_ratios": [1, 1, 2.2]})
    _image(axes[0], clean_image)
    axes[0].set_title("without trigger", fontsize=9)
    _image(axes[1], triggered_image)
    axes[1].set_title(f"trigger, mu = {strength:.2f}", fontsize=9)
    trig, plain = style("anomalous + trigger"), style("anomalous")
    axes[2].plot(strengths, scores, linestyle="-", color=trig["color"], label="score with trigger")
    axes[2].axhline(clean_score, color=plain["color"], linestyle="--", label="score without trigger")
    axes[2].axhline(tau, color="k", linestyle="-", linewidth=2, label="threshold tau")
    axes[2].plot([strength], [score], marker=trig["marker"], color=trig["color"], markersize=8)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("trigger strength mu")
    axes[2].set_ylabel("anomaly score")
    axes[2].set_title("one anomaly's score as mu moves", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig, {"strength": float(strength), "score": score, "passes": bool(score <= tau)}


def backdoor_strength_view(examples, strengths, triggered_scores, normal_scores, anomalous_scores, tau: float,
                           strength: float, trigger, n_examples: int = 4, triggered_normal_scores=None):
    """A backdoored model against the test-time trigger strength mu (lesson 03's widget).

    ``examples`` (n, C, H, W) anomalies to show stamped at mu; ``strengths`` (K,); ``triggered_scores``
    (K, A) the scores of all A test anomalies stamped at each strength; ``normal_scores`` (Nn,) and
    ``anomalous_scores`` (A,) untriggered; ``triggered_normal_scores`` (K, Nn), optional, the test
    normals stamped at each strength. Returns (figure, {"strength", "asr", "miss_rate", "tau",
    "normal_pass"}), read from the precomputed scores (nothing is retrained or rescored).
    """
    from .metrics import attack_success_rate, miss_rate
    from .triggers import apply_trigger

    strengths = np.asarray(strengths, dtype=float)
    k = int(np.argmin(np.abs(strengths - strength)))
    asr = [attack_success_rate(s, tau) for s in triggered_scores]
    miss = miss_rate(anomalous_scores, tau)
    normal_pass = None if triggered_normal_scores is None else [attack_success_rate(s, tau)
                                                                 for s in triggered_normal_scores]
    result = {"strength": float(strengths[k]), "asr": asr[k], "miss_rate": miss, "tau": float(tau),
              "normal_pass": None if normal_pass is None else normal_pass[k]}
    fig = plt.figure(figsize=(12, 3.8))
    grid = fig.add_gridspec(2, n_examples + 5, width_ratios=[1] * n_examples + [0.3, 2.6, 0.3, 2.6, 0.2])
    stamped = apply_trigger(examples[:n_examples], trigger, float(strengths[k]))
    for i in range(min(n_examples, len(examples))):
        _image(fig.add_subplot(grid[0, i]), examples[i])
        _image(fig.add_subplot(grid[1, i]), stamped[i])
    fig.axes[0].set_ylabel("anomaly", fontsize=8)
    fig.axes[1].set_ylabel(f"mu = {strengths[k]:.2f}", fontsize=8)
    hist = fig.add_subplot(grid[:, n_examples + 1])
    groups = {"normal": normal_scores, "anomalous": anomalous_scores, "anomalous + trigger": triggered_scores[k]}
    logs = {g: np.log10(np.clip(np.asarray(v, dtype=float), 1e-12, None)) for g, v in groups.items()}
    bins = np.linspace(min(v.min() for v in logs.values()), max(v.max() for v in logs.values()) + 1e-9, 40)
    for label, values in logs.items():
        st = style(label)
        hist.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5, color=st["color"],
                  linestyle=st["linestyle"], label=label)
    hist.axvline(np.log10(tau), color="k", linewidth=2, label="tau_95")
    hist.set_xlabel("log10 anomaly score")
    hist.set_ylabel("density")
    hist.set_title(f"scores at mu = {strengths[k]:.2f}", fontsize=9)
    hist.legend(fontsize=7, loc="upper left", framealpha=0.9)
    curve = fig.add_subplot(grid[:, n_examples + 3])
    trig, plain = style("anomalous + trigger"), style("anomalous")
    curve.plot(strengths, asr, marker=trig["marker"], color=trig["color"], label="ASR (with trigger)")
    if normal_pass is not None:
        nt = style("normal + trigger")
        curve.plot(strengths, normal_pass, marker=nt["marker"], linestyle=nt["linestyle"], color=nt["color"],
                   label="triggered normals passing")
    curve.axhline(miss, color=plain["color"], linestyle="--", label="miss rate (no trigger)")
    curve.axvline(strengths[k], color="k", linestyle=":")
    curve.set_ylim(-0.02, 1.02)
    curve.set_xlabel("test-time strength mu")
    curve.set_ylabel("share judged normal")
    curve.set_title(f"ASR {asr[k]:.1%}, miss rate {miss:.1%}" + (
        "" if normal_pass is None else f"\nnormals with trigger passing {normal_pass[k]:.1%}"), fontsize=9)
    curve.legend(fontsize=7, loc="center right")
    fig.suptitle("the backdoored detector as the trigger fades", fontsize=10)
    fig.tight_layout()
    return fig, result


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
    trig, plain = style("anomalous + trigger"), style("anomalous")
    ax.plot(fa, asr, color=trig["color"], linestyle="-", label="ASR (anomalies + trigger)")
    ax.plot(fa, miss, color=plain["color"], linestyle="--", label="miss rate (anomalies, no trigger)")
    ax.axvline(false_alarm, color="k", linestyle=":")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1)
    return _finish(fig, ax, "false-alarm rate on clean normals (1 - q/100)", "fraction judged normal",
                   f"at {false_alarm:.1%} false alarms: ASR {result['asr']:.1%}, miss {result['miss_rate']:.1%}"), result


RATIO_MARKERS = ("o", "s", "^", "D", "v", "P")


def tradeoff_view(rows, strength: float, poison_ratio: float):
    """Attack success against stealth over a grid of (strength, poison ratio) results.

    ``rows``: dicts with strength, poison_ratio, asr_95, auc_backdoored, auc_clean_model (e.g. a
    grid's results.csv). Colour = strength mu (colour bar), marker shape = poison ratio rho (legend).
    Returns (figure, the row at (strength, poison_ratio), or None if the grid lacks it).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("the trade-off grid is empty")
    match = [r for r in rows if np.isclose(float(r["strength"]), strength)
             and np.isclose(float(r["poison_ratio"]), poison_ratio)]
    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    ratios = sorted({float(r["poison_ratio"]) for r in rows})
    mus = [float(r["strength"]) for r in rows]
    norm = plt.Normalize(min(mus), max(mus) if max(mus) > min(mus) else min(mus) + 1)
    for i, rho in enumerate(ratios):
        group = [r for r in rows if np.isclose(float(r["poison_ratio"]), rho)]
        sc = ax.scatter([float(r["auc_backdoored"]) for r in group], [float(r["asr_95"]) for r in group],
                        c=[float(r["strength"]) for r in group], cmap="viridis", norm=norm, s=60,
                        marker=RATIO_MARKERS[i % len(RATIO_MARKERS)], edgecolors="k", linewidths=0.5,
                        label=f"rho = {rho:g}")
    chosen = match[0] if match else None
    if chosen is not None:
        ax.scatter([float(chosen["auc_backdoored"])], [float(chosen["asr_95"])], s=260, facecolors="none",
                   edgecolors="k", linewidths=2, label="selected")
    ax.axvline(float(rows[0]["auc_clean_model"]), color="gray", linestyle=":", label="clean model's AUC")
    fig.colorbar(sc, ax=ax, label="trigger strength mu")
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.3f"))
    ax.set_xlabel("clean AUC of the backdoored model (stealth)")
    ax.set_ylabel("ASR at tau_95 (success)")
    ax.set_title(f"mu = {strength:g}, rho = {poison_ratio:g}" + ("" if chosen else ": not in the grid yet, "
                 "press the button to train it"), fontsize=9)
    ax.legend(fontsize=7, loc="best")
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
    ax.plot(ratios, [r["asr_after"] for r in rows], marker="^", linestyle="-", color=OKABE_ITO["purple"],
            label="ASR at tau_95")
    ax.plot(ratios, [r["auc_after"] for r in rows], marker="s", linestyle="--", color=OKABE_ITO["blue"],
            label="clean AUC")
    ax.axvline(ratio, color="k", linestyle=":")
    ax.set_ylim(-0.02, 1.02)
    return _finish(fig, ax, "share of last-layer inputs pruned (then fine-tuned)", "ASR / AUC after the defense",
                   f"ratio {ratio:g}: ASR {match[0]['asr_after']:.1%}, AUC {match[0]['auc_after']:.3f}"), match[0]


def plot_poison_curve(rows, title: str = "ASR against the share of poisoned normals"):
    """Mean ASR, conditional ASR and miss rate at tau_95 against rho, from rows of a results table."""
    from .summaries import mean_by

    means = mean_by(rows, "poison_ratio", ("asr_95", "conditional_asr_95", "miss_rate_95"))
    rhos = sorted(means, key=float)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for column, label, group in (("asr_95", "ASR", "anomalous + trigger"),
                                 ("conditional_asr_95", "conditional ASR", "poisoned"),
                                 ("miss_rate_95", "miss rate (no trigger)", "anomalous")):
        st = style(group)
        ax.plot([float(r) for r in rhos], [means[r][column] for r in rhos], marker=st["marker"], color=st["color"],
                linestyle=st["linestyle"], label=label)
    ax.set_ylim(-0.02, 1.02)
    return _finish(fig, ax, "poison ratio rho (share of normal training images triggered)",
                   "share of test anomalies judged normal", title)


# what each column of a results table is, as a dot plot's legend says it (and which course style draws it)
DOT_METRICS = {"asr_95": ("ASR@95 (triggered anomalies passing)", "anomalous + trigger"),
               "miss_rate_95": ("miss rate@95 (no trigger)", "anomalous"),
               "auc_backdoored": ("clean AUC of the model", "normal"),
               "asr_after": ("ASR@95 after the defense", "anomalous + trigger"),
               "asr_before": ("ASR@95 before", "poisoned"),
               "false_alarm_after": ("false alarms after", "normal"),
               "tpr": ("flagged: poisoned or triggered (TPR)", "anomalous + trigger"),
               "fpr": ("flagged: clean (FPR)", "normal")}


def plot_groups(rows, group_of, metrics=("asr_95", "miss_rate_95"), order=None, title: str = "", xlabel: str = "",
                ylabel: str = "group"):
    """A dot plot of a results table: one row per group, every cell a small dot, the group's mean a large marker
    with a bar of +-1 standard deviation, one marker and colour per metric (``DOT_METRICS``; offset so none hide).

    ``rows``: dicts (a shipped table's CSV rows); ``group_of(row)`` -> the group's label, or None to leave the
    row out; ``order``: the groups top to bottom (default: first seen)."""
    groups: dict = {}
    for r in rows:
        g = group_of(r)
        if g is not None:
            groups.setdefault(g, []).append(r)
    labels = [g for g in (order or groups) if g in groups]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(labels) + 1.4))
    offsets = np.linspace(-0.2, 0.2, len(metrics)) if len(metrics) > 1 else [0.0]
    for (metric, dy) in zip(metrics, offsets):
        name, group = DOT_METRICS.get(metric, (metric, metric))
        st, named = style(group, list(metrics).index(metric)), False
        for y, label in enumerate(labels):
            values = np.array([float(r[metric]) for r in groups[label] if r.get(metric) not in ("", None)])
            if not values.size:
                continue
            ax.plot(values, np.full(values.size, y + dy), linestyle="none", marker=st["marker"], markersize=3,
                    color=st["color"], alpha=0.35)
            ax.errorbar(values.mean(), y + dy, xerr=values.std(), marker=st["marker"], markersize=7, color=st["color"],
                        capsize=3, linestyle="none", label=None if named else name)
            named = True
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, ax, xlabel or "share (small dots: cells; large: their mean, bar: +-1 std)", ylabel, title,
                   legend={"fontsize": 8, "loc": "lower center", "bbox_to_anchor": (0.5, 1.08), "ncol": 2,
                           "frameon": False})
