"""Defenses against a backdoored DeepSAD, adapted to a one-class, score-only detector.

No published defense had been evaluated against a backdoored deep one-class detector, so each one
here is adapted from the classifier setting and measured on equal terms. What the defender has
(the outsourcing victim): the trained model, the training set it was trained on (with the
poisoned images, unmarked), its own clean normal images (the validation split, halved: one half
to repair with, one to set thresholds on), and the few labeled anomalies of the training set. It
does not know the trigger, which images are poisoned, the poison ratio or the attack.

Equal terms: after a defense, the deployed decision is re-calibrated on the defender's clean
normals to the same 5% false-alarm budget as before (for STRIP, the detector's threshold and
STRIP's cut share that budget), and ``false_alarm_after`` reports the false-alarm rate measured on
the clean test normals. Every defense returns a ``DefenseResult``: clean AUC and ASR at tau_95
before and after, DER, and TPR/FPR where it detects (poisoned training images, or triggered inputs).

- ``spectral`` (Tran et al., NeurIPS 2018) / ``clustering`` (Chen et al., arXiv 1811.03728):
  training-set inspection on phi(x). They detect, they do not change the model (retraining on the
  cleaned set is the victim doing the training itself, which the threat model rules out).
  Spectral signatures estimates how many images to flag (a robust outlier rule) instead of being told.
- ``strip`` (Gao et al., ACSAC 2019): superimpose the input on clean normals; a triggered input
  keeps its trigger in every blend and is scored consistently normal. Score consistency replaces
  STRIP's label entropy.
- ``fine_tuning`` / ``fine_pruning`` (Liu et al., RAID 2018): prune the inputs of phi's last layer
  least active on clean normals, then fine-tune with the DeepSAD loss on clean normals, c frozen.
  ``bn_recalibration`` is their control: it only re-estimates BatchNorm statistics on clean
  normals (the attack skews them, and fine-tuning re-estimates them too), with no weight update.
- ``preprocess``: score a transformed input (erase the corners, blur, or shrink-and-pad). Erasing
  the corners uses knowledge of where the trigger sits.
- ``reverse_trigger`` / ``reverse_trigger_distinct`` (Neural Cleanse, Wang et al., S&P 2019):
  search the smallest mask and pattern that make anomalies pass tau_95. The anomalies are the
  labeled ones plus surrogate anomalies the defender makes from its own normals, either with the
  attack's own family of content changes (which favours the defense) or with a distinct family
  (jigsaw-shuffled tiles). NC's cross-label outlier test cannot exist with one class; a size
  budget and a held-out test replace it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .deepsad import DeepSAD
from .metrics import attack_success_rate, auc, defense_effectiveness_rate, threshold
from .registry import DEFENSES
from .triggers import Trigger, apply_trigger

FALSE_ALARM_BUDGET = 0.05


@dataclass
class Scenario:
    """A handed-over model and what the defender and the evaluator know (N training images)."""
    model: DeepSAD
    x_train: torch.Tensor          # (N, C, H, W) the training set as trained on (poisoned images included)
    semi_targets: torch.Tensor     # (N,) 0 unlabeled, -1 labeled anomaly, +1 labeled normal
    x_clean: torch.Tensor          # (M, C, H, W) the defender's own clean normals
    x_test: torch.Tensor           # (T, C, H, W)
    y_test: torch.Tensor           # (T,) 1 = anomaly
    trigger: Trigger               # for evaluation only: defenses never read it
    strength: float
    poisoned: np.ndarray           # indices into x_train, for evaluation only

    @property
    def repair_normals(self) -> torch.Tensor:
        return self.x_clean[: len(self.x_clean) // 2]

    @property
    def threshold_normals(self) -> torch.Tensor:
        return self.x_clean[len(self.x_clean) // 2:]

    @property
    def labeled_anomalies(self) -> torch.Tensor:
        return self.x_train[self.semi_targets == -1]


@dataclass
class DefenseResult:
    defense: str
    auc_before: float
    asr_before: float
    auc_after: float | None = None    # None: the defense only detects, the model is unchanged
    asr_after: float | None = None
    der: float | None = None
    tpr: float | None = None          # share of poisoned training images / triggered inputs flagged
    fpr: float | None = None          # share of clean training normals / clean test inputs flagged
    false_alarm_after: float | None = None  # clean test normals rejected by the defended pipeline
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def scenario_for(spec, split, model: DeepSAD, trigger=None) -> Scenario:
    """The scenario of ``model`` backdoored by run ``spec`` on ``split`` (the training set is rebuilt from the spec;
    a clean run's is the split's own, with nothing poisoned; ``trigger``: the attack's own, when it was not
    ``spec.trigger``)."""
    from .attack import poisoned_training_set
    from .triggers import trigger_for

    trigger = trigger_for(split.x_train, spec.trigger) if trigger is None else trigger
    if spec.attacked:
        x_train, semi, poisoned = poisoned_training_set(spec, split, trigger)
    else:  # a clean run trained on the split as it is: nothing poisoned
        x_train, semi, poisoned = split.x_train, split.semi_targets, np.array([], dtype=np.int64)
    return Scenario(model, x_train, semi, split.x_val, split.x_test, split.y_test, trigger, float(spec.strength),
                    poisoned)


def run_defenses(names, s: Scenario) -> list[dict]:
    """Every defense in ``names`` on scenario ``s``, as JSON-ready dicts."""
    return [run_defense(name, s).to_dict() for name in names]


def _evaluate(score_fn, s: Scenario, tau: float | None = None) -> dict:
    """Clean AUC, ASR and test false-alarm rate of a pipeline x -> scores (N,) at tau (default: its tau_95)."""
    if tau is None:
        tau = threshold(score_fn(s.threshold_normals), 100 * (1 - FALSE_ALARM_BUDGET))
    anomalies = s.x_test[s.y_test == 1]
    scores = score_fn(s.x_test)
    return {"auc": auc(scores, s.y_test.numpy()), "tau": tau,
            "asr": attack_success_rate(score_fn(apply_trigger(anomalies, s.trigger, s.strength)), tau),
            "false_alarm": float(np.mean(scores[s.y_test.numpy() == 0] > tau))}


def _result(name: str, s: Scenario, after_fn=None, start: float = 0.0, after_tau: float | None = None,
            **kwargs) -> DefenseResult:
    before = _evaluate(s.model.decision_function, s)
    r = DefenseResult(name, before["auc"], before["asr"], **kwargs)
    if after_fn is not None:
        after = _evaluate(after_fn, s, after_tau)
        r.auc_after, r.asr_after, r.false_alarm_after = after["auc"], after["asr"], after["false_alarm"]
        r.der = defense_effectiveness_rate(r.asr_before, r.asr_after, r.auc_before, r.auc_after)
    r.seconds = time.perf_counter() - start
    return r


def _detection(flags: np.ndarray, s: Scenario, candidates: np.ndarray) -> tuple[float | None, float | None]:
    """TPR over the poisoned images and FPR over the clean ones, among ``candidates`` (indices); None if empty."""
    poisoned = np.isin(candidates, s.poisoned)
    tpr = float(flags[poisoned].mean()) if poisoned.any() else None
    fpr = float(flags[~poisoned].mean()) if (~poisoned).any() else None
    return tpr, fpr


def _detection_auroc(scores: np.ndarray, s: Scenario, candidates: np.ndarray) -> float | None:
    """Threshold-free: ROC AUC of ``scores`` for poisoned (1) against clean (0) candidates."""
    poisoned = np.isin(candidates, s.poisoned)
    return auc(scores, poisoned.astype(int)) if 0 < poisoned.sum() < len(poisoned) else None


# ------------------------------------------------------------------ training-set inspection
def spectral_scores(codes: np.ndarray) -> np.ndarray:
    """Spectral-signature outlier scores (N,): squared projection of centred codes (N, d) on their top singular vector."""
    centred = codes - codes.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[0]) ** 2


def robust_outliers(scores: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Flags (N,) for scores above median + k * 1.4826 * MAD: how many to flag, estimated, not given."""
    med = np.median(scores)
    mad = 1.4826 * np.median(np.abs(scores - med)) + 1e-12
    return scores > med + k * mad


