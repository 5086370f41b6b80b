"""``check_*`` helpers for the lessons' exercises: run the learner's function on small cases and
say specifically what is wrong (an AssertionError naming the case), or print what passed.
"""
from __future__ import annotations

import numpy as np
import torch


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    got_t, want_t = torch.as_tensor(np.asarray(got, dtype=np.float64)), torch.as_tensor(np.asarray(want, dtype=np.float64))
    if got_t.shape != want_t.shape:
        raise AssertionError(f"{what}: expected shape {tuple(want_t.shape)}, got {tuple(got_t.shape)}")
    if not torch.allclose(got_t, want_t, atol=atol, rtol=1e-4):
        raise AssertionError(f"{what}: expected {want_t.numpy().round(6)}, got {got_t.numpy().round(6)}")


def _ok(message: str) -> None:
    print(f"Correct: {message}")


def _value(x) -> float:
    return float(x.item() if hasattr(x, "item") else x)


# ---------------------------------------------------------------- lesson 01
def check_deepsad_loss(fn) -> None:
    """fn(dist (n,), semi_targets (n,), eta) -> mean DeepSAD loss (DESIGN 2.1)."""
    from .deepsad import deepsad_loss

    dist = torch.tensor([0.5, 2.0, 0.25, 4.0])
    cases = {"unlabeled only (y = 0)": torch.zeros(4, dtype=torch.long),
             "a labeled normal (y = +1)": torch.tensor([0, 1, 0, 0]),
             "a labeled anomaly (y = -1)": torch.tensor([0, 0, -1, 0])}
    for name, y in cases.items():
        got = _value(fn(dist, y, 1.0))
        want = deepsad_loss(dist, y, 1.0).item()
        if name.endswith("(y = -1)") and abs(got - want) > 1e-4:
            raise AssertionError(f"{name}: expected {want:.4f}, got {got:.4f}. A labeled anomaly contributes "
                                 "eta * (dist + 1e-6) ** -1, the inverse distance, so it is pushed AWAY from c.")
        _close(got, want, name, atol=1e-4)
    got, want = _value(fn(dist, cases["a labeled anomaly (y = -1)"], 3.0)), deepsad_loss(dist, cases["a labeled anomaly (y = -1)"], 3.0).item()
    if abs(got - want) > 1e-3:
        raise AssertionError(f"eta = 3: expected {want:.4f}, got {got:.4f}. eta multiplies only the labeled terms.")
    _ok("unlabeled samples cost their distance, labeled ones eta * (dist + 1e-6) ** y, averaged over the batch.")


def check_center(fn) -> None:
    """fn(codes (n, d), eps) -> c (d,): the mean code, with |c_k| < eps pushed to +-eps keeping the sign."""
    from .deepsad import center_from

    codes = torch.tensor([[1.0, 0.02, -0.03, 0.0], [3.0, 0.04, -0.05, 0.0]])
    got = torch.as_tensor(fn(codes, 0.1)).float()
    want = center_from(codes, 0.1)
    if torch.allclose(got, codes.mean(0)):
        raise AssertionError("you return the plain mean: coordinates with |c_k| < 0.1 must become +-0.1, "
                             "otherwise a network with zero weights sits almost on c")
    if got.shape == want.shape and got[2] > 0:
        raise AssertionError(f"c[2] should keep the sign of the mean (-0.04 -> -0.1), got {got[2]:.3f}")
    if got.shape == want.shape and got[3] == 0:
        raise AssertionError("a coordinate that is exactly 0 must become +0.1 (the reference code's choice)")
    _close(got, want, "center of a 2 x 4 batch of codes")
    _ok("c is the mean code, with every |c_k| < eps moved to +-eps.")


def check_threshold(fn) -> None:
    """fn(val_scores (n,), q) -> tau, the q-th percentile of held-out normal scores."""
    scores = np.arange(1, 101, dtype=float)
    for q in (50, 95, 99):
        got = _value(fn(scores, q))
        want = float(np.percentile(scores, q))
        if abs(got - want) > 1e-6:
            raise AssertionError(f"q = {q} on scores 1..100: expected tau = {want}, got {got}. "
                                 "Use the q-th percentile of the validation normals' scores.")
    false_alarm = np.mean(scores > _value(fn(scores, 95)))
    if abs(false_alarm - 0.05) > 0.011:
        raise AssertionError(f"at q = 95, {false_alarm:.1%} of normals lie above tau; it should be about 5%")
    _ok("tau_q is the q-th percentile of clean normal scores: a false-alarm rate of 1 - q/100.")


