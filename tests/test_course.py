"""Lesson support: dataset fallback, the model cache, the collapse demonstration, precomputed tables."""
import numpy as np
import pytest

from badsad_lib import course
from badsad_lib.deepsad import DeepSAD


@pytest.fixture()
def lesson(tmp_path, monkeypatch):
    monkeypatch.setenv("BADSAD_CACHE", str(tmp_path / "cache"))
    return course.Lesson("digits", 0, quick=True)


def test_start_falls_back_to_digits_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BADSAD_DATA", str(tmp_path))
    lesson = course.start("mnist")
    out = capsys.readouterr().out
    assert lesson.dataset == "digits" and "Falling back" in out and "Using" in out


def test_cache_trains_once_and_replays_the_loss(lesson):
    seen = []
    first = course.clean_detector(lesson, callback=lambda phase, epoch, loss: seen.append(phase))
    n = len(seen)
    assert n == len(first.history_) + len(first.ae_history_)
    again = course.clean_detector(lesson, callback=lambda phase, epoch, loss: seen.append(phase))
    assert len(list(course.cache_dir().glob("*.pt"))) == 1 and len(seen) == 2 * n
    x = lesson.split.x_test
    np.testing.assert_allclose(first.decision_function(x), again.decision_function(x), rtol=1e-5)


def test_corrupt_cache_entry_is_retrained(lesson):
    course.clean_detector(lesson)
    path = next(course.cache_dir().glob("*.pt"))
    path.write_bytes(b"not a checkpoint")
    assert isinstance(course.clean_detector(lesson), DeepSAD)
    DeepSAD.load(path)  # rewritten, readable


def test_collapsed_network_has_zero_loss_and_no_ranking(lesson, digits_model):
    collapsed = course.collapse_to_center(digits_model)
    scores = collapsed.decision_function(lesson.split.x_test)
    assert scores.max() < 1e-10 and digits_model.decision_function(lesson.split.x_test).std() > 1e-3
    assert collapsed.bias and not digits_model.bias


def test_backdoored_detector_and_attack_row(lesson):
    clean = course.clean_detector(lesson)
    model, trigger, strength, poisoned = course.backdoored_detector(lesson, "badsad")
    row = course.attack_row(lesson, clean, model, trigger, strength, 0.1)
    assert row["asr_95"] > 0.8 > 0.3 > row["clean_model_asr_95"] and len(poisoned) > 0


def test_precomputed_tables_ship_with_the_library():
    for name in ("digits_ablation", "digits_tradeoff", "mnist_ablation", "mnist_tradeoff"):
        rows = course.results_table(name)
        assert rows and {"asr_95", "auc_backdoored", "strength", "poison_ratio"} <= set(rows[0])
    with pytest.raises(ValueError, match="no precomputed results 'nope'"):
        course.results_table("nope")


def test_shipped_ablation_grids_show_the_backdoor_only_for_full_badsad():
    mnist = course.results_table("mnist_ablation")
    assert sorted({int(r["normal_class"]) for r in mnist}) == list(range(10))
    means = course.mean_by(mnist)
    assert means["badsad"]["asr_95"] >= 0.9 and means["naive"]["asr_95"] < 0.3
    assert means["badsad"]["auc_backdoored"] > means["badsad"]["auc_clean_model"] - 0.02
    seed1 = course.mean_by(course.results_table("mnist_ablation_seed1"))
    assert seed1["badsad"]["asr_95"] >= 0.9 and seed1["naive"]["asr_95"] < 0.3 and seed1["badsad"]["cells"] == 10
    seeds = course.mean_by(course.results_table("mnist_seeds"), by=("method", "normal_class"))
    assert all(v["asr_95"] > 0.9 for (method, _), v in seeds.items() if method == "badsad")
    fmnist = course.mean_by(course.results_table("fmnist_ablation"))
    assert fmnist["badsad"]["asr_95"] >= 0.85 and all(v["cells"] == 10 for v in fmnist.values())
    assert all(fmnist[m]["asr_95"] < 0.5 for m in ("naive", "alignment", "concentration"))
    cifar = course.mean_by(course.results_table("cifar10_ablation"), columns=("asr_95", "miss_rate_95"))
    assert all(abs(v["asr_95"] - v["miss_rate_95"]) < 0.03 and v["cells"] == 10 for v in cifar.values())


def test_shipped_defense_grid_keeps_its_findings():
    defended = course.mean_by(course.results_table("mnist_defenses"), by=("method", "defense"),
                              columns=("asr_before", "asr_after", "der", "tpr", "fpr"))
    assert defended[("badsad", "preprocess")]["asr_after"] < 0.3 < defended[("badsad", "preprocess")]["asr_before"]
    assert defended[("naive", "reverse_trigger")]["der"] == 0.5  # never flags a model without a backdoor
    assert defended[("badsad", "spectral")]["tpr"] > 2 * defended[("badsad", "spectral")]["fpr"]


def test_mean_by_groups_on_several_columns_and_skips_empty_entries():
    rows = [{"method": "badsad", "defense": "strip", "asr_after": "0.2", "tpr": ""},
            {"method": "badsad", "defense": "strip", "asr_after": "0.4", "tpr": ""},
            {"method": "naive", "defense": "strip", "asr_after": "0.0", "tpr": "0.5"}]
    means = course.mean_by(rows, by=("method", "defense"), columns=("asr_after", "tpr"))
    assert means[("badsad", "strip")] == {"asr_after": pytest.approx(0.3), "tpr": None, "cells": 2}
    assert means[("naive", "strip")]["tpr"] == 0.5
    text = course.format_table(means)
    assert "badsad / strip" in text and "n/a" in text
