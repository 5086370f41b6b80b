"""The exercise checkers: accept right answers (any standard convention), name what is wrong in a wrong one,
never raise, and hand the lesson the learner's function or the library's."""
import numpy as np
import pytest
import torch

from badsad_lib import checks
from badsad_lib.deepsad import center_from, deepsad_loss
from badsad_lib.defenses import preprocess_images, spectral_scores
from badsad_lib.metrics import defense_effectiveness_rate

RIGHT = {
    "check_deepsad_loss": deepsad_loss,
    "check_center": center_from,
    "check_threshold": np.percentile,
    "check_stamp": lambda x, m, mu: x * (1 - m) + mu * m,
    "check_poison_choice": lambda labels, semi, k, r, seed=0: (lambda normals: np.random.default_rng(seed).choice(
        normals, size=round(r * len(normals)), replace=False))(np.flatnonzero(((labels == k) & (semi == 0)).numpy())),
    "check_asr": lambda s, t: float(np.mean(s <= t)),
    "check_concentration": lambda z, c: ((z - c) ** 2).sum(1).mean(),
    "check_separation": lambda z, c, eta: eta * (1 / (((z - c) ** 2).sum(1) + 1e-6)).mean(),
    "check_mmd": lambda a, b, s: (lambda k: k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())(
        lambda u, v: torch.exp(-torch.cdist(u, v) ** 2 / s)),
    "check_spectral": spectral_scores,
    "check_der": defense_effectiveness_rate,
    "check_erase": lambda x, k: preprocess_images(x, "erase_corners", k),
}


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_a_right_answer_is_accepted_and_used(name, capsys):
    fn = RIGHT[name]
    assert getattr(checks, name)(fn) is fn
    assert capsys.readouterr().out.startswith("Correct")


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_an_unsolved_exercise_says_so_and_the_lesson_goes_on(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("Exercise: ...")
    fallback = getattr(checks, name)(stub)
    assert fallback is not stub and callable(fallback)
    assert capsys.readouterr().out.startswith("Not done yet")
    assert getattr(checks, name.replace("check_", "verify_"))(fallback)  # the library's version passes


@pytest.mark.parametrize("method", ["linear", "lower", "higher", "nearest", "midpoint", "inverted_cdf"])
def test_every_standard_quantile_convention_is_accepted(method):
    checks.verify_threshold(lambda s, q: np.percentile(s, q, method=method))


@pytest.mark.parametrize("verify, wrong, message", [
    (checks.verify_deepsad_loss, lambda d, y, eta: d.mean(), "inverse distance"),
    (checks.verify_deepsad_loss, lambda d, y, eta: torch.where(y == 0, d, (d + 1e-6) ** y.float()).mean(),
     "eta multiplies"),
    (checks.verify_deepsad_loss,  # eta forgotten on labeled normals only
     lambda d, y, eta: torch.where(y == 0, d, torch.where(y == 1, d + 1e-6, eta / (d + 1e-6))).mean(),
     "eta multiplies"),
    (checks.verify_center, lambda codes, eps: codes.mean(0), "plain mean"),
    (checks.verify_center, lambda codes, eps: codes.mean(1), "shape \\(4,\\)"),
    (checks.verify_center, lambda codes, eps: codes, "shape \\(4,\\)"),
    (checks.verify_threshold, lambda s, q: np.percentile(s, 100 - q), "between"),
    (checks.verify_stamp, lambda x, m, mu: torch.full_like(x, mu), "outside the mask"),
    (checks.verify_asr, lambda s, t: float(np.mean(s < t)), "equal to tau counts as normal"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed: np.arange(50, 60), "anomalies"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.random.default_rng(seed).choice(  # repeats
        np.flatnonzero(((labels == k) & (semi == 0)).numpy()), size=round(r * int(((labels == k) & (semi == 0)).sum())),
        replace=True), "chosen twice"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.random.default_rng(seed).choice(  # class 0 only
        np.flatnonzero(((labels == 0) & (semi == 0)).numpy()), size=round(r * int(((labels == 0) & (semi == 0)).sum())),
        replace=False), "normal class 3"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.flatnonzero(  # the first ones, not random
        ((labels == k) & (semi == 0)).numpy())[:round(r * int(((labels == k) & (semi == 0)).sum()))], "at random"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.random.default_rng(0).choice(  # seed ignored
        np.flatnonzero(((labels == k) & (semi == 0)).numpy()), size=round(r * int(((labels == k) & (semi == 0)).sum())),
        replace=False), "use the seed"),
    (checks.verify_concentration, lambda z, c: ((z - c) ** 2).mean(), "average over the coordinates"),
    (checks.verify_separation, lambda z, c, eta: (1 / (((z - c) ** 2).sum(1) + 1e-6)).mean(), "multiply by eta"),
    (checks.verify_mmd, lambda a, b, s: (lambda k: k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())(
        lambda u, v: torch.exp(-torch.cdist(u, v) ** 2 / (2 * s))), "no factor 2"),
    (checks.verify_der, lambda ab, aa, ub, ua: (ab - aa - (ub - ua) + 1) / 2, "clip each drop at 0"),
    (checks.verify_spectral, lambda c: (c @ np.linalg.svd(c, full_matrices=False)[2][0]) ** 2, "centre the codes"),
])
def test_wrong_answers_get_specific_feedback(verify, wrong, message):
    with pytest.raises(AssertionError, match=message):
        verify(wrong)


def test_erasing_in_place_is_caught():
    def in_place(x, k):
        x[..., :k, :k] = 0
        x[..., :k, -k:] = 0
        x[..., -k:, :k] = 0
        x[..., -k:, -k:] = 0
        return x
    with pytest.raises(AssertionError, match="in place"):
        checks.verify_erase(in_place)


def test_a_wrong_answer_prints_feedback_without_the_reference_and_falls_back(capsys):
    wrong = lambda s, t: float(np.mean(s < t))  # noqa: E731
    used = checks.check_asr(wrong)
    out = capsys.readouterr().out
    assert used is not wrong and "Not quite" in out and "library's version" in out
    assert "np.mean" not in out and "<=" not in out  # feedback, not the answer
    broken = checks.check_center(lambda codes, eps: codes.nonexistent)
    assert broken is center_from and "AttributeError" in capsys.readouterr().out