# ---------------------------------------------------------------- lesson 02
def check_stamp(fn) -> None:
    """fn(x (N, C, H, W), mask (1, H, W), mu) -> x * (1 - mask) + mu * mask."""
    from .triggers import make_trigger

    trig = make_trigger("corners", 1, 28)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for mu in (1.0, 0.4, 0.0):
        got = torch.as_tensor(fn(x.clone(), trig.mask, mu)).float()
        if got.shape != x.shape:
            raise AssertionError(f"mu = {mu}: expected shape {tuple(x.shape)}, got {tuple(got.shape)}")
        outside = trig.mask.expand_as(x) == 0
        if not torch.equal(got[outside], x[outside]):
            raise AssertionError(f"mu = {mu}: pixels outside the mask changed; the trigger must leave them alone")
        inside = got[~outside]
        if not torch.allclose(inside, torch.full_like(inside, mu)):
            raise AssertionError(f"mu = {mu}: pixels inside the mask should all equal mu = {mu}, "
                                 f"got values from {inside.min():.3f} to {inside.max():.3f}")
    _ok("the four corner squares are set to mu and nothing else moves.")


def check_poison_choice(fn) -> None:
    """fn(train_labels (N,), semi_targets (N,), normal_class, ratio, seed) -> indices to poison."""
    labels = torch.tensor([0] * 50 + [1] * 10 + [0] * 5)
    semi = torch.tensor([0] * 50 + [-1] * 10 + [1] * 5)
    got = np.asarray(fn(labels, semi, 0, 0.2, 0)).astype(int).ravel()
    if len(np.unique(got)) != len(got):
        raise AssertionError("an image is chosen twice: draw without replacement")
    bad = [i for i in got if labels[i] != 0]
    if bad:
        raise AssertionError(f"indices {bad[:5]} are anomalies: clean-label poisoning only touches NORMAL images")
    labeled = [i for i in got if semi[i] != 0]
    if labeled:
        raise AssertionError(f"indices {labeled[:5]} are labeled normals: poison the unlabeled normal images only")
    if len(got) != 10:
        raise AssertionError(f"50 unlabeled normals at ratio 0.2 should give 10 poisoned images, got {len(got)}")
    _ok("a fraction rho of the unlabeled normal images, each at most once, and no label touched.")


def check_asr(fn) -> None:
    """fn(triggered_anomaly_scores (n,), tau) -> fraction with score <= tau."""
    scores = np.array([0.1, 0.2, 0.3, 0.4, 5.0])
    for tau, want in ((0.3, 0.6), (0.05, 0.0), (10.0, 1.0)):
        got = _value(fn(scores, tau))
        if abs(got - want) > 1e-9:
            hint = " (a score equal to tau counts as normal: use <=)" if tau == 0.3 else ""
            raise AssertionError(f"tau = {tau}: expected ASR {want}, got {got}{hint}")
    _ok("ASR = share of triggered anomalies whose score is at or below tau.")


