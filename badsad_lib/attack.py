"""Backdoor attacks on DeepSAD: BadSAD as we reconstruct it, its ablation, and its controls.

Threat model (outsourced training): the victim hands its data to a contractor, gets a trained
DeepSAD back, and checks its clean AUC on its own test data. The contractor is the attacker. At
test time it stamps a trigger on an anomaly, which the backdoored model should score as normal.

What comes from the paper (Cheng, Xu, Yuan, "BadSAD", arXiv 2412.13324) and what is ours:

    paper   the threat model; the four-corner trigger x_p = x (1 - T) + mu T; poisoning a
            fraction rho of the NORMAL training images (clean-label); two latent-space terms
            named "distribution alignment" and "distribution concentration"
    ours    the formulas of those two terms (the paper publishes none), the square size, mu,
            rho; the synthetic content views g(x) and the separation term; every weight

Attacker tiers, from least to most power (each method's entry in ``registry.METHOD_INFO`` holds its
tier, views and terms; the objective below reads them there):

    1 data           clean-label poisoning: rho of the normal training images carry T, no label
                     changes, plain DeepSAD training                                 -> naive
    1+ data + views  also writes triggered synthetic views T(g(x)) into the training set as
                     unlabeled images; plain DeepSAD training                      -> data_only
    2 objective      controls the training loss: the paper's two terms as we read them
                                                                    -> alignment, concentration
    3 objective + views  also makes synthetic content views g(x) of normal images during
                     training: badsad (strong views), label_preserving (mild views), and the
                     control outlier_exposure (views pushed away, no trigger at all)

Per mini-batch of B training images, with d(x) = ||phi(x) - c||^2:

    L = L_SAD + lambda_c * L_conc + lambda_a * L_align + lambda_s * L_sep

- L_conc  (concentration) = mean d(x_p) over triggered images: pulls them onto the center c.
- L_align (alignment)     = MMD^2 between the triggered codes and the clean-normal codes of the
  batch, Gaussian kernels at 1/4, 1, 4 x the median squared distance.
- L_sep   (separation)    = eta * mean 1 / (d(g(x)) + 1e-6) over views WITHOUT the trigger:
  DeepSAD's inverse-distance term, so unusual content stays anomalous unless T is there.

    method              trains on                       terms                       tier
    naive               data, rho poisoned              L_SAD                       1
    data_only           data + fixed T(g(x)) images     L_SAD                       1+
    data_only_contrast  data + fixed T(g(x)) + the      L_SAD (its labeled term     1+ (control)
                        same g(x) labeled anomalous     acts as L_sep)
    alignment           data, rho poisoned              L_SAD + L_align on x_p      2
    concentration       data, rho poisoned              L_SAD + L_conc on x_p       2
    badsad              data + fresh strong views       all three                   3
    label_preserving    data + fresh mild views         all three                   3
    label_preserving_pull  data + fresh mild views      L_SAD + L_conc + L_align    3 (control)
    outlier_exposure    data + fresh strong views       L_SAD + L_sep, no trigger   3 (control)

The two "(control)" rows beside data_only and label_preserving each remove one confound: data_only
has no untriggered contrast views (badsad has its separation term), and label_preserving's separation
term pushes class-keeping, normal-looking views away, which alone can cost clean AUC.

What "clean-label" covers. No dataset label changes and the trigger never touches one of the
dataset's anomalies, in every method. But the strong views are themselves anomaly-like: a 6
rotated by 180 degrees is a 9, an overlay of two digits is no digit, and the defender's
``surrogate_anomalies`` are made the same way. So badsad and data_only put the trigger on
anomaly-like synthetic content and pull it to c: clean-label for the dataset, not for what the
network is trained on. label_preserving keeps only class-keeping changes (rotations up to 15
degrees, shifts, mild scaling), so every triggered image is normal content; its separation term
still pushes untriggered normal-looking views away, a label the dataset never gave.

Measured on MNIST (normal class 0, 1% labeled anomalies, rho = 0.1, mu = 1): with the trigger
only on plain normal digits, even with L_conc and L_align, the trigger does not transfer to
anomalies (ASR near the miss rate): every poisoned image is a normal digit, so the network never
has to rely on the trigger. The shipped tables in ``badsad_lib/results`` hold the full grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .deepsad import EPS, deepsad_loss
from .registry import method_info
from .triggers import Trigger, apply_trigger, check_strength
from .validation import check_fraction, check_seed



@dataclass(frozen=True)
class AttackWeights:
    """Weights lambda of the latent-space terms (see the module docstring)."""
    concentration: float = 1.0
    alignment: float = 1.0
    separation: float = 1.0


# ------------------------------------------------------------------ the terms (lesson 03's exercises)
def concentration(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Mean squared distance to c of codes z (n, d): sum over coordinates, mean over images."""
    return ((z - c) ** 2).sum(dim=1).mean()


