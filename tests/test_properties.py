"""Property-based tests (hypothesis): triggers, metrics, splits, run specifications and the estimator's
input checks hold for every input, not only the examples we thought of."""
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from badsad_lib import metrics
from badsad_lib.data import make_split
from badsad_lib.spec import RunSpec
from badsad_lib.triggers import TRIGGERS, apply_trigger, make_trigger
from badsad_lib.validation import check_images, check_targets

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
scores = arrays(np.float64, st.integers(1, 60), elements=finite)


@FAST
@given(name=st.sampled_from(TRIGGERS), channels=st.sampled_from([1, 3]), size=st.integers(4, 32),
       mu=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_a_stamped_image_stays_in_range_and_changes_only_under_its_mask(name, channels, size, mu, seed):
    trigger = make_trigger(name, channels, size, seed=seed)
    x = torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(seed))
    xp = apply_trigger(x, trigger, mu)
    assert xp.shape == x.shape and xp.min() >= 0 and xp.max() <= 1
    outside = (trigger.mask == 0).expand_as(x)
    assert torch.equal(xp[outside], x[outside])
    if name == "corners":
        assert torch.allclose(xp[~outside], torch.full_like(xp[~outside], mu))


@FAST
@given(mu=st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans()))
def test_a_strength_outside_the_unit_interval_is_refused_by_value(mu):
    x = torch.rand(1, 1, 8, 8)
    trigger = make_trigger("corners", 1, 8)
    valid = isinstance(mu, float) and not math.isnan(mu) and 0 <= mu <= 1
    if mu is None:
        return  # None means the trigger's usual strength
    if valid:
        apply_trigger(x, trigger, mu)
    else:
        with pytest.raises(ValueError, match="strength"):
            apply_trigger(x, trigger, mu)


@FAST
@given(size=st.one_of(st.integers(-5, 3), st.floats(4, 30), st.text(max_size=2)),
       channels=st.one_of(st.integers(-1, 5), st.text(max_size=2)))
def test_make_trigger_names_a_bad_shape(size, channels):
    assume(not (isinstance(size, int) and size >= 4 and channels in (1, 3)))
    with pytest.raises(ValueError, match="size|channels"):
        make_trigger("corners", channels, size)


@FAST
@given(normal=scores, triggered=scores, q=st.floats(0.5, 99.5))
def test_asr_is_a_fraction_that_falls_as_the_threshold_tightens(normal, triggered, q):
    tau = metrics.threshold(normal, q)
    asr = metrics.attack_success_rate(triggered, tau)
    assert 0 <= asr <= 1
    assert metrics.attack_success_rate(triggered, metrics.threshold(normal, max(q - 0.5, 0.1))) <= asr
    assert np.mean(normal > tau) <= 1 - q / 100 + 1 / len(normal) + 1e-9


@FAST
@given(plain=scores, shift=finite, tau=finite)
def test_conditional_asr_counts_only_anomalies_caught_without_the_trigger(plain, shift, tau):
    triggered = plain - abs(shift)
    rate = metrics.conditional_success_rate(plain, triggered, tau)
    caught = plain > tau
    if not caught.any():
        assert rate is None
    else:
        assert rate == pytest.approx(np.mean(triggered[caught] <= tau))


@FAST
@given(values=scores, bad=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.integers(0, 59))
def test_metrics_refuse_non_finite_scores(values, bad, where):
    values = values.copy()
    values[where % len(values)] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.threshold(values, 95)
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.attack_success_rate(values, 1.0)


@FAST
@given(a=st.floats(0, 1), b=st.floats(0, 1), c=st.floats(0, 1), d=st.floats(0, 1))
def test_der_lies_in_the_unit_interval_and_is_half_for_no_change(a, b, c, d):
    assert 0 <= metrics.defense_effectiveness_rate(a, b, c, d) <= 1
    assert metrics.defense_effectiveness_rate(a, a, c, c) == 0.5


@FAST
@given(k=st.integers(0, 9), labeled=st.floats(0, 0.3), polluted=st.floats(0, 0.3), val=st.floats(0, 0.5),
       seed=st.integers(0, 1000))
def test_splits_never_reuse_an_image_and_keep_validation_clean(digits, k, labeled, polluted, val, seed):
    s = make_split(digits, k, labeled_ratio=labeled, pollution_ratio=polluted, val_ratio=val, seed=seed)
    assert len(np.unique(s.train_index)) == len(s.train_index)
    assert not set(s.train_index) & set(s.val_index)
    assert (digits.y_train[torch.from_numpy(s.val_index)] == k).all()
    assert set(s.train_labels[s.semi_targets == -1].tolist()) <= set(s.known_anomaly_classes)
    assert (s.semi_targets[s.train_labels == k] == 0).all()


@FAST
@given(fields=st.fixed_dictionaries({}, optional={
    "normal_class": st.one_of(st.integers(-3, 12), st.text(max_size=2)), "seed": st.integers(-5, 2**33),
    "poison_ratio": st.floats(allow_nan=True), "labeled_ratio": st.floats(-1, 2),
    "strength": st.floats(allow_nan=True), "method": st.sampled_from(["badsad", "clean", "magic"]),
    "trigger": st.sampled_from(list(TRIGGERS) + ["star"])}))
def test_run_specs_are_valid_or_refused_with_a_sentence(fields):
    try:
        spec = RunSpec("digits", **{"normal_class": 0, **fields})
    except ValueError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert RunSpec.from_canonical(spec.canonical()).key == spec.key
    assert 0 <= spec.poison_ratio <= 1 and 0 <= spec.strength <= 1 and 0 <= spec.normal_class <= 9