def spectral_signatures(s: Scenario, scores_fn: Callable = spectral_scores,
                        sweep=(0.05, 0.1, 0.15, 0.2, 0.3)) -> DefenseResult:
    """Flag unlabeled training images whose spectral score is a robust outlier (``robust_outliers``).

    The poison ratio is not given to the defender: the cut is estimated from the scores. For
    reference, ``details["sweep"]`` has TPR/FPR when the top share f of images is flagged, for each
    f in ``sweep``, and ``details["detection_auroc"]`` the threshold-free separation.
    """
    start = time.perf_counter()
    candidates = np.flatnonzero((s.semi_targets == 0).numpy())
    scores = np.asarray(scores_fn(s.model.transform(s.x_train[candidates])), dtype=float)
    flags = robust_outliers(scores)
    tpr, fpr = _detection(flags, s, candidates)
    order = np.argsort(scores)[::-1]
    sweep_rates = {}
    for share in sweep:
        top = np.zeros(len(candidates), dtype=bool)
        top[order[: int(round(share * len(candidates)))]] = True
        sweep_rates[f"{share:g}"] = dict(zip(("tpr", "fpr"), _detection(top, s, candidates)))
    return _result("spectral", s, start=start, tpr=tpr, fpr=fpr,
                   details={"flagged_share": float(flags.mean()), "sweep": sweep_rates,
                            "detection_auroc": _detection_auroc(scores, s, candidates)})


