import numpy as np
import pytest
import torch

from badsad_lib.deepsad import CheckpointError, DeepSAD, center_from, deepsad_loss
from badsad_lib.experiments import run
from badsad_lib.settings import DIGITS, QUICK
from badsad_lib.spec import RunSpec
from badsad_lib.metrics import auc
from badsad_lib.networks import Autoencoder, architecture, build_encoder, has_bias
from badsad_lib.registry import dataset_names
from conftest import requires_data


@pytest.mark.parametrize("dataset", dataset_names())
def test_networks_have_no_bias_and_the_right_shapes(dataset):
    a = architecture(dataset)
    ae = Autoencoder(dataset)
    x = torch.rand(4, a.in_channels, a.image_size, a.image_size)
    assert ae.encoder(x).shape == (4, a.rep_dim)
    assert ae(x).shape == x.shape and 0 <= ae(x).min() and ae(x).max() <= 1
    assert not has_bias(ae)


def test_mnist_encoder_is_the_papers():
    enc = build_encoder("mnist")
    shapes = [tuple(p.shape) for p in enc.parameters()]
    assert shapes == [(8, 1, 5, 5), (4, 8, 5, 5), (32, 196)]


def test_center_rule_moves_small_coordinates_out():
    codes = torch.tensor([[0.05, -0.05, 0.5, 0.0], [0.03, -0.01, 0.7, 0.0]])
    assert torch.allclose(center_from(codes), torch.tensor([0.1, -0.1, 0.6, 0.1]))


def test_loss_pulls_unlabeled_and_pushes_labeled_anomalies():
    dist = torch.tensor([4.0, 4.0, 4.0])
    per = [deepsad_loss(dist[i:i + 1], torch.tensor([t])).item() for i, t in enumerate([0, 1, -1])]
    assert per == pytest.approx([4.0, 4.0 + 1e-6, 1 / (4.0 + 1e-6)])


def test_pretraining_weights_are_copied_into_phi(digits_split):
    s = digits_split
    captured = {}
    original = Autoencoder.__init__

    def spy(self, dataset, *args):
        original(self, dataset, *args)
        captured["ae"] = self
    Autoencoder.__init__ = spy
    try:
        model = DeepSAD("digits", DIGITS, epochs=0, ae_epochs=5, progress=False)
        model.fit(s.x_train, s.semi_targets)
    finally:
        Autoencoder.__init__ = original
    ae_state = captured["ae"].encoder.state_dict()
    fresh = build_encoder("digits").state_dict()
    for key, value in model.net_.state_dict().items():
        assert torch.equal(value.cpu(), ae_state[key].cpu()), key
    assert any(not torch.equal(v, fresh[k]) for k, v in ae_state.items() if v.is_floating_point())
    assert model.ae_history_[-1] < model.ae_history_[0]


def test_training_lowers_the_loss_and_detects(digits_model, digits_split):
    h = digits_model.history_
    assert h[-1] < 0.5 * h[0]
    scores = digits_model.decision_function(digits_split.x_test)
    assert auc(scores, digits_split.y_test) > 0.95
    # not collapsed onto c: normal scores spread, anomalies far from zero
    assert np.std(scores) > 1e-3 and np.median(scores[digits_split.y_test.numpy() == 1]) > 1e-2


def test_predict_uses_the_validation_threshold(digits_model, digits_split):
    val_pred = digits_model.predict(digits_split.x_val)
    assert 0.0 < val_pred.mean() <= 0.15  # ~5% false alarms at q = 95
    assert digits_model.predict(digits_split.x_test_anomalous).mean() > 0.7


def test_save_load_roundtrip_gives_identical_scores(digits_model, digits_split, tmp_path):
    path = tmp_path / "m.pt"
    digits_model.save(path)
    loaded = DeepSAD.load(path)
    np.testing.assert_array_equal(loaded.decision_function(digits_split.x_test),
                                  digits_model.decision_function(digits_split.x_test))
    assert loaded.threshold_ == digits_model.threshold_
    assert not [p for p in tmp_path.iterdir() if p.name != "m.pt"]  # no temp file left behind


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        DeepSAD.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="badsad-deepsad-v2"):
        DeepSAD.load(foreign)