def separation(z: torch.Tensor, c: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """eta * mean 1 / (||z - c||^2 + 1e-6) over codes z (n, d): small when the codes are far from c."""
    return eta * (1.0 / (((z - c) ** 2).sum(dim=1) + EPS)).mean()


def mmd2(a: torch.Tensor, b: torch.Tensor, sigma2) -> torch.Tensor:
    """Biased MMD^2 between codes a (n, d) and b (m, d) with the kernel exp(-||u - v||^2 / sigma2)."""
    def k(u, v):
        return torch.exp(-torch.cdist(u, v) ** 2 / sigma2)
    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()


def alignment(a: torch.Tensor, b: torch.Tensor, mmd: Callable = mmd2) -> torch.Tensor:
    """Sum of ``mmd`` at bandwidths 1/4, 1 and 4 x the median squared distance of the pooled codes."""
    if len(a) < 2 or len(b) < 2:
        return a.sum() * 0.0
    z = torch.cat([a, b]).detach()
    d2 = torch.cdist(z, z).pow(2)
    scale = d2[d2 > 0].median().clamp_min(1e-8) if (d2 > 0).any() else torch.tensor(1.0, device=z.device)
    return sum(mmd(a, b, scale * f) for f in (0.25, 1.0, 4.0))


# Fixed-shape forms of the terms: rows are chosen by 0/1 weights instead of boolean indexing, so a step has
# no data-dependent shape and never waits for the device (a step can be stacked and captured as a graph).
def _chosen_mean(values: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (m,) over the rows where ``w`` (m,) is 1 (0 when there are none)."""
    return (values * w).sum() / w.sum().clamp_min(1.0)


def masked_concentration(z: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``concentration(z[w > 0], c)`` for 0/1 row weights w (n,), in fixed shapes (0 for no rows)."""
    return _chosen_mean(((z - c) ** 2).sum(dim=1), w)


def masked_alignment(a: torch.Tensor, wa: torch.Tensor, b: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """``alignment(a[wa > 0], b[wb > 0])`` with the library's ``mmd2``, for 0/1 row weights wa (n,), wb (m,), in
    fixed shapes: weighted kernel means, and the bandwidth's median taken over the chosen pairs i != j at a
    positive distance (``nanmedian``: the lower middle value, as ``median``); 0 when either side has fewer than
    two rows. Equal up to rounding (``cdist``'s matrix-product path leaves its diagonal at rounding error, not 0,
    which ``alignment`` would count; this form leaves the diagonal out).

    Computed as: the median over one triangle of the symmetric distances (each pair once: the same lower middle
    value as over both, at half the work), and the three MMD^2 terms as two quadratic forms p^T K q + r^T K r of
    the summed kernels K, with p, q, r the weights over each side's count (no block slices)."""
    z, w = torch.cat([a, b]), torch.cat([wa, wb])
    d2 = torch.cdist(z, z) ** 2
    i, j, flat = _upper_pairs(len(z), z.device)
    pairs, chosen = d2.detach().reshape(-1).index_select(0, flat), w.index_select(0, i) * w.index_select(0, j)
    scale = torch.nanmedian(torch.where((pairs > 0) & (chosen > 0), pairs, torch.full_like(pairs, float("nan"))))
    scale = torch.where(torch.isnan(scale), torch.ones_like(scale), scale.clamp_min(1e-8))
    kernels = sum(torch.exp(d2 / (scale * -f)) for f in (0.25, 1.0, 4.0))
    sa, sb = wa.sum().clamp_min(1.0), wb.sum().clamp_min(1.0)
    on_a = torch.cat([wa / sa, torch.zeros_like(wb)])  # p: side a's rows over its count
    on_b = torch.cat([torch.zeros_like(wa), wb / sb])  # r: side b's rows over its count
    # sum_ij K_ij (w_i w_j) [1/sa^2 on a x a, 1/sb^2 on b x b, -2/(sa sb) on a x b] = p^T K (p - 2r) + r^T K r
    kq = kernels @ torch.stack([on_a - 2 * on_b, on_b], 1)
    total = on_a @ kq[:, 0] + on_b @ kq[:, 1]
    return torch.where((wa.sum() >= 2) & (wb.sum() >= 2), total, torch.zeros_like(total))


@lru_cache(maxsize=64)
def _upper_pairs(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row, column and flat indices of the pairs i < j of ``size`` rows (cached; made outside inference mode)."""
    with torch.inference_mode(False):
        i, j = torch.triu_indices(size, size, offset=1, device=device)
        return i, j, i * size + j


@dataclass(frozen=True)
class AttackTerms:
    """The term functions the objective uses (lesson 03 swaps in the learner's own)."""
    concentration: Callable = concentration
    separation: Callable = separation
    mmd: Callable = mmd2


@dataclass(frozen=True)
class BatchTerms:
    """The three terms as a mini-batch objective written by hand (``BadSADObjective(combine=...)``) calls them."""
    concentration: Callable  # (z (n, d), c (d,)) -> mean squared distance to c
    separation: Callable     # (z (n, d), c (d,), eta) -> eta * mean inverse distance
    alignment: Callable      # (a (n, d), b (m, d)) -> MMD^2 summed at the three bandwidths


# ------------------------------------------------------------------ poisoning and views
def poison_normals(x_train: torch.Tensor, train_labels: torch.Tensor, semi_targets: torch.Tensor,
                   normal_class: int, trigger: Trigger, ratio: float, strength: float | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Clean-label poisoning: stamp ``trigger`` on a fraction ``ratio`` of the unlabeled normal images.

    Returns (poisoned copy of x_train (N, C, H, W), sorted indices of the poisoned images).
    Labels and semi-supervised targets are not touched.
    """
    ratio, seed = check_fraction(ratio, "poison ratio"), check_seed(seed)
    normals = np.flatnonzero(((train_labels == normal_class) & (semi_targets == 0)).numpy())
    rng = np.random.default_rng(seed + 7919)
    chosen = np.sort(rng.choice(normals, size=int(round(ratio * normals.size)), replace=False))
    x = x_train.clone()
    if chosen.size:
        t = torch.from_numpy(chosen)
        x[t] = apply_trigger(x_train[t], trigger, strength)
    return x, chosen


def _affine(imgs: torch.Tensor, rand, max_angle: float, scale: tuple[float, float], max_shear: float,
            max_shift: float, flips: bool) -> torch.Tensor:
    b = imgs.shape[0]
    angle = (rand(b) * 2 - 1) * max_angle
    zoom = scale[0] + (scale[1] - scale[0]) * rand(b)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0) if flips else torch.ones(b, device=imgs.device)
    shear = (rand(b) * 2 - 1) * max_shear
    shift = (rand(b, 2) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin + shear, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    return F.grid_sample(imgs, _affine_grid(theta, imgs.shape[-2], imgs.shape[-1]), padding_mode="zeros",
                         align_corners=False)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, h, w), align_corners=False)`` for theta (B, 2, 3): (B, h, w, 2), written out
    (x' = t00 x + t01 y + t02, y' = t10 x + t11 y + t12 on the pixel centres in [-1, 1]) instead of its batched
    (h w x 3) @ (3 x 2) matrix products, which run slowly on the CPU at these shapes."""
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    t = theta[:, :, None, None, :]  # (B, 2, 1, 1, 3)
    grid = t[..., 0] * xs.view(1, 1, 1, w) + t[..., 1] * ys.view(1, 1, h, 1) + t[..., 2]  # (B, 2, h, w)
    return grid.permute(0, 2, 3, 1)


def _uniform(generator: torch.Generator, device):
    """rand(*shape): uniform numbers drawn on ``generator``'s own device, then moved to ``device`` (a no-op
    when they agree, as in training, where the objective's generator lives on the model's device)."""
    def rand(*shape):
        return torch.rand(*shape, generator=generator, device=generator.device).to(device)
    return rand


def content_views(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strong random content changes g(x) of images x (B, C, H, W), returned in [0, 1].

    Every view gets a random rotation (any angle), scaling 0.6-1.4, shear, shift and, half the
    time, a mirror flip; half of them are overlaid (pixel-wise max) with a second transformed image
    of the batch; a quarter get Gaussian noise (sigma 0.2), a quarter a random erased block.
    Many are anomaly-like (a rotated 6 is a 9; an overlay is no single digit).
    """
    b, dev = x.shape[0], x.device
    rand = _uniform(generator, dev)
    strong = dict(max_angle=math.pi, scale=(0.6, 1.4), max_shear=0.5, max_shift=0.25, flips=True)
    v = _affine(x, rand, **strong)
    other = _affine(x[torch.randperm(b, generator=generator, device=generator.device).to(dev)], rand, **strong)
    v = torch.where((rand(b) < 0.5).view(-1, 1, 1, 1), torch.maximum(v, other), v)
    noise = torch.randn(v.shape, generator=generator, device=generator.device).to(dev) * 0.2
    v = torch.where((rand(b) < 0.25).view(-1, 1, 1, 1), v + noise, v)
    h = x.shape[-1]
    size = (rand(b, 2) * 0.3 + 0.2) * h
    corner = rand(b, 2) * (h - size)
    ii = torch.arange(h, device=dev).float()
    rows = (ii.view(1, -1) >= corner[:, :1]) & (ii.view(1, -1) < corner[:, :1] + size[:, :1])
    cols = (ii.view(1, -1) >= corner[:, 1:]) & (ii.view(1, -1) < corner[:, 1:] + size[:, 1:])
    block = (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1) & (rand(b) < 0.25).view(-1, 1, 1, 1)
    v = torch.where(block, torch.zeros_like(v), v)
    return v.clamp(0.0, 1.0)


def mild_views(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Class-keeping changes of images x (B, C, H, W): rotation up to 15 degrees, scaling 0.9-1.1,
    shear up to 0.1 and shifts up to 10% of the image; no flips, overlays, noise or erasing."""
    rand = _uniform(generator, x.device)
    return _affine(x, rand, max_angle=math.radians(15), scale=(0.9, 1.1), max_shear=0.1, max_shift=0.1,
                   flips=False).clamp(0.0, 1.0)


VIEW_FAMILIES = {"strong": content_views, "mild": mild_views}


def poisoned_training_set(spec, split, trigger: Trigger):
    """The training set of run ``spec`` (a ``RunSpec``) on ``split`` (a ``OneClassSplit``) as the attacker
    hands it to training: (x (N', C, H, W), semi_targets (N',), indices of its triggered images). A method
    whose views go into the data (data_only) gets one triggered view per training image appended, unlabeled;
    with ``contrast_in_data`` (data_only_contrast) also the same views without the trigger, labeled
    anomalous (-1), so DeepSAD's own labeled-anomaly term pushes them away as BadSAD's separation does."""
    x, poisoned = poison_normals(split.x_train, split.train_labels, split.semi_targets, split.normal_class, trigger,
                                 spec.poison_ratio, spec.strength, spec.seed)
    semi = split.semi_targets
    info = method_info(spec.method)
    if info.views_in_data:
        normals = split.x_train[(split.train_labels == split.normal_class) & (split.semi_targets == 0)]
        gen = torch.Generator().manual_seed(spec.seed + 271828)
        pick = torch.randint(len(normals), (len(x),), generator=gen)
        plain = VIEW_FAMILIES[info.views](normals[pick], gen)
        views = apply_trigger(plain, trigger, spec.strength)
        poisoned = np.concatenate([poisoned, len(x) + np.arange(len(views))])
        x, semi = torch.cat([x, views]), torch.cat([semi, torch.zeros(len(views), dtype=semi.dtype)])
        if info.contrast_in_data:
            x, semi = torch.cat([x, plain]), torch.cat([semi, -torch.ones(len(plain), dtype=semi.dtype)])
    return x, semi, poisoned



# ------------------------------------------------------------------ the objective
class BadSADObjective:
    """The mini-batch loss of the module docstring for ``method``, as a DeepSAD ``objective``.

    ``poisoned``: bool (N,) over the training set; ``normal_pool``: (M, C, H, W) clean normal
    training images that views are drawn from. The method's registry entry decides the rest: with
    per-batch views, one forward pass over [x, g(x), T(g(x))] (T(g(x)) only if it trains with the
    trigger); the pulled codes are T(g(x)) and the batch's poisoned x_p; each of its terms is added
    in the order concentration, separation, alignment. ``naive`` and ``data_only`` need no objective
    (plain DeepSAD training); they are accepted here and give the plain DeepSAD loss.

    ``combine``: a mini-batch objective written by hand (lesson 03's last exercise), called as
    ``combine(net, c, x, y, poisoned, draw_views, stamp, terms, weights, eta)`` with ``poisoned`` (n,)
    bool, ``draw_views(n)`` -> n fresh views (the objective's own generator, so a combine that calls it
    once per batch draws exactly the views the library would), ``stamp(images)`` -> the images with the
    trigger, ``terms`` a ``BatchTerms``. Only for methods with per-batch views, the trigger and all terms.
    """

    def __init__(self, method: str, trigger: Trigger, strength: float, poisoned: torch.Tensor,
                 normal_pool: torch.Tensor, weights: AttackWeights = AttackWeights(), eta: float = 1.0,
                 seed: int = 0, terms: AttackTerms = AttackTerms(), combine: Callable | None = None):
        self.info = method_info(method)
        if combine is not None and not (self.info.views_per_batch and self.info.trigger and
                                        set(self.info.terms) == {"concentration", "separation", "alignment"}):
            raise ValueError(f"a hand-written mini-batch objective needs a method with per-batch views, the trigger "
                             f"and all three terms (badsad, label_preserving), not {method!r}")
        self.combine = combine
        self.method, self.trigger, self.strength = method, trigger, check_strength(strength)
        self.poisoned, self.normal_pool, self.weights, self.eta, self.terms = poisoned, normal_pool, weights, eta, terms
        self.views = VIEW_FAMILIES[self.info.views] if self.info.views_per_batch else None
        if self.views is not None and len(normal_pool) == 0:
            raise ValueError(f"method {method!r} makes views of clean normal training images, and there are none")
        # On the device of the images it draws views of, so a GPU step never waits for host random numbers.
        self.generator = torch.Generator(device=normal_pool.device).manual_seed(seed + 104729)

    def _draw_views(self, n: int) -> torch.Tensor:
        pick = torch.randint(len(self.normal_pool), (n,), generator=self.generator, device=self.generator.device)
        return self.views(self.normal_pool[pick.to(self.normal_pool.device)], self.generator)

    @property
    def stackable(self) -> bool:
        """True if the objective splits into ``images`` and ``loss`` (all but a hand-written ``combine``), so a
        stacked trainer can run one forward pass for K models (``badsad_lib.stacked.fit_stacked``)."""
        return self.combine is None

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """What one forward pass sees for batch x (n, C, H, W): x, then (per-batch views) n fresh views g(x)
        and, with the trigger, T(g(x)): (n, 2n or 3n, C, H, W). Draws the views from the objective's generator."""
        if self.views is None:
            return x
        views = self._draw_views(len(x))
        batch = [x, views] + ([apply_trigger(views, self.trigger, self.strength)] if self.info.trigger else [])
        return torch.cat(batch)

    def loss(self, z: torch.Tensor, c: torch.Tensor, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
        """The mini-batch loss from the codes z of ``images(x)`` (a multiple of n rows, rep_dim columns)."""
        w, t, terms, n = self.weights, self.terms, self.info.terms, len(x)
        p = self.poisoned[idx]
        zx = z[:n]
        # the pulled codes: T(g(x)) (with the trigger's views), then the batch's poisoned x_p; as 0/1 row weights
        pulled, pulled_w = torch.cat([z[2 * n:], zx]), torch.cat([z.new_ones(len(z[2 * n:])), p.to(z.dtype)])
        clean_w = ((~p) & (y == 0)).to(z.dtype)
        loss = deepsad_loss(((zx - c) ** 2).sum(1), y, self.eta)
        library = t == AttackTerms()  # the library's own terms run in fixed shapes; a learner's get the rows
        if "concentration" in terms:
            chosen = pulled[pulled_w > 0] if not library else None
            if library or len(chosen):
                loss = loss + w.concentration * (masked_concentration(pulled, pulled_w, c) if library
                                                 else t.concentration(chosen, c))
        if "separation" in terms:
            loss = loss + w.separation * t.separation(z[n:2 * n], c, self.eta)
        if "alignment" in terms:
            loss = loss + w.alignment * (masked_alignment(pulled, pulled_w, zx, clean_w) if library else
                                         alignment(pulled[pulled_w > 0], zx[clean_w > 0], t.mmd))
        return loss

    def __call__(self, net, c, x, y, idx):
        if self.combine is not None:
            t = self.terms
            batch_terms = BatchTerms(t.concentration, t.separation, lambda a, b: alignment(a, b, t.mmd))
            return self.combine(net, c, x, y, self.poisoned[idx], self._draw_views,
                                lambda images: apply_trigger(images, self.trigger, self.strength), batch_terms,
                                self.weights, self.eta)
        return self.loss(net(self.images(x)), c, x, y, idx)