def activation_clustering(s: Scenario, max_share: float = 0.35, seed: int = 0) -> DefenseResult:
    """2-means on the 10-D PCA of phi(x) of unlabeled training images; a cluster smaller than
    ``max_share`` of them is flagged as poisoned (none when both are larger)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    start = time.perf_counter()
    candidates = np.flatnonzero((s.semi_targets == 0).numpy())
    codes = s.model.transform(s.x_train[candidates])
    reduced = PCA(n_components=min(10, codes.shape[1]), random_state=seed).fit_transform(codes)
    labels = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
    small = int(np.argmin(np.bincount(labels, minlength=2)))
    share = float(np.mean(labels == small))
    flags = (labels == small) if share < max_share else np.zeros(len(labels), dtype=bool)
    tpr, fpr = _detection(flags, s, candidates)
    return _result("clustering", s, start=start, tpr=tpr, fpr=fpr,
                   details={"small_cluster_share": share, "flagged_share": float(flags.mean())})


# ------------------------------------------------------------------ test-time inspection
def strip_statistic(model: DeepSAD, x: torch.Tensor, overlays: torch.Tensor, n_blends: int = 8,
                    seed: int = 0) -> np.ndarray:
    """Mean log score of ``x`` (N, C, H, W) superimposed (added, clipped) on ``n_blends`` random clean normals: (N,)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(overlays), (n_blends,), generator=gen)
    logs = [np.log(model.decision_function((x + overlays[j]).clamp(0, 1)) + 1e-12) for j in pick.tolist()]
    return np.mean(logs, axis=0)


def strip(s: Scenario, strip_share: float = 0.5, n_blends: int = 8) -> DefenseResult:
    """STRIP beside the detector, within the same total false-alarm budget (5% on clean normals).

    An input is rejected when STRIP flags it (its blends stay consistently normal) or its score
    exceeds a threshold. STRIP's cut takes ``strip_share`` of the budget on the defender's clean
    normals, and the score threshold is then lowered... raised, to the percentile at which STRIP
    and the threshold together reject 5% of those normals. ``false_alarm_after`` checks it on test normals.
    """
    start = time.perf_counter()
    overlays, reference = s.repair_normals, s.threshold_normals
    stat = strip_statistic(s.model, reference, overlays, n_blends)
    budget = int(np.floor(FALSE_ALARM_BUDGET * len(reference)))  # rejections allowed among these normals
    cut = float(np.sort(stat)[int(np.floor(budget * strip_share))])  # STRIP flags fewer than its share
    flagged_ref = stat < cut
    ref_scores = s.model.decision_function(reference)
    allowed = budget - int(flagged_ref.sum())
    rest = np.sort(ref_scores[~flagged_ref])[::-1]
    tau = float(rest[max(allowed, 0)]) if len(rest) > max(allowed, 0) else float(rest.min())

    def pipeline(x):  # flagged inputs get a score above every threshold
        flagged = strip_statistic(s.model, x, overlays, n_blends) < cut
        return np.where(flagged, np.inf, s.model.decision_function(x))
    triggered = apply_trigger(s.x_test[s.y_test == 1], s.trigger, s.strength)
    tpr = float(np.mean(strip_statistic(s.model, triggered, overlays, n_blends) < cut))
    fpr = float(np.mean(strip_statistic(s.model, s.x_test[s.y_test == 0], overlays, n_blends) < cut))

    def ranked(x):  # AUC needs finite scores: flagged inputs rank above every unflagged one
        scores = pipeline(x)
        top = np.max(scores[np.isfinite(scores)], initial=0.0)
        return np.where(np.isfinite(scores), scores, top * 2 + 1)
    return _result("strip", s, after_fn=ranked, after_tau=tau, start=start, tpr=tpr, fpr=fpr,
                   details={"cut": cut, "tau": tau, "strip_share": strip_share})