# ---------------------------------------------------------------- lesson 03
def _codes(seed: int, n: int = 16, d: int = 8, shift: float = 0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def check_concentration(fn) -> None:
    """fn(z_triggered (n, d), c (d,)) -> mean ||z - c||^2."""
    z, c = _codes(1), torch.full((8,), 0.5)
    want = ((z - c) ** 2).sum(1).mean()
    got = _value(fn(z, c))
    if abs(got - ((z - c) ** 2).mean().item()) < 1e-6:
        raise AssertionError("you average over the coordinates too: sum the squares over each code, then "
                             "average over the images (the DeepSAD distance is a squared norm)")
    _close(got, want.item(), "concentration term")
    _ok("L_conc = mean over triggered images of ||phi(x_p) - c||^2.")


def check_separation(fn) -> None:
    """fn(z_views (n, d), c (d,), eta) -> eta * mean 1 / (||z - c||^2 + 1e-6)."""
    z, c = _codes(2), torch.full((8,), 0.5)
    want = 2.0 * (1.0 / (((z - c) ** 2).sum(1) + 1e-6)).mean()
    got = _value(fn(z, c, 2.0))
    if got < 0 or abs(got - want.item()) > 1e-3 * want.item():
        raise AssertionError(f"expected {want.item():.4f}, got {got:.4f}: the separation term is DeepSAD's "
                             "inverse distance eta / (||phi(g(x)) - c||^2 + 1e-6), averaged over the views")
    _ok("L_sep = eta * mean 1 / (||phi(g(x)) - c||^2 + 1e-6): it shrinks as views move away from c.")


def check_mmd(fn) -> None:
    """fn(a (n, d), b (m, d), sigma2) -> biased MMD^2 with the kernel exp(-||u - v||^2 / sigma2)."""
    a, b, far = _codes(3), _codes(4), _codes(5, shift=3.0)

    def ref(x, y, s):
        k = lambda u, v: torch.exp(-torch.cdist(u, v).pow(2) / s)  # noqa: E731
        return (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()).item()
    if abs(_value(fn(a, a, 8.0))) > 1e-5:
        raise AssertionError(f"MMD^2 of a sample with itself must be 0, got {_value(fn(a, a, 8.0)):.5f}")
    near, away = _value(fn(a, b, 8.0)), _value(fn(a, far, 8.0))
    if not away > near:
        raise AssertionError(f"a shifted sample should be further away: MMD^2 near {near:.4f}, shifted {away:.4f}")
    _close(near, ref(a, b, 8.0), "MMD^2 between two standard normal samples", atol=1e-4)
    _ok("MMD^2 = mean k(a, a') + mean k(b, b') - 2 mean k(a, b): 0 when the two sets are distributed alike.")


# ---------------------------------------------------------------- lesson 04
def check_spectral(fn) -> None:
    """fn(codes (n, d)) -> (n,) squared projection of the centred codes on their top singular vector."""
    from .defenses import spectral_scores

    gen = torch.Generator().manual_seed(6)
    codes = torch.randn(40, 5, generator=gen).numpy()
    codes[:6] += np.array([8.0, 0, 0, 0, 0])
    got = np.asarray(fn(codes), dtype=float)
    want = spectral_scores(codes)
    if got.shape != want.shape:
        raise AssertionError(f"expected one score per image, shape {want.shape}, got {got.shape}")
    uncentred = (codes @ np.linalg.svd(codes, full_matrices=False)[2][0]) ** 2
    if got.shape == want.shape and np.allclose(got, uncentred) and not np.allclose(got, want):
        raise AssertionError("centre the codes (subtract their mean) before the SVD and the projection")
    _close(got, want, "spectral scores of 40 codes, 6 of them shifted", atol=1e-3)
    if not set(np.argsort(got)[-6:]) == set(range(6)):
        raise AssertionError("the 6 shifted codes should get the 6 largest scores")
    _ok("the shifted (poison-like) codes stand out along the top singular direction.")


def check_der(fn) -> None:
    """fn(asr_before, asr_after, auc_before, auc_after) -> DER (DESIGN 2.3)."""
    cases = [((0.9, 0.1, 0.98, 0.98), 0.9), ((0.9, 0.9, 0.98, 0.98), 0.5), ((0.9, 0.1, 0.98, 0.78), 0.8),
             ((0.2, 0.5, 0.9, 0.95), 0.5)]
    for args, want in cases:
        got = _value(fn(*args))
        if abs(got - want) > 1e-9:
            hint = " (a defense that raises the ASR or the AUC is not rewarded or punished for it: clip at 0)" \
                if args[0] < args[1] else ""
            raise AssertionError(f"DER{args}: expected {want}, got {got}{hint}")
    _ok("DER = (max(0, ASR drop) - max(0, AUC drop) + 1) / 2: 0.5 means no effect.")


def check_erase(fn) -> None:
    """fn(x (N, C, H, W), k) -> copy of x with the four k x k corner squares set to 0."""
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(7))
    got = torch.as_tensor(fn(x.clone(), 3))
    if got.data_ptr() == x.data_ptr():
        raise AssertionError("return a new tensor; do not change the input in place")
    want = x.clone()
    for r in (slice(0, 3), slice(9, 12)):
        for c in (slice(0, 3), slice(9, 12)):
            want[..., r, c] = 0
    if got.shape != x.shape:
        raise AssertionError(f"expected shape {tuple(x.shape)}, got {tuple(got.shape)}")
    corners = want == 0
    if not torch.all(got[corners] == 0):
        raise AssertionError("some corner pixel is not 0: all four k x k corners must be erased")
    if not torch.equal(got[~corners], x[~corners]):
        raise AssertionError("pixels outside the four corners changed")
    _ok("the four corners are erased and nothing else changes.")
