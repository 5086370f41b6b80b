"""The exercise checkers accept the right answer and name what is wrong in a wrong one."""
import numpy as np
import pytest
import torch

from badsad_lib import checks
from badsad_lib.deepsad import center_from, deepsad_loss
from badsad_lib.defenses import preprocess_images, spectral_scores
from badsad_lib.metrics import defense_effectiveness_rate


def test_right_answers_pass(capsys):
    checks.check_deepsad_loss(deepsad_loss)
    checks.check_center(center_from)
    checks.check_threshold(np.percentile)
    checks.check_stamp(lambda x, m, mu: x * (1 - m) + mu * m)
    checks.check_asr(lambda s, t: float(np.mean(s <= t)))
    checks.check_concentration(lambda z, c: ((z - c) ** 2).sum(1).mean())
    checks.check_separation(lambda z, c, eta: eta * (1 / (((z - c) ** 2).sum(1) + 1e-6)).mean())
    checks.check_mmd(lambda a, b, s: (lambda k: k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())(
        lambda u, v: torch.exp(-torch.cdist(u, v) ** 2 / s)))
    checks.check_spectral(spectral_scores)
    checks.check_der(defense_effectiveness_rate)
    checks.check_erase(lambda x, k: preprocess_images(x, "erase_corners", k))
    assert capsys.readouterr().out.count("Correct") == 11


def test_wrong_answers_get_specific_feedback():
    with pytest.raises(AssertionError, match="inverse distance"):
        checks.check_deepsad_loss(lambda d, y, eta: d.mean())
    with pytest.raises(AssertionError, match="plain mean"):
        checks.check_center(lambda codes, eps: codes.mean(0))
    with pytest.raises(AssertionError, match="outside the mask"):
        checks.check_stamp(lambda x, m, mu: torch.full_like(x, mu))
    with pytest.raises(AssertionError, match="use <="):
        checks.check_asr(lambda s, t: float(np.mean(s < t)))
    with pytest.raises(AssertionError, match="anomalies"):
        checks.check_poison_choice(lambda labels, semi, k, r, seed: np.arange(50, 60))
    with pytest.raises(AssertionError, match="average over the coordinates"):
        checks.check_concentration(lambda z, c: ((z - c) ** 2).mean())
    with pytest.raises(AssertionError, match="clip at 0"):
        checks.check_der(lambda ab, aa, ub, ua: (ab - aa - (ub - ua) + 1) / 2)
    with pytest.raises(AssertionError, match="centre the codes"):
        checks.check_spectral(lambda c: (c @ np.linalg.svd(c, full_matrices=False)[2][0]) ** 2)
