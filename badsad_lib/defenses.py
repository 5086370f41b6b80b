"""Defenses against a backdoored DeepSAD, adapted to a one-class, score-only detector (DESIGN 2.4).

What the defender has (the outsourcing victim): the trained model, the training set it handed
over (with the poisoned normals, unmarked), its own clean normal images (the validation split,
halved: one half to repair with, one to set thresholds on), and the few labeled anomalies of
the training set. It does not know the trigger, the poisoned indices or the attack.

Every defense returns a ``DefenseResult``: clean AUC and ASR at tau_95 before and after (the
threshold re-set on the defender's clean normals after the defense), DER (DESIGN 2.3), and
TPR/FPR where the defense detects something (poisoned training images, or triggered inputs).

- ``spectral_signatures`` / ``activation_clustering``: training-set inspection on phi(x); they
  detect, they do not change the model (retraining on the cleaned set is the victim doing the
  training itself, which the threat model rules out, and plain DeepSAD on the poisoned set has
  no backdoor anyway: lesson 02).
- ``strip``: test-time inspection. Superimpose the input on clean normals; a triggered input keeps
  its trigger in every blend and is scored consistently normal, while a real normal overlaid with
  another digit looks unusual. Low mean blend score => flagged as triggered (score consistency in
  place of STRIP's label entropy).
- ``fine_pruning``: zero the inputs of phi's last layer least active on clean normals (``ratio``),
  then fine-tune with the DeepSAD loss on clean normals, c frozen. ``ratio=0`` is plain fine-tuning.
- ``preprocess``: score a transformed input: erase the corners, blur, or shrink-and-pad.
- ``reverse_trigger``: Neural Cleanse for the one target ("normal"): search for the smallest mask m
  and pattern p that make anomalies pass tau_95. The anomalies are the labeled ones plus surrogate
  anomalies the defender makes from its own normals (strong content changes). NC's cross-label
  outlier test cannot exist with one class; it is replaced by a size budget and a held-out test:
  flagged when a mask of at most ``budget`` of the image makes most held-out anomalies pass. The
  model then unlearns the reversed trigger: fine-tuning with the stamped anomalies pushed away
  (y = -1) and clean normals pulled in. Caveat: the surrogates come from the same family of
  content changes that our BadSAD trains on, which helps this defense; other changes may not.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .deepsad import DeepSAD
from .metrics import attack_success_rate, auc, defense_effectiveness_rate, threshold
from .triggers import Trigger, apply_trigger

DEFENSES = ("spectral", "clustering", "strip", "fine_tuning", "fine_pruning", "preprocess", "reverse_trigger")


@dataclass
class Scenario:
    """A handed-over model and what the defender and the evaluator know (N training images)."""
    model: DeepSAD
    x_train: torch.Tensor          # (N, C, H, W) the training set as trained on (poisoned normals included)
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
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def scenario_for(model: DeepSAD, split, trigger: Trigger, strength: float, poison_ratio: float,
                 seed: int = 0) -> Scenario:
    """The scenario of a model backdoored on ``split`` (the poisoned training set is rebuilt from the seed)."""
    from .attack import poison_normals

    x_train, poisoned = poison_normals(split.x_train, split.train_labels, split.semi_targets, split.normal_class,
                                       trigger, poison_ratio, strength, seed)
    return Scenario(model, x_train, split.semi_targets, split.x_val, split.x_test, split.y_test, trigger,
                    float(strength), poisoned)


def run_defenses(names, s: Scenario) -> list[dict]:
    """Every defense in ``names`` on scenario ``s``, as JSON-ready dicts."""
    return [run_defense(name, s).to_dict() for name in names]


def _asr_auc(score_fn, s: Scenario, tau: float | None = None) -> tuple[float, float, float]:
    """(clean AUC, ASR at tau, tau) of a scoring pipeline x -> scores (N,); tau defaults to tau_95 of the pipeline."""
    if tau is None:
        tau = threshold(score_fn(s.threshold_normals), 95)
    anomalies = s.x_test[s.y_test == 1]
    asr = attack_success_rate(score_fn(apply_trigger(anomalies, s.trigger, s.strength)), tau)
    return auc(score_fn(s.x_test), s.y_test.numpy()), asr, tau


def _result(name: str, s: Scenario, after_fn=None, start: float = 0.0, after_tau: float | None = None,
            **kwargs) -> DefenseResult:
    auc_b, asr_b, _ = _asr_auc(s.model.decision_function, s)
    r = DefenseResult(name, auc_b, asr_b, **kwargs)
    if after_fn is not None:
        r.auc_after, r.asr_after, _ = _asr_auc(after_fn, s, after_tau)
        r.der = defense_effectiveness_rate(asr_b, r.asr_after, auc_b, r.auc_after)
    r.seconds = time.perf_counter() - start
    return r


def _detection(flags: np.ndarray, s: Scenario, candidates: np.ndarray) -> tuple[float, float]:
    """TPR over the poisoned images and FPR over the clean ones, among ``candidates`` (indices)."""
    poisoned = np.isin(candidates, s.poisoned)
    tpr = float(flags[poisoned].mean()) if poisoned.any() else float("nan")
    return tpr, float(flags[~poisoned].mean())


# ------------------------------------------------------------------ training-set inspection
def spectral_scores(codes: np.ndarray) -> np.ndarray:
    """Spectral-signature outlier scores (N,): squared projection of centred codes (N, d) on their top singular vector."""
    centred = codes - codes.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[0]) ** 2


def spectral_signatures(s: Scenario, expected_ratio: float = 0.1) -> DefenseResult:
    """Flag the 1.5 x ``expected_ratio`` unlabeled training images with the largest spectral scores."""
    start = time.perf_counter()
    candidates = np.flatnonzero((s.semi_targets == 0).numpy())
    scores = spectral_scores(s.model.transform(s.x_train[candidates]))
    n_flag = int(round(1.5 * expected_ratio * len(candidates)))
    flags = np.zeros(len(candidates), dtype=bool)
    flags[np.argsort(scores)[::-1][:n_flag]] = True
    tpr, fpr = _detection(flags, s, candidates)
    return _result("spectral", s, start=start, tpr=tpr, fpr=fpr, details={"flagged": int(n_flag)})


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
    return _result("clustering", s, start=start, tpr=tpr, fpr=fpr, details={"small_cluster_share": share})


# ------------------------------------------------------------------ test-time inspection
def strip_statistic(model: DeepSAD, x: torch.Tensor, overlays: torch.Tensor, n_blends: int = 8,
                    seed: int = 0) -> np.ndarray:
    """Mean log score of ``x`` (N, C, H, W) superimposed (added, clipped) on ``n_blends`` random clean normals: (N,)."""
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(overlays), (n_blends,), generator=gen)
    logs = [np.log(model.decision_function((x + overlays[j]).clamp(0, 1)) + 1e-12) for j in pick.tolist()]
    return np.mean(logs, axis=0)


def strip(s: Scenario, false_positive: float = 0.05, n_blends: int = 8) -> DefenseResult:
    """Flag inputs whose blends stay consistently normal; threshold at ``false_positive`` on clean normals.

    After the defense an input is anomalous if its score exceeds the detector's own tau_95 or STRIP
    flags it, so the two false-alarm rates add up (``details["false_alarm_after"]``, test normals).
    """
    start = time.perf_counter()
    overlays, reference = s.repair_normals, s.threshold_normals
    cut = float(np.percentile(strip_statistic(s.model, reference, overlays, n_blends), 100 * false_positive))
    tau = threshold(s.model.decision_function(reference), 95)

    def pipeline(x):  # flagged inputs get a score above every threshold
        flagged = strip_statistic(s.model, x, overlays, n_blends) < cut
        return np.where(flagged, 1e12, s.model.decision_function(x))
    triggered = apply_trigger(s.x_test[s.y_test == 1], s.trigger, s.strength)
    tpr = float(np.mean(strip_statistic(s.model, triggered, overlays, n_blends) < cut))
    fpr = float(np.mean(strip_statistic(s.model, s.x_test[s.y_test == 0], overlays, n_blends) < cut))
    false_alarm = float(np.mean(pipeline(s.x_test[s.y_test == 0]) > tau))
    return _result("strip", s, after_fn=pipeline, after_tau=tau, start=start, tpr=tpr, fpr=fpr,
                   details={"cut": cut, "false_alarm_after": false_alarm})


# ------------------------------------------------------------------ model repair
def feature_activity(model: DeepSAD, x: torch.Tensor) -> torch.Tensor:
    """Mean activation of each input of phi's last linear layer over images x: (features,)."""
    seen = []
    last = model.net_[-1]
    handle = last.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    model.transform(x)
    handle.remove()
    return torch.cat(seen).mean(dim=0)


