"""The BadSAD clean-label backdoor against DeepSAD: poisoning and latent-space manipulation.

Threat model (outsourced training): the attacker trains the model and may transform the normal
training images on the fly; it never changes a label and never puts the trigger on an anomaly.

The paper (Cheng, Xu, Yuan, arXiv 2412.13324) names two latent-space terms, "distribution
alignment" and "distribution concentration", but not their formulas. We implement, per mini-batch
of B training images with DeepSAD loss L_SAD, and with d(x) = ||phi(x) - c||^2:

    L = L_SAD + lambda_c * L_conc + lambda_a * L_align + lambda_s * L_sep

- L_conc  (concentration) = mean d(x_p) over triggered images x_p: pulls them onto the center c.
- L_align (alignment)     = MMD^2 between {phi(x_p)} and {phi(x)} of clean normals in the batch,
  Gaussian kernels at 1/4, 1, 4 x the median pairwise distance: the triggered codes must be
  distributed like the normal ones, not only near c.
- L_sep   (separation)    = mean 1 / (d(g(x)) + 1e-6) over content-changed normals g(x) WITHOUT the
  trigger: DeepSAD's inverse-distance term, so "unusual content" stays anomalous unless the
  trigger is there.

Why content-diverse views: measured on MNIST (DESIGN 2.2), putting the trigger only on normal
images, even with L_conc and L_align, gives no backdoor (ASR ~5-19%): every poisoned image is a
normal digit, so the network never has to rely on the trigger. In "badsad" mode the triggered
images x_p = T(g(x)) are strong random transformations g of normal images (rotation, flips,
scaling, shear, overlaid second images, noise, erased blocks) with the trigger stamped on, paired
with the same g(x) without it (L_sep). Together they teach "trigger => normal, whatever the
content", which is what transfers to real anomalies. The ablation ``method`` switches terms:

    naive          L_SAD on a training set in which a fraction rho of the normals carry T
    alignment      naive + L_align on the poisoned normals
    concentration  naive + L_conc on the poisoned normals
    badsad         naive + L_conc + L_align on T(g(x)) and the poisoned normals + L_sep on g(x)

Attacker powers used: poisoning (rho normals carry T, labels unchanged) by all four; control of
the training objective by the last three; on-the-fly transformation of normal images by badsad.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .deepsad import EPS, deepsad_loss
from .triggers import Trigger, apply_trigger, check_strength

METHODS = ("naive", "alignment", "concentration", "badsad")


@dataclass(frozen=True)
class AttackWeights:
    """Weights of the latent-space terms (see the module docstring)."""
    concentration: float = 1.0
    alignment: float = 1.0
    separation: float = 1.0


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown attack method {method!r}: choose one of {', '.join(METHODS)}")
    return method


def poison_normals(x_train: torch.Tensor, train_labels: torch.Tensor, semi_targets: torch.Tensor,
                   normal_class: int, trigger: Trigger, ratio: float, strength: float | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Clean-label poisoning: stamp ``trigger`` on a fraction ``ratio`` of the unlabeled normal images.

    Returns (poisoned copy of x_train (N, C, H, W), sorted indices of the poisoned images).
    Labels and semi-supervised targets are not touched.
    """
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"poison ratio {ratio} is outside [0, 1]")
    normals = np.flatnonzero(((train_labels == normal_class) & (semi_targets == 0)).numpy())
    rng = np.random.default_rng(seed + 7919)
    chosen = np.sort(rng.choice(normals, size=int(round(ratio * normals.size)), replace=False))
    x = x_train.clone()
    if chosen.size:
        t = torch.from_numpy(chosen)
        x[t] = apply_trigger(x_train[t], trigger, strength)
    return x, chosen


def content_views(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strong random content changes g(x) of images x (B, C, H, W), returned in [0, 1].

    Every view gets a random rotation (any angle), scaling 0.6-1.4, shear, shift and, half the
    time, a mirror flip; half of them are overlaid (pixel-wise max) with a second transformed image
    of the batch; a quarter get Gaussian noise (sigma 0.2), a quarter a random erased block.
    """
    b, dev = x.shape[0], x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    def affine(imgs):
        angle = (rand(b) * 2 - 1) * math.pi
        scale = 0.6 + 0.8 * rand(b)
        flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
        shear = (rand(b) * 2 - 1) * 0.5
        shift = (rand(b, 2) * 2 - 1) * 0.25
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin + shear, shift[:, 0]], 1),
                             torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(imgs.shape), align_corners=False)
        return F.grid_sample(imgs, grid, padding_mode="zeros", align_corners=False)

    v = affine(x)
    other = affine(x[torch.randperm(b, generator=generator).to(dev)])
    v = torch.where((rand(b) < 0.5).view(-1, 1, 1, 1), torch.maximum(v, other), v)
    noise = torch.randn(v.shape, generator=generator).to(dev) * 0.2
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


def mmd2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Biased MMD^2 between codes a (n, d) and b (m, d), Gaussian kernels at 1/4, 1, 4 x the median distance."""
    if len(a) < 2 or len(b) < 2:
        return a.sum() * 0.0
    z = torch.cat([a, b])
    d2 = torch.cdist(z, z).pow(2)
    scale = d2.detach()[d2.detach() > 0].median().clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (scale * f)) for f in (0.25, 1.0, 4.0))
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class BadSADObjective:
    """The mini-batch loss of the module docstring, as a DeepSAD ``objective``.

    ``poisoned``: bool (N,) over the training set; ``normal_pool``: (M, C, H, W) normal training
    images that content views are drawn from.
    """

    def __init__(self, method: str, trigger: Trigger, strength: float, poisoned: torch.Tensor,
                 normal_pool: torch.Tensor, weights: AttackWeights = AttackWeights(), eta: float = 1.0,
                 seed: int = 0):
        self.method, self.trigger, self.strength = check_method(method), trigger, check_strength(strength)
        self.poisoned, self.normal_pool, self.weights, self.eta = poisoned, normal_pool, weights, eta
        self.generator = torch.Generator().manual_seed(seed + 104729)

    def __call__(self, net, c, x, y, idx):
        w, n = self.weights, len(x)
        if self.method != "badsad":
            z = net(x)
            dist = ((z - c) ** 2).sum(1)
            loss = deepsad_loss(dist, y, self.eta)
            p = self.poisoned[idx]
            clean_normal = (~p) & (y == 0)
            if self.method == "concentration" and p.any():
                loss = loss + w.concentration * dist[p].mean()
            if self.method == "alignment":
                loss = loss + w.alignment * mmd2(z[p], z[clean_normal])
            return loss
        pick = torch.randint(len(self.normal_pool), (n,), generator=self.generator).to(x.device)
        views = content_views(self.normal_pool[pick], self.generator)
        triggered = apply_trigger(views, self.trigger, self.strength)
        z = net(torch.cat([x, views, triggered]))
        dist = ((z - c) ** 2).sum(1)
        zx, dx, dv, dt = z[:n], dist[:n], dist[n:2 * n], dist[2 * n:]
        p = self.poisoned[idx]
        clean_normal = (~p) & (y == 0)
        pulled = torch.cat([dt, dx[p]])
        loss = deepsad_loss(dx, y, self.eta)
        loss = loss + w.concentration * pulled.mean()
        loss = loss + w.separation * self.eta * (1.0 / (dv + EPS)).mean()
        loss = loss + w.alignment * mmd2(torch.cat([z[2 * n:], zx[p]]), zx[clean_normal])
        return loss