# ------------------------------------------------------------------ model repair
def feature_activity(model: DeepSAD, x: torch.Tensor) -> torch.Tensor:
    """Mean activation of each input of phi's last linear layer over images x: (features,)."""
    seen = []
    last = model.encoder[-1]
    handle = last.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    model.transform(x)
    handle.remove()
    return torch.cat(seen).mean(dim=0)


def prune_dormant(model: DeepSAD, x_clean: torch.Tensor, ratio: float) -> DeepSAD:
    """A copy of ``model`` whose last layer ignores the ``ratio`` share of its inputs least active on
    x_clean; the pruned weights stay 0 during later fine-tuning (their gradient is masked)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio {ratio} must be in [0, 1)")
    pruned = model.copy()
    activity = feature_activity(pruned, x_clean)
    n = int(round(ratio * activity.numel()))
    keep = torch.ones_like(activity)
    keep[torch.argsort(activity)[:n]] = 0.0
    last = pruned.encoder[-1]
    with torch.no_grad():
        last.weight.mul_(keep)
    last.weight.register_hook(lambda g: g * keep)
    return pruned


def fine_pruning(s: Scenario, ratio: float = 0.5, epochs: int = 10, lr: float = 1e-4) -> DefenseResult:
    """Prune ``ratio`` of the last layer's inputs (dormant on clean normals), then fine-tune on clean normals."""
    start = time.perf_counter()
    repaired = prune_dormant(s.model, s.repair_normals, ratio)
    if epochs > 0:
        repaired.fine_tune(s.repair_normals, epochs=epochs, lr=lr)
    name = "fine_pruning" if ratio > 0 else "fine_tuning"
    return _result(name, s, after_fn=repaired.decision_function, start=start,
                   details={"ratio": ratio, "epochs": epochs, "lr": lr})


def fine_tuning(s: Scenario, **options) -> DefenseResult:
    """Fine-pruning with nothing pruned: plain fine-tuning on clean normals, c frozen."""
    return fine_pruning(s, ratio=0.0, **options)


@torch.no_grad()
def recalibrate_batchnorm(model: DeepSAD, x: torch.Tensor, batch_size: int = 128) -> DeepSAD:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on x (no weight changes)."""
    fixed = model.copy()
    net = fixed.encoder
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    net.train()
    x = x.to(fixed.device)
    for i in range(0, len(x) - 1, batch_size):
        net(x[i:i + batch_size])
    net.eval()
    return fixed


def bn_recalibration(s: Scenario) -> DefenseResult:
    """Control for fine-tuning: only re-estimate BatchNorm statistics on the defender's clean normals."""
    start = time.perf_counter()
    fixed = recalibrate_batchnorm(s.model, s.repair_normals)
    return _result("bn_recalibration", s, after_fn=fixed.decision_function, start=start)


