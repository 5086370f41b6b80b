import numpy as np
import pytest
import torch

from badsad_lib.data import DatasetNotFoundError, data_root, dataset_name, load_dataset, make_split
from conftest import requires_data


def test_digits_are_float_images_in_unit_range(digits):
    assert digits.x_train.dtype == torch.float32 and digits.x_train.shape[1:] == (1, 8, 8)
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
    assert len(digits.x_train) + len(digits.x_test) == 1797


def test_split_counts_and_no_overlap(digits):
    s = make_split(digits, normal_class=3, known_anomaly_classes=(5, 7), labeled_ratio=0.1, pollution_ratio=0.05,
                   val_ratio=0.2, seed=1)
    counts = s.counts()
    n_train = len(s.x_train)
    assert counts["train_labeled_anomalies"] == pytest.approx(0.1 * n_train, abs=1.5)
    assert counts["train_polluted"] == pytest.approx(0.05 * n_train, abs=1.5)
    assert set(s.train_labels[s.semi_targets == -1].tolist()) <= {5, 7}
    assert (s.train_labels[s.semi_targets == 0] == 3).sum() == counts["train_unlabeled_normal"]
    # no image used twice, validation disjoint from training, validation all normal
    assert len(np.unique(s.train_index)) == n_train
    assert not set(s.train_index) & set(s.val_index)
    assert (digits.y_train[torch.from_numpy(s.val_index)] == 3).all()
    assert torch.equal(s.x_train, digits.x_train[torch.from_numpy(s.train_index)])
    # the test split is the whole official test split, relabelled 0 normal / 1 anomaly
    assert len(s.x_test) == len(digits.x_test)
    assert torch.equal(s.y_test, (digits.y_test != 3).long())


def test_split_is_seeded(digits):
    a, b = (make_split(digits, 1, labeled_ratio=0.05, seed=7) for _ in range(2))
    c = make_split(digits, 1, labeled_ratio=0.05, seed=8)
    assert np.array_equal(a.train_index, b.train_index) and np.array_equal(a.val_index, b.val_index)
    assert not np.array_equal(a.val_index, c.val_index)


@pytest.mark.parametrize("kwargs, message", [
    (dict(normal_class=10), "class id from 0 to 9"),
    (dict(normal_class=0, labeled_ratio=1.5), "labeled_ratio=1.5"),
    (dict(normal_class=0, labeled_ratio=0.6, pollution_ratio=0.5), "must be below 1"),
    (dict(normal_class=0, known_anomaly_classes=(0,), labeled_ratio=0.1), "must not include the normal class"),
    (dict(normal_class=0, known_anomaly_classes=(1,), labeled_ratio=0.9), "needs"),
])
def test_split_rejects_bad_input(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_split(digits, **kwargs)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'.*digits, mnist, fmnist, cifar10"):
        dataset_name("svhn")
    assert dataset_name("Fashion-MNIST") == "fmnist"


def test_missing_dataset_offline_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", root=tmp_path)
    text = str(err.value)
    assert str(tmp_path) in text and "BADSAD_DATA" in text and "download=True" in text


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("BADSAD_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("BADSAD_DATA")
    assert data_root().name == "data"


@requires_data
def test_shared_datasets_load_with_known_sizes():
    mnist = load_dataset("mnist")
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_test.shape == (10000, 1, 28, 28)
    assert mnist.x_train.mean().item() == pytest.approx(0.1307, abs=1e-3)
    fmnist = load_dataset("fmnist")
    assert fmnist.y_train.bincount().tolist() == [6000] * 10
    cifar = load_dataset("cifar10")  # the md5-less subset that torchvision's stock class refuses
    assert cifar.x_train.shape == (5085, 3, 32, 32) and cifar.x_test.shape == (1017, 3, 32, 32)
    assert cifar.y_test.bincount().tolist() == [105, 93, 100, 104, 92, 87, 114, 102, 110, 110]
