"""The attack on digits: full BadSAD makes a backdoor, naive poisoning does not, the controls are what they say."""
import json

import numpy as np
import pytest
import torch

from badsad_lib.attack import content_views, mild_views
from badsad_lib.registry import METHODS, TIERS
from badsad_lib.cli import main
from badsad_lib.attack import poisoned_training_set
from badsad_lib.experiments import run
from badsad_lib.spec import RunSpec
from badsad_lib.triggers import trigger_for


@pytest.fixture(scope="module")
def attacks():
    """Every method on digits (normal class 0), sharing one clean model."""
    first = run(RunSpec("digits", 0, method="naive"))
    out = {"naive": first.metrics}
    for method in METHODS[1:]:
        out[method] = run(RunSpec("digits", 0, method=method), clean_model=first.clean).metrics
    out["badsad_rho0"] = run(RunSpec("digits", 0, method="badsad", poison_ratio=0.0), clean_model=first.clean).metrics
    return out


def test_full_badsad_creates_a_backdoor(attacks):
    badsad = attacks["badsad"]
    assert badsad["asr"]["95"] >= 0.8
    assert badsad["asr"]["95"] > badsad["miss_rate"]["95"] + 0.5  # the trigger, not a weak detector
    assert badsad["conditional_asr"]["95"] >= 0.8  # anomalies the detector catches pass once triggered
    assert badsad["asr_by_strength"]["1"] > badsad["asr_by_strength"]["0"]


def test_backdoored_model_stays_stealthy(attacks):
    badsad = attacks["badsad"]
    assert badsad["auc_backdoored"] >= badsad["auc_clean_model"] - 0.05
    assert badsad["auc_clean_model"] > 0.95


def test_naive_poisoning_does_not_transfer_to_anomalies(attacks):
    naive, badsad = attacks["naive"], attacks["badsad"]
    assert naive["asr"]["95"] <= 0.3
    assert badsad["asr"]["95"] - naive["asr"]["95"] >= 0.5


def test_controls_measure_what_they_claim(attacks):
    # measured on digits class 0: outlier exposure without a trigger gives no backdoor (ASR .006),
    # and the views alone (rho = 0) already give one
    oe = attacks["outlier_exposure"]
    assert oe["asr"]["95"] < 0.2 and oe["poison_ratio"] == 0 and oe["trigger_exposure"] == 0
    assert attacks["badsad_rho0"]["n_poisoned"] == 0 and attacks["badsad_rho0"]["asr"]["95"] > 0.5
    assert attacks["data_only"]["n_synthetic_triggered"] > 0 and attacks["badsad"]["n_synthetic_triggered"] == 0
    assert attacks["badsad"]["trigger_exposure"] > 1.0 > attacks["naive"]["trigger_exposure"]
    assert {m["tier"] for m in attacks.values()} <= set(TIERS.values())


def test_data_only_writes_triggered_views_into_the_training_set(digits_split):
    spec = RunSpec("digits", 0, method="data_only", labeled_ratio=0.05)
    trigger = trigger_for(digits_split.x_train)
    x, semi, poisoned = poisoned_training_set(spec, digits_split, trigger)
    n = len(digits_split.x_train)
    assert len(x) == 2 * n and (semi[n:] == 0).all() and set(range(n, 2 * n)) <= set(poisoned.tolist())
    corners = trigger.mask.bool().expand(x[n:].shape[1:])
    assert torch.all(x[n:][:, corners] == 1.0)  # every appended view carries the trigger


def test_mild_views_keep_the_digit_and_strong_views_do_not(digits_split):
    x = digits_split.x_train[:64]
    gen = torch.Generator().manual_seed(0)
    mild, strong = mild_views(x, gen), content_views(x, gen)
    assert mild.shape == strong.shape == x.shape and 0 <= mild.min() and mild.max() <= 1
    change = lambda v: float((v - x).abs().mean())  # noqa: E731
    assert change(mild) < change(strong)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown method 'magic'.*naive, alignment, concentration, badsad"):
        RunSpec("digits", 0, method="magic")


def test_attack_cli_writes_metrics_and_figures(tmp_path, capsys):
    assert main(["attack", "--dataset", "digits", "--normal-class", "2", "--method", "naive", "--quick",
                 "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("auc_clean_model", "auc_backdoored", "asr", "conditional_asr", "miss_rate", "seconds", "poison_ratio",
                "strength", "tier", "spec"):
        assert key in metrics
    assert set(metrics["asr"]) == set(metrics["miss_rate"]) == {"90", "95", "99"}
    for png in ("triggered_examples.png", "score_histograms.png", "asr_by_strength.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "ASR@95" in capsys.readouterr().out
    assert main(["attack", "--dataset", "digits", "--strength", "2", "--out", str(tmp_path)]) == 2
    assert "strength 2.0 is outside [0, 1]" in capsys.readouterr().err
    assert not np.isnan(metrics["auc_backdoored"])


def test_deep_svdd_is_attacked_and_defended_by_the_same_code():
    from badsad_lib.defenses import run_defense, scenario_for

    spec = RunSpec("digits", 0, method="badsad", detector="deepsvdd")
    result = run(spec)
    assert type(result.backdoored).__name__ == "DeepSVDD" and type(result.clean).__name__ == "DeepSVDD"
    assert result.metrics["asr"]["95"] > result.metrics["miss_rate"]["95"] + 0.3  # measured: .81 against .03
    erased = run_defense("preprocess", scenario_for(spec, result.split, result.backdoored))
    assert erased.asr_after < erased.asr_before


def test_trigger_exposure_counts_every_triggered_image_per_epoch(attacks):
    assert attacks["data_only"]["trigger_exposure"] == pytest.approx(1 + attacks["naive"]["trigger_exposure"])
    assert attacks["badsad"]["trigger_exposure"] == pytest.approx(1 + attacks["naive"]["trigger_exposure"])
    assert attacks["badsad_rho0"]["trigger_exposure"] == pytest.approx(1.0)