@FAST
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.uint8, torch.int64]))
def test_the_estimators_image_check_accepts_exactly_the_networks_shape(shape, dtype):
    x = torch.zeros(shape, dtype=dtype)
    ok = len(shape) == 4 and tuple(shape[1:]) == (1, 8, 8) and dtype.is_floating_point
    if ok:
        assert check_images(x, "digits").shape == x.shape
    else:
        with pytest.raises(ValueError, match="shape|dtype"):
            check_images(x, "digits")


@FAST
@given(y=st.lists(st.one_of(st.integers(-3, 3), st.floats(allow_nan=True)), min_size=1, max_size=8))
def test_targets_are_zero_plus_or_minus_one_or_refused(y):
    valid = all(v in (-1, 0, 1) for v in y)  # whole-number floats (a float array of targets) are fine
    if valid:
        assert check_targets(y, len(y)).tolist() == [int(v) for v in y]
    else:
        with pytest.raises(ValueError, match="y "):
            check_targets(y, len(y))


# ------------------------------------------------------------------ what is read from disk
from badsad_lib import readers  # noqa: E402
from badsad_lib.deepsad import DeepSAD  # noqa: E402
from badsad_lib.errors import CheckpointError, DatasetCorruptError  # noqa: E402

DISK = settings(max_examples=int(os.environ.get("DISK_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _idx(dims, payload: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload


idx_dims = st.one_of(st.lists(st.integers(0, 30), min_size=1, max_size=4),
                     st.integers(0, 3).map(lambda n: [n, 28, 28]), st.integers(0, 30).map(lambda n: [n]))
idx_files = st.one_of(
    st.binary(max_size=64),  # anything
    st.builds(lambda dims, extra, cut: _idx(dims, bytes(max(0, int(np.prod(dims)) + extra)))[:cut],
              idx_dims, st.sampled_from([0, 0, 0, -1, 1]), st.one_of(st.none(), st.integers(0, 4000))),
)


@DISK
@given(raw=idx_files, shape=st.sampled_from([(-1,), (-1, 28, 28)]))
def test_an_idx_file_is_read_whole_or_refused_by_name(tmp_path, raw, shape):
    path = tmp_path / "file-idx3-ubyte"
    path.write_bytes(raw)
    try:
        array = readers._read_idx(path, shape)
    except DatasetCorruptError as err:
        assert str(path) in str(err)
        event("refused")
        return
    event("read")
    assert array.dtype == np.uint8 and array.ndim == len(shape) and array.shape[1:] == shape[1:] and len(array) > 0


leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 20), st.text(max_size=4), st.binary(max_size=8),
                   arrays(st.sampled_from([np.uint8, np.int64, np.float32]), st.tuples(st.integers(0, 3),
                                                                                        st.sampled_from([3072, 5]))))
cifar_like = st.integers(1, 3).flatmap(lambda n: st.fixed_dictionaries(
    {"data": arrays(np.uint8, (n, 3072)), "labels": st.lists(st.integers(-1, 10), min_size=n, max_size=n)},
    optional={"batch_label": st.text(max_size=4), "filenames": st.lists(st.binary(max_size=4), max_size=2)}))
batches = st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.sampled_from(["data", "labels", "x"]), kids,
                                                                      max_size=3)), max_leaves=8)


@DISK
@given(obj=st.one_of(cifar_like, batches), protocol=st.sampled_from([2, 4]), cut=st.one_of(st.none(), st.integers(0, 200)))
def test_a_cifar_batch_is_read_whole_or_refused_by_name(tmp_path, obj, protocol, cut):
    import pickle

    raw = pickle.dumps(obj, protocol=protocol)
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw if cut is None else raw[:cut])
    try:
        images, labels = readers._read_cifar_batch(path)
    except DatasetCorruptError as err:
        assert str(path) in str(err)
        event("refused")
        return
    event("read")
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32) and len(images) == len(labels) > 0
    assert labels.min() >= 0 and labels.max() <= 9


values = st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.floats(allow_nan=True), st.text(max_size=6),
                   st.lists(st.integers(-1, 5), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                   st.just(torch.zeros(3)), st.just(torch.full((32,), float("nan"))))


@pytest.fixture(scope="module")
def digits_state(digits_model):
    return digits_model.state()


@DISK
@given(data=st.data())
def test_a_changed_checkpoint_loads_as_a_working_model_or_is_a_checkpoint_error(digits_state, digits_split, data):
    state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in digits_state.items()}
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["top", "settings", "net"]))
        if where == "top":
            state[data.draw(st.sampled_from(sorted(state)))] = data.draw(values)
        elif isinstance(state.get("settings"), dict) and state["settings"] and where == "settings":
            state["settings"][data.draw(st.sampled_from(sorted(state["settings"])))] = data.draw(values)
        elif isinstance(state.get("net"), dict) and state["net"]:
            name = data.draw(st.sampled_from(sorted(state["net"])))
            action = data.draw(st.sampled_from(["drop", "reshape", "rename", "replace"]))
            if action == "drop":
                del state["net"][name]
            elif action == "reshape":
                state["net"][name] = torch.zeros(data.draw(st.integers(0, 4)))
            elif action == "rename":
                state["net"][name + "x"] = state["net"].pop(name)
            else:
                state["net"][name] = data.draw(values)
    try:
        model = DeepSAD.from_state(state)
    except CheckpointError:
        event("refused")
        return
    event("loaded")
    scores = model.decision_function(digits_split.x_test[:8])
    assert scores.shape == (8,) and np.isfinite(scores).all()