# ------------------------------------------------------------------ input preprocessing
def preprocess_images(x: torch.Tensor, method: str = "erase_corners", size: int | None = None) -> torch.Tensor:
    """erase_corners: zero four size x size corner squares; blur: 3x3 box blur; shrink: scale by 0.75 and pad."""
    h = x.shape[-1]
    if method == "erase_corners":
        k = size or max(2, round(h / 7))
        out = x.clone()
        for r in (slice(0, k), slice(h - k, h)):
            for c in (slice(0, k), slice(h - k, h)):
                out[..., r, c] = 0.0
        return out
    if method == "blur":
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if method == "shrink":
        small = F.interpolate(x, scale_factor=0.75, mode="bilinear", align_corners=False)
        pad = h - small.shape[-1]
        return F.pad(small, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    raise ValueError(f"unknown preprocessing {method!r}: choose erase_corners, blur or shrink")


def preprocess(s: Scenario, method: str = "erase_corners", transform: Callable | None = None) -> DefenseResult:
    """Score transform(x) instead of x (threshold re-set on transformed clean normals).

    ``transform`` defaults to ``preprocess_images(x, method)`` (lesson 04 passes the learner's own).
    """
    start = time.perf_counter()
    label = method if transform is None else getattr(transform, "__name__", "custom")
    transform = transform or (lambda x: preprocess_images(x, method))
    return _result("preprocess", s, after_fn=lambda x: s.model.decision_function(transform(x)), start=start,
                   details={"method": label})


# ------------------------------------------------------------------ trigger reverse-engineering
def surrogate_anomalies(x_clean: torch.Tensor, seed: int = 0, family: str = "attack") -> torch.Tensor:
    """Anomalies the defender makes from its own clean normals (N, C, H, W).

    family "attack": strong random content changes (rotation, flips, overlays, noise, erased blocks),
    the same family the BadSAD attack trains on (``attack.content_views``), which favours the defense.
    family "distinct": jigsaw puzzles, every image cut into 4 x 4 tiles shuffled at random, a change
    the attack never makes.
    """
    from .attack import content_views

    gen = torch.Generator().manual_seed(seed + 31337)
    if family == "attack":
        return content_views(x_clean, gen)
    if family == "distinct":
        return jigsaw(x_clean, gen)
    raise ValueError(f"unknown surrogate family {family!r}: choose 'attack' or 'distinct'")


def jigsaw(x: torch.Tensor, generator: torch.Generator, tiles: int = 4) -> torch.Tensor:
    """Every image of x (N, C, H, W) cut into tiles x tiles blocks, shuffled independently per image."""
    n, c, h, w = x.shape
    th, tw = h // tiles, w // tiles
    core = x[..., : th * tiles, : tw * tiles]
    blocks = core.reshape(n, c, tiles, th, tiles, tw).permute(0, 2, 4, 1, 3, 5).reshape(n, tiles * tiles, c, th, tw)
    order = torch.stack([torch.randperm(tiles * tiles, generator=generator) for _ in range(n)]).to(x.device)
    shuffled = torch.gather(blocks, 1, order.view(n, -1, 1, 1, 1).expand_as(blocks))
    out = x.clone()
    out[..., : th * tiles, : tw * tiles] = shuffled.reshape(n, tiles, tiles, c, th, tw).permute(
        0, 3, 1, 4, 2, 5).reshape(n, c, th * tiles, tw * tiles)
    return out


def reverse_engineer(model: DeepSAD, images: torch.Tensor, tau: float, steps: int = 300, lr: float = 0.1,
                     target: float = 0.8, margin: float = 0.5, seed: int = 0):
    """Neural Cleanse's search for the smallest trigger that makes ``images`` (N, C, H, W) pass ``tau``.

    Optimises a mask m (1, H, W) and a pattern p (C, H, W), both in [0, 1], on
        mean relu(log d(x (1 - m) + p m) - log tau + margin) + lam * |m|_1 / (H W)
    with NC's adaptive cost: lam grows by 1.2 after every step in which at least ``target`` of the
    images pass tau and shrinks by 1.2 otherwise. Returns (m, p, share) for the smallest mask that met
    the target (share = mean of m, the fraction of the image it covers), or (None, None, 1.0) if none did.
    """
    gen = torch.Generator().manual_seed(seed)
    _, c, h, w = images.shape
    dev = model.device
    m_logit = (torch.randn(1, h, w, generator=gen) * 0.1 - 3).to(dev).requires_grad_()
    p_logit = (torch.randn(c, h, w, generator=gen) * 0.1).to(dev).requires_grad_()
    x = images.to(dev)
    opt = torch.optim.Adam([m_logit, p_logit], lr=lr)
    log_tau, lam = float(np.log(tau)), 1e-3
    best = (None, None, 1.0)
    with frozen(model.encoder):
        for _ in range(steps):
            m, p = torch.sigmoid(m_logit), torch.sigmoid(p_logit)
            dist = model.score_tensor(x * (1 - m) + p * m)
            loss = F.relu(torch.log(dist + 1e-6) - log_tau + margin).mean() + lam * m.sum() / (h * w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            met = float((dist.detach() <= tau).float().mean()) >= target
            if met and float(m.detach().mean()) < best[2]:
                best = (m.detach().cpu(), p.detach().cpu(), float(m.detach().mean()))
            lam = lam * 1.2 if met else lam / 1.2
    return best


@contextmanager
def frozen(module: torch.nn.Module):
    """Within the block, ``module``'s parameters take no gradient (a search through a fixed model); each
    parameter's own ``requires_grad`` comes back afterwards, so blocks nest."""
    params = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, before in params:
            p.requires_grad_(before)


def find_trigger(s: Scenario, target: float = 0.8, steps: int = 300, family: str = "attack",
                 search=reverse_engineer) -> dict:
    """Reverse-engineer a "make it normal" trigger on scenario ``s`` and test it on held-out images.

    The images to flip are half the labeled anomalies plus surrogate anomalies (``family``) made
    from half the defender's repair normals; the other halves are held out. Returns {"mask" (1, H, W)
    or None, "pattern" (C, H, W) or None, "share" (fraction of the image the mask covers; 1.0 if
    none met ``target``), "held_out_pass_rate" (share of held-out images passing tau_95 once
    stamped), "tau", "anomalies" (all of them, for unlearning)}. ``search``: the mask
    search, called as ``reverse_engineer`` is (lesson 04 passes the learner's own).
    """
    known = s.labeled_anomalies
    if len(known) == 0:
        raise ValueError("reverse_trigger needs labeled anomalies in the training set (labeled ratio > 0)")
    surrogates = surrogate_anomalies(s.repair_normals, family=family)
    k, n = (len(known) + 1) // 2, len(surrogates) // 2
    tau = threshold(s.model.decision_function(s.threshold_normals), 100 * (1 - FALSE_ALARM_BUDGET))
    with frozen(s.model.encoder):  # a learner's search need not freeze the model itself
        mask, pattern, share = search(s.model, torch.cat([known[:k], surrogates[:n]]), tau, steps=steps,
                                      target=target)
    held_out = torch.cat([known[k:], surrogates[n:]])
    pass_rate = 0.0 if mask is None else attack_success_rate(
        s.model.decision_function(held_out * (1 - mask) + pattern * mask), tau)
    return {"mask": mask, "pattern": pattern, "share": share, "held_out_pass_rate": pass_rate, "tau": tau,
            "anomalies": torch.cat([known, surrogates])}


def reverse_trigger(s: Scenario, budget: float = 0.1, target: float = 0.8, steps: int = 300, epochs: int = 10,
                    lr: float = 1e-4, family: str = "attack", found: dict | None = None) -> DefenseResult:
    """Neural Cleanse for one target, with a size budget and a held-out test in place of its outlier test.

    NC flags a label whose smallest flipping mask is an outlier among all labels; with one class
    there is nothing to compare with. What we test instead: is there a *small, universal* "make it
    normal" mask (``find_trigger``)? Flagged when the smallest mask meeting ``target`` covers at most
    ``budget`` of the image and more than half the held-out images then pass tau_95. A clean model
    needs a large mask to make arbitrary content normal; a backdoored one has a small key. If
    flagged, the model unlearns the reversed trigger: fine-tuning pulls clean normals in and pushes
    the labeled and surrogate anomalies away, with and without the reversed trigger. ``found``: a
    ``find_trigger`` result for this scenario and family, to reuse instead of searching again.
    """
    start = time.perf_counter()
    name = "reverse_trigger" if family == "attack" else "reverse_trigger_distinct"
    found = found or find_trigger(s, target, steps, family)
    flagged = found["share"] <= budget and found["held_out_pass_rate"] > 0.5
    details = {"mask_share": found["share"], "held_out_pass_rate": found["held_out_pass_rate"], "flagged": flagged,
               "surrogates": family}
    if not flagged:
        return _result(name, s, after_fn=s.model.decision_function, start=start, details=details)
    repaired = s.model.copy()
    mask, pattern, anomalies = found["mask"], found["pattern"], found["anomalies"]
    x = torch.cat([s.repair_normals, anomalies, anomalies * (1 - mask) + pattern * mask])
    y = torch.cat([torch.zeros(len(s.repair_normals)), -torch.ones(2 * len(anomalies))]).long()
    repaired.fine_tune(x, y, epochs=epochs, lr=lr)
    return _result(name, s, after_fn=repaired.decision_function, start=start, details=details)


def reverse_trigger_distinct(s: Scenario, **options) -> DefenseResult:
    """``reverse_trigger`` with surrogate anomalies from a family the attack never trains on (jigsaw)."""
    return reverse_trigger(s, family="distinct", **options)


RUNNERS = {"spectral": spectral_signatures, "clustering": activation_clustering, "strip": strip,
           "fine_tuning": fine_tuning, "bn_recalibration": bn_recalibration, "fine_pruning": fine_pruning,
           "preprocess": preprocess, "reverse_trigger": reverse_trigger,
           "reverse_trigger_distinct": reverse_trigger_distinct}
assert tuple(RUNNERS) == DEFENSES


def run_defense(name: str, s: Scenario, **options) -> DefenseResult:
    """Run defense ``name`` (one of DEFENSES) on scenario ``s``."""
    if name not in RUNNERS:
        raise ValueError(f"unknown defense {name!r}: choose one of {', '.join(DEFENSES)}")
    return RUNNERS[name](s, **options)
