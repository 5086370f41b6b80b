import numpy as np
import pytest

from badsad_lib import metrics


def test_auc_threshold_and_rates():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 1.0])
    assert metrics.auc(scores, [0, 0, 0, 1, 1]) == 1.0
    tau = metrics.threshold(np.linspace(0, 1, 101), 95)
    assert tau == pytest.approx(0.95)
    assert metrics.attack_success_rate([0.5, 0.96, 2.0], tau) == pytest.approx(1 / 3)
    assert metrics.miss_rate([0.1, 0.2], tau) == 1.0


def test_der_matches_backdoorbench():
    assert metrics.defense_effectiveness_rate(0.9, 0.1, 0.98, 0.96) == pytest.approx((0.8 - 0.02 + 1) / 2)
    assert metrics.defense_effectiveness_rate(0.5, 0.5, 0.9, 0.9) == 0.5


def test_asr_curve_runs_from_zero_to_full_false_alarm():
    fa, asr = metrics.asr_curve(np.linspace(0, 1, 100), np.array([0.5, 2.0]))
    assert fa[0] == 0 and fa[-1] == 1 and asr[0] == 0.5 and asr[-1] == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.threshold([1, 2, 3], 100), "q=100"),
    (lambda: metrics.auc([1, 2], [0, 0]), "both 0"),
    (lambda: metrics.pass_rate([], 1.0), "empty"),
    (lambda: metrics.auc([1.0, float("nan")], [0, 1]), "NaN"),
])
def test_metric_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
