"""Fail closed: non-finite input is never called normal, a damaged checkpoint is refused by name,
and every bad value is refused before any training with a sentence that names it."""
import math

import numpy as np
import pytest
import torch

from badsad_lib.deepsad import CheckpointError, DeepSAD, DeepSVDD
from badsad_lib.settings import DIGITS, TrainingSettings


def test_nan_images_are_never_called_normal(digits_model, digits_split):
    x = digits_split.x_test_normal[:4].clone()
    x[1, 0, 3, 3] = float("nan")
    x[2, 0, 0, 0] = float("inf")
    scores = digits_model.decision_function(x)
    assert math.isinf(scores[1]) and math.isinf(scores[2]) and np.isfinite(scores[[0, 3]]).all()
    assert digits_model.predict(x)[1:3].tolist() == [1, 1]
    with pytest.raises(ValueError, match="1 NaN or infinite pixel"):
        digits_model.transform(x[1:2])


def test_training_refuses_non_finite_images_before_it_starts(digits_split):
    x = digits_split.x_train.clone()
    x[5, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="X holds 1 NaN or infinite"):
        DeepSAD("digits", DIGITS, progress=False).fit(x, digits_split.semi_targets)
    with pytest.raises(ValueError, match="X_val holds 0 images"):
        DeepSAD("digits", DIGITS, progress=False).fit(digits_split.x_train, X_val=digits_split.x_val[:0])


@pytest.mark.parametrize("field, value, message", [
    ("eta", float("nan"), "eta=nan"), ("lr", 0.0, "lr=0.0"), ("lr", -1e-3, "lr=-0.001"),
    ("epochs", 1.5, "epochs=1.5"), ("batch_size", 1, "batch_size=1"), ("weight_decay", float("inf"), "weight_decay=inf"),
    ("milestones", (0,), "milestones"),
])
def test_bad_settings_are_refused_when_made(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        DIGITS.replace(**{field: value})


@pytest.mark.parametrize("kwargs, message", [
    (dict(q=150), "q=150"), (dict(q=float("nan")), "q=nan"), (dict(seed=-1), "seed=-1"), (dict(seed="7"), "seed='7'"),
    (dict(settings="quick"), "TrainingSettings"), (dict(epochs=-2), "epochs=-2"), (dict(momentum=0.9), "momentum"),
])
def test_bad_estimator_arguments_are_refused_when_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepSAD("digits", **kwargs)


def test_empty_batches_score_to_empty_arrays(digits_model):
    assert digits_model.decision_function(torch.empty(0, 1, 8, 8)).shape == (0,)
    assert digits_model.transform(torch.empty(0, 1, 8, 8)).shape == (0, 16)


def _tampered(model, **changes):
    state = model.state()
    for key, value in changes.items():
        if value is KeyError:
            del state[key]
        else:
            state[key] = value
    return state


@pytest.mark.parametrize("change, message", [
    (dict(c=torch.full((16,), float("nan"))), "center c holds NaN"),
    (dict(c=torch.zeros(3)), "shape \\(16,\\)"),
    (dict(threshold=float("nan")), "threshold nan"),
    (dict(threshold="high"), "threshold 'high'"),
    (dict(history=KeyError), "lacks history"),
    (dict(settings={"epochs": 3}), "settings are not valid"),
    (dict(detector="IsolationForest"), "unknown detector"),
    (dict(format="badsad-deepsad-v1"), "found 'badsad-deepsad-v1'"),
])
def test_damaged_checkpoints_are_refused_by_name(digits_model, tmp_path, change, message):
    path = tmp_path / "model.pt"
    torch.save(_tampered(digits_model, **change), path)
    with pytest.raises(CheckpointError, match=message):
        DeepSAD.load(path)


def test_nan_weights_are_refused(digits_model, tmp_path):
    state = digits_model.state()
    name = next(iter(state["net"]))
    state["net"][name] = state["net"][name] * float("nan")
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=f"weight '{name}' holds NaN"):
        DeepSAD.load(tmp_path / "m.pt")


def test_a_malicious_pickle_is_not_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('{}', 'w').write('pwned')".format(tmp_path / "pwned"),))
    torch.save({"format": "badsad-deepsad-v2", "payload": Boom()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError):
        DeepSAD.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_a_non_finite_threshold_set_by_hand_is_refused(digits_model, digits_split):
    model = digits_model.copy()
    model.threshold_ = float("nan")
    with pytest.raises(RuntimeError, match="threshold_ is nan"):
        model.predict(digits_split.x_test[:2])


def test_deep_svdd_is_deepsad_without_labels_and_round_trips(digits_split, tmp_path):
    s = digits_split
    model = DeepSVDD("digits", DIGITS.replace(epochs=20, ae_epochs=5), progress=False).fit(
        s.x_train, s.semi_targets, X_val=s.x_val)
    assert (s.semi_targets == -1).any()  # the labeled anomalies were there, and dropped
    model.save(tmp_path / "svdd.pt")
    loaded = DeepSAD.load(tmp_path / "svdd.pt")
    assert type(loaded) is DeepSVDD and loaded.threshold_ == model.threshold_
    assert isinstance(TrainingSettings.from_dict(loaded.settings.to_dict()), TrainingSettings)