def test_bad_inputs_get_clear_errors(digits_model):
    with pytest.raises(ValueError, match=r"shape \(5, 1, 28, 28\).*\(N, 1, 8, 8\)"):
        digits_model.decision_function(torch.rand(5, 1, 28, 28))
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        digits_model.decision_function(torch.zeros(5, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"holds \[2\]"):
        DeepSAD("digits", progress=False).fit(torch.rand(10, 1, 8, 8), torch.full((10,), 2))
    with pytest.raises(RuntimeError, match="not fitted"):
        DeepSAD("digits").decision_function(torch.rand(2, 1, 8, 8))


def test_seeded_training_is_reproducible(digits_split):
    s = digits_split
    settings = DIGITS.replace(epochs=5, ae_epochs=3)
    a = DeepSAD("digits", settings, seed=3, progress=False).fit(s.x_train, s.semi_targets)
    b = DeepSAD("digits", settings, seed=3, progress=False).fit(s.x_train, s.semi_targets)
    np.testing.assert_allclose(a.decision_function(s.x_test), b.decision_function(s.x_test), rtol=1e-5)


@requires_data
def test_mnist_quick_reaches_the_papers_auc():
    metrics = run(RunSpec("mnist", 0, method="clean", labeled_ratio=0.05, settings=QUICK)).metrics
    assert metrics["auc"] >= 0.97


def test_fit_reports_every_epoch_to_the_callback(digits_split):
    s = digits_split
    seen = []
    DeepSAD("digits", DIGITS, epochs=3, ae_epochs=2, progress=False).fit(
        s.x_train, s.semi_targets, callback=lambda phase, epoch, loss: seen.append((phase, epoch)))
    assert seen == [("autoencoder", 1), ("autoencoder", 2), ("DeepSAD", 1), ("DeepSAD", 2), ("DeepSAD", 3)]


def test_fine_tune_keeps_the_center_and_changes_weights(digits_model, digits_split):
    model = digits_model.copy()
    before = [p.detach().clone() for p in model.net_.parameters()]
    c = model.c_.clone()
    model.fine_tune(digits_split.x_val, epochs=2, lr=1e-3)
    assert torch.equal(model.c_, c)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_.parameters()))
    assert len(model.history_) == len(digits_model.history_) + 2


def _state_with(digits_model, change):
    state = digits_model.state()
    change(state)
    return state


@pytest.mark.parametrize("change, message", [
    (lambda s: s["settings"].update(milestones=7), "milestones.*list of epochs"),
    (lambda s: s["settings"].update(lr="fast"), "settings are not valid"),
    (lambda s: s.update(settings=[1, 2]), "'settings' must be a mapping"),
    (lambda s: s.update(dataset=["digits"]), "unknown dataset"),
    (lambda s: s.update(detector={"a": 1}), "unknown detector"),
    (lambda s: s.update(q="95"), "percentile q '95' is not a number"),
    (lambda s: s.update(bias="no"), "'bias' must be true or false"),
    (lambda s: s.update(seed=1.5), "seed 1.5 is not a whole number"),
    (lambda s: s["net"].update({3: torch.zeros(1)}), "layer names"),
    (lambda s: s["net"].update({"0.weight": torch.zeros(8, 1, 3, 2)}), r"'0.weight' is \(8, 1, 3, 2\)"),
    (lambda s: s["net"].pop("0.weight"), "'0.weight' is missing"),
    (lambda s: s["net"].update({"20.weight": torch.zeros(2)}), "'20.weight'.*no such weight"),
    (lambda s: s.update(trained_for=3), "'trained_for' must be text"),
    (lambda s: s.update(history=[1.0, "x"]), "'history' must be a list of numbers"),
])
def test_malformed_checkpoints_are_a_checkpoint_error_naming_the_field(digits_model, change, message):
    with pytest.raises(CheckpointError, match=message):
        DeepSAD.from_state(_state_with(digits_model, change))


def test_a_checkpoint_that_unpacks_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import zipfile

    from badsad_lib import deepsad

    monkeypatch.setattr(deepsad, "MAX_CHECKPOINT_BYTES", 1_000_000)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(5_000_000))  # 5 MB of zeros, a few KB on disk
    assert bomb.stat().st_size < 100_000
    with pytest.raises(CheckpointError, match=r"bomb.pt would take 5 MB to read.*refused unread"):
        DeepSAD.load(bomb)
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="not a regular file"):
        DeepSAD.load(folder)


def test_a_fit_draws_only_from_its_own_generators(digits_split):
    """Nothing process-wide is seeded or read: the global RNG state does not change a fit, and two fits
    in two threads of one process (a threaded Dask worker) give what each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    from badsad_lib.settings import DIGITS

    settings = DIGITS.replace(epochs=4, ae_epochs=2)

    def fit(seed, global_seed=None):
        if global_seed is not None:
            torch.manual_seed(global_seed)
        m = DeepSAD("digits", settings=settings, seed=seed).fit(digits_split.x_train, digits_split.semi_targets)
        return m.history_, m.threshold_

    alone = [fit(0, 123), fit(1, 123)]
    assert fit(0, 456) == alone[0]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(fit, [0, 1]))
    assert together == alone
    assert alone[0] != alone[1]


def test_scikit_learns_clone_makes_an_unfitted_model_with_the_same_parameters(digits_model):
    from sklearn.base import clone

    from badsad_lib.deepsad import DeepSVDD
    from badsad_lib.settings import DIGITS

    copy = clone(digits_model)
    assert type(copy) is DeepSAD and copy.net_ is None and copy.settings == digits_model.settings
    assert copy.get_params() == digits_model.get_params()
    svdd = clone(DeepSVDD("digits", settings=DIGITS, seed=3))
    assert type(svdd) is DeepSVDD and svdd.seed == 3
    assert copy.set_params(seed=7).seed == 7
    with pytest.raises(ValueError, match="unknown parameter.*lr.*choose from"):
        copy.set_params(lr=0.1)
    with pytest.raises(ValueError, match="seed"):
        copy.set_params(seed=-1)