def prune_dormant(model: DeepSAD, x_clean: torch.Tensor, ratio: float) -> DeepSAD:
    """A copy of ``model`` whose last layer ignores the ``ratio`` share of its inputs least active on
    x_clean; the pruned weights stay 0 during later fine-tuning (their gradient is masked)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio {ratio} must be in [0, 1)")
    pruned = DeepSAD.from_state(model.state(), device=model.device)
    activity = feature_activity(pruned, x_clean)
    n = int(round(ratio * activity.numel()))
    keep = torch.ones_like(activity)
    keep[torch.argsort(activity)[:n]] = 0.0
    last = pruned.net_[-1]
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


def preprocess(s: Scenario, method: str = "erase_corners") -> DefenseResult:
    """Score preprocess(x) instead of x (threshold re-set on preprocessed clean normals)."""
    start = time.perf_counter()
    return _result("preprocess", s, after_fn=lambda x: s.model.decision_function(preprocess_images(x, method)),
                   start=start, details={"method": method})


# ------------------------------------------------------------------ trigger reverse-engineering
def surrogate_anomalies(x_clean: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Anomalies the defender can make from its own clean normals (N, C, H, W): strong random content
    changes (rotation, flips, overlays, noise, erased blocks; ``attack.content_views``)."""
    from .attack import content_views

    return content_views(x_clean, torch.Generator().manual_seed(seed + 31337))


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
    net, log_tau, lam = model.net_.eval(), float(np.log(tau)), 1e-3
    best = (None, None, 1.0)
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            m, p = torch.sigmoid(m_logit), torch.sigmoid(p_logit)
            dist = ((net(x * (1 - m) + p * m) - model.c_) ** 2).sum(1)
            loss = F.relu(torch.log(dist + 1e-6) - log_tau + margin).mean() + lam * m.sum() / (h * w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            met = float((dist.detach() <= tau).float().mean()) >= target
            if met and float(m.detach().mean()) < best[2]:
                best = (m.detach().cpu(), p.detach().cpu(), float(m.detach().mean()))
            lam = lam * 1.2 if met else lam / 1.2
    finally:
        for p in net.parameters():
            p.requires_grad_(True)
    return best


def find_trigger(s: Scenario, target: float = 0.8, steps: int = 300) -> dict:
    """Reverse-engineer a "make it normal" trigger on scenario ``s`` and test it on held-out images.

    The images to flip are half the labeled anomalies plus surrogate anomalies made from half the
    defender's repair normals; the other halves are held out. Returns {"mask" (1, H, W) or None,
    "pattern" (C, H, W) or None, "share" (fraction of the image the mask covers; 1.0 if none met
    ``target``), "held_out_pass_rate" (share of held-out images passing tau_95 once stamped),
    "tau", "anomalies" (all of them, for unlearning)}.
    """
    known = s.labeled_anomalies
    if len(known) == 0:
        raise ValueError("reverse_trigger needs labeled anomalies in the training set (labeled ratio > 0)")
    surrogates = surrogate_anomalies(s.repair_normals)
    k, n = (len(known) + 1) // 2, len(surrogates) // 2
    tau = threshold(s.model.decision_function(s.threshold_normals), 95)
    mask, pattern, share = reverse_engineer(s.model, torch.cat([known[:k], surrogates[:n]]), tau, steps=steps,
                                            target=target)
    held_out = torch.cat([known[k:], surrogates[n:]])
    pass_rate = 0.0 if mask is None else attack_success_rate(
        s.model.decision_function(held_out * (1 - mask) + pattern * mask), tau)
    return {"mask": mask, "pattern": pattern, "share": share, "held_out_pass_rate": pass_rate, "tau": tau,
            "anomalies": torch.cat([known, surrogates])}


def reverse_trigger(s: Scenario, budget: float = 0.1, target: float = 0.8, steps: int = 300, epochs: int = 10,
                    lr: float = 1e-4) -> DefenseResult:
    """Neural Cleanse for one target, with a size budget and a held-out test in place of its outlier test.

    NC flags a label whose smallest flipping mask is an outlier among all labels; with one class
    there is nothing to compare with. What we test instead: is there a *small, universal* "make it
    normal" mask (``find_trigger``)? Flagged when the smallest mask meeting ``target`` covers at most
    ``budget`` of the image and more than half the held-out images then pass tau_95. A clean model
    needs a large mask to make arbitrary content normal; a backdoored one has a small key. If
    flagged, the model unlearns the reversed trigger: fine-tuning pulls clean normals in and pushes
    the labeled and surrogate anomalies away, with and without the reversed trigger.
    """
    start = time.perf_counter()
    found = find_trigger(s, target, steps)
    flagged = found["share"] <= budget and found["held_out_pass_rate"] > 0.5
    details = {"mask_share": found["share"], "held_out_pass_rate": found["held_out_pass_rate"], "flagged": flagged}
    if not flagged:
        return _result("reverse_trigger", s, after_fn=s.model.decision_function, start=start, details=details)
    repaired = DeepSAD.from_state(s.model.state(), device=s.model.device)
    mask, pattern, anomalies = found["mask"], found["pattern"], found["anomalies"]
    x = torch.cat([s.repair_normals, anomalies, anomalies * (1 - mask) + pattern * mask])
    y = torch.cat([torch.zeros(len(s.repair_normals)), -torch.ones(2 * len(anomalies))]).long()
    repaired.fine_tune(x, y, epochs=epochs, lr=lr)
    return _result("reverse_trigger", s, after_fn=repaired.decision_function, start=start, details=details)


def fine_tuning(s: Scenario, **options) -> DefenseResult:
    """Fine-pruning with nothing pruned: plain fine-tuning on clean normals, c frozen."""
    return fine_pruning(s, ratio=0.0, **options)


RUNNERS = {"spectral": spectral_signatures, "clustering": activation_clustering, "strip": strip,
           "fine_tuning": fine_tuning, "fine_pruning": fine_pruning, "preprocess": preprocess,
           "reverse_trigger": reverse_trigger}
assert tuple(RUNNERS) == DEFENSES


def run_defense(name: str, s: Scenario, **options) -> DefenseResult:
    """Run defense ``name`` (one of DEFENSES) on scenario ``s``."""
    if name not in RUNNERS:
        raise ValueError(f"unknown defense {name!r}: choose one of {', '.join(DEFENSES)}")
    return RUNNERS[name](s, **options)
