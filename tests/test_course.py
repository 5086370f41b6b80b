"""Lesson support: dataset fallback, quick by default, the model cache, the learner's functions, the collapse."""
import numpy as np
import pytest
import torch

from badsad_lib import course
from badsad_lib.attack import AttackTerms
from badsad_lib.deepsad import DeepSAD


@pytest.fixture(autouse=True)
def fresh_report(monkeypatch):
    monkeypatch.setattr(course, "_REPORTED", {})  # each test starts as a new notebook would


@pytest.fixture()
def lesson(tmp_path, monkeypatch):
    monkeypatch.setenv("BADSAD_CACHE", str(tmp_path / "cache"))
    return course.Lesson("digits", 0, quick=True)


def test_start_falls_back_to_digits_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BADSAD_DATA", str(tmp_path))
    lesson = course.start("mnist")
    out = capsys.readouterr().out
    assert lesson.dataset == "digits" and "Falling back" in out and "Using" in out


@pytest.mark.parametrize("switch, env, ci, quick", [
    (True, None, None, True), (False, None, None, False),   # a learner: the notebook's QUICK switch decides
    (False, "1", None, True), (True, "0", None, False),     # BADSAD_QUICK overrides it
    (False, None, "true", True),                            # CI runs quick
])
def test_quick_switch_and_its_overrides(monkeypatch, capsys, switch, env, ci, quick):
    for name, value in (("BADSAD_QUICK", env), ("CI", ci)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("BADSAD_DATA", raising=False)
    lesson = course.start("digits", quick=switch)
    out = capsys.readouterr().out
    assert lesson.quick is quick and f"Mode: {'quick' if quick else 'full'}" in out
    assert ("overrides" in out) == (quick != switch)
    assert ("Quick mode is made for a CPU" in out) == quick  # the device line fits the mode


def test_a_bad_quick_variable_is_named(monkeypatch):
    monkeypatch.setenv("BADSAD_QUICK", "maybe")
    with pytest.raises(ValueError, match="BADSAD_QUICK='maybe'"):
        course.start("digits")


def test_cache_trains_once_and_replays_the_loss(lesson, capsys):
    seen = []
    first = course.clean_detector(lesson, callback=lambda phase, epoch, loss: seen.append(phase))
    n = len(seen)
    assert n == len(first.history_) + len(first.ae_history_)
    again = course.clean_detector(lesson, callback=lambda phase, epoch, loss: seen.append(phase))
    assert len(list(course.cache_dir().glob("*.pt"))) == 1 and len(seen) == 2 * n
    out = capsys.readouterr().out
    assert "training" in out and "loaded from the cache" in out  # every training cell says what it does
    x = lesson.split.x_test
    np.testing.assert_allclose(first.decision_function(x), again.decision_function(x), rtol=1e-5)


def test_the_learners_loss_and_center_train_the_model(lesson):
    calls = {"loss": 0, "center": 0}

    def my_loss(dist, y, eta=1.0):
        calls["loss"] += 1
        return torch.where(y == 0, dist, eta * (dist + 1e-6) ** y.float()).mean()

    def my_center(codes, eps=0.1):
        calls["center"] += 1
        c = codes.mean(0)
        return torch.where(c.abs() < eps, torch.where(c < 0, -eps, eps) * torch.ones_like(c), c)
    mine = course.clean_detector(lesson, loss=my_loss, center=my_center)
    assert calls["loss"] > 10 and calls["center"] == 1
    library = course.clean_detector(lesson)
    assert len(list(course.cache_dir().glob("*.pt"))) == 2  # theirs is cached apart from the library's
    x = lesson.split.x_test
    np.testing.assert_allclose(mine.decision_function(x), library.decision_function(x), rtol=1e-3, atol=1e-6)


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
    again = course.backdoored_detector(lesson, "badsad")
    assert np.array_equal(again[3], poisoned)


def test_the_learners_attack_terms_train_the_backdoor(lesson):
    used = []

    def my_concentration(z, c):
        used.append("concentration")
        return ((z - c) ** 2).sum(1).mean()
    model = course.backdoored_detector(lesson, "badsad", terms=AttackTerms(concentration=my_concentration))[0]
    assert used and isinstance(model, DeepSAD)


def test_expect_speaks_to_the_learner():
    course.expect(True, "never shown")
    with pytest.raises(AssertionError, match="train longer") as err:
        course.expect(False, "the AUC is low: train longer")
    assert err.value._render_traceback_() == ["Check failed: the AUC is low: train longer"]


# ------------------------------------------------------------------ a shared cache serves only what it was asked for
def test_a_backdoored_model_planted_under_the_clean_models_name_is_not_served(lesson, capsys):
    clean = course.clean_detector(lesson)
    backdoored = course.backdoored_detector(lesson)[0]
    paths = sorted(course.cache_dir().glob("*.pt"), key=lambda p: p.stat().st_mtime)
    assert len(paths) == 2
    clean_path, backdoored_path = paths
    clean_path.write_bytes(backdoored_path.read_bytes())  # what a classmate with write access could do
    capsys.readouterr()
    served = course.clean_detector(lesson)
    captured = capsys.readouterr()
    assert "trained for another run" in captured.err and "training" in captured.out
    x = lesson.split.x_test
    np.testing.assert_allclose(served.decision_function(x), clean.decision_function(x), rtol=1e-4, atol=1e-7)
    assert not np.allclose(served.decision_function(x), backdoored.decision_function(x))
    again = course.clean_detector(lesson)  # the retrained clean model replaced the planted file
    assert "loaded from the cache" in capsys.readouterr().out and again.trained_for_ == served.trained_for_


@pytest.mark.parametrize("plant", ["fifo", "folder"])
def test_a_pipe_or_folder_under_the_cache_name_is_skipped_not_opened(lesson, capsys, plant):
    import os

    course.clean_detector(lesson)
    path = next(course.cache_dir().glob("*.pt"))
    path.unlink()
    os.mkfifo(path) if plant == "fifo" else path.mkdir()
    capsys.readouterr()
    model = course.clean_detector(lesson)  # would block forever on a FIFO, or raise IsADirectoryError
    err = capsys.readouterr().err
    assert isinstance(model, DeepSAD) and "not a regular file" in err
    if plant == "folder":
        assert "could not keep the model in the cache" in err


def test_the_capstone_grades_a_design_with_the_defense_code(lesson):
    """A custom trigger and a training change train their own model; the grade comes from the defense itself."""
    from badsad_lib import defenses, triggers

    name, der = course.strongest_defense()
    assert name in course.REPAIRS and 0 < der <= 1
    mask = torch.zeros(8, 8)
    mask[3:5, 3:5] = 1
    mine = triggers.custom_trigger(mask, torch.ones(8, 8))
    grade = course.capstone(lesson, defense="bn_recalibration", trigger=mine, weights=(2, 1, 1))
    model, trigger = course.backdoored_detector(lesson, "badsad", trigger_name="corners", weights=(2, 1, 1),
                                                trigger=mine)[:2]
    assert torch.equal(trigger.mask, mine.mask)  # the cached model of this design, not the corners one
    again = defenses.run_defense("bn_recalibration", defenses.scenario_for(
        lesson.spec("badsad", weights=(2, 1, 1)), lesson.split, model, trigger=mine)).to_dict()
    assert grade["asr_before"] == again["asr_before"] and grade["asr_after"] == again["asr_after"]
    assert grade["asr_before"] > 0.5 and grade["design"].endswith("your trigger at mu 1, rho 0.1, weights 2/1/1")
    assert grade["stealthy"] == (grade["auc_backdoored"] >= grade["auc_clean_model"] - 0.02)
    text = course.format_capstone(grade)
    assert "bn_recalibration" in text and "past the defense:" in text
    plain = course.capstone(lesson, defense="bn_recalibration")
    assert plain["design"] == "badsad, corners at mu 1, rho 0.1" and plain["asr_before"] != grade["asr_before"]


@pytest.mark.parametrize("mask, pattern, message", [
    (torch.zeros(8, 8), torch.ones(8, 8), "0 everywhere"),
    (torch.ones(8, 8) * 2, torch.ones(8, 8), "in \\[0, 1\\]"),
    (torch.ones(8, 7), torch.ones(8, 7), "expected \\(H, W\\)"),
    (torch.ones(8, 8), torch.ones(2, 8, 8), "do not fit"),
    (torch.ones(8, 8), torch.ones(16, 16), "do not fit"),
])
def test_a_custom_trigger_that_cannot_be_stamped_is_refused(mask, pattern, message):
    from badsad_lib import triggers

    with pytest.raises(ValueError, match=message):
        triggers.custom_trigger(mask, pattern)


def test_a_custom_trigger_changes_only_the_pixels_under_its_mask():
    from badsad_lib import triggers

    mask = torch.zeros(8, 8)
    mask[0, :] = 1
    t = triggers.custom_trigger(mask, torch.full((8, 8), 0.5))
    x = torch.rand(4, 1, 8, 8)
    y = triggers.apply_trigger(x, t)
    assert torch.equal(y[:, :, 1:], x[:, :, 1:]) and torch.allclose(y[:, :, 0], torch.full((4, 1, 8), 0.5))
