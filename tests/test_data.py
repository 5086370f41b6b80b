import numpy as np
import pytest
import torch

from badsad_lib.data import data_root, dataset_name, load_dataset, make_split
from badsad_lib.errors import DatasetCorruptError, DatasetNotFoundError
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


# ------------------------------------------------------------------ files on disk are not trusted
def _idx(dims, payload: bytes | None = None) -> bytes:
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + (bytes(int(np.prod(dims))) if payload is None else payload)


def _mnist_folder(root, images: bytes, labels: bytes):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 3), ("t10k", 2)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(_idx([n, 28, 28]))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx([n], bytes(range(n))))
    (raw / "train-images-idx3-ubyte").write_bytes(images)
    (raw / "train-labels-idx1-ubyte").write_bytes(labels)
    return raw


def test_a_well_formed_tiny_idx_folder_loads(tmp_path):
    _mnist_folder(tmp_path, _idx([3, 28, 28]), _idx([3], bytes([0, 1, 2])))
    data = load_dataset("mnist", root=tmp_path)
    assert data.x_train.shape == (3, 1, 28, 28) and data.y_train.tolist() == [0, 1, 2]


@pytest.mark.parametrize("images, labels, message", [
    (b"", _idx([3], bytes(3)), "train-images.*not an uncompressed IDX file"),
    (b"garbage!" * 10, _idx([3], bytes(3)), "train-images.*not an uncompressed IDX file"),
    (bytes([0, 0, 8, 3, 0, 0]), _idx([3], bytes(3)), "train-images.*truncated inside its header"),
    (bytes([0, 0, 8, 3]) + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2, _idx([3], bytes(3)),
     r"train-images.*header says \[3, 28, 28\], found 0 values"),
    (_idx([3, 28, 28])[:-5], _idx([3], bytes(3)), "train-images.*truncated or padded"),
    (_idx([3, 32, 32]), _idx([3], bytes(3)), r"train-images.*shape \(32, 32\), expected \(28, 28\)"),
    (_idx([0, 28, 28]), _idx([0]), "train-images.*holds no items"),
    (_idx([3, 28, 28]), _idx([2], bytes(2)), "train-labels.*2 labels for 3 images"),
    (_idx([3, 28, 28]), _idx([3], bytes([0, 1, 12])), "train-labels.*outside the class ids 0-9"),
    (_idx([3, 28, 28]), _idx([3, 1], bytes(3)), "train-labels.*2 dimensions where 1 are expected"),
])
def test_malformed_idx_files_are_one_sentence_naming_the_file(tmp_path, images, labels, message):
    _mnist_folder(tmp_path, images, labels)
    with pytest.raises(DatasetCorruptError, match=message):
        load_dataset("mnist", root=tmp_path)


def _cifar_folder(root, first_batch: bytes):
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [3, 9]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(good)
    (folder / "data_batch_1").write_bytes(first_batch)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_a_cifar_batch_with_a_code_payload_is_refused_and_nothing_runs(tmp_path):
    import pickle

    marker = tmp_path / "payload_ran"
    evil = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": _Payload(marker)}, protocol=2)
    _cifar_folder(tmp_path, evil)
    with pytest.raises(DatasetCorruptError, match=r"data_batch_1 .*names (posix|os|nt)\.system"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_a_well_formed_cifar_folder_loads_with_the_restricted_reader(tmp_path):
    import pickle

    _cifar_folder(tmp_path, pickle.dumps({"data": np.full((2, 3072), 255, np.uint8), "labels": [1, 2]}))
    data = load_dataset("cifar10", root=tmp_path)
    assert data.x_train.shape == (10, 3, 32, 32) and data.y_train[:2].tolist() == [1, 2]
    assert data.x_train[0].max() == 1.0 and data.x_test.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("make, message", [
    (lambda p: b"", "data_batch_1 is not a readable CIFAR-10 batch .*EOFError"),
    (lambda p: b"\x80\x02garbage", "data_batch_1 is not a readable CIFAR-10 batch"),
    (lambda p: p.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})[:-40], "not a readable"),
    (lambda p: p.dumps([1, 2, 3]), "a dict with 'data' and 'labels' expected, found list"),
    (lambda p: p.dumps({"data": np.zeros((2, 3072), np.uint8)}), r"found \['data'\]"),
    (lambda p: p.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), r"shape \(2, 100\)"),
    (lambda p: p.dumps({"data": np.zeros((2, 3072), np.float64), "labels": [0, 1]}), "float64 array"),
    (lambda p: p.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "1 labels for 2 images"),
    (lambda p: p.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}), "outside the class ids"),
    (lambda p: p.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}), "not a list of class ids"),
])
def test_malformed_cifar_batches_are_one_sentence_naming_the_file(tmp_path, make, message):
    import pickle

    _cifar_folder(tmp_path, make(pickle))
    with pytest.raises(DatasetCorruptError, match=message):
        load_dataset("cifar10", root=tmp_path)


def test_a_corrupt_dataset_is_one_line_and_exit_2_on_the_command_line(tmp_path):
    import subprocess
    import sys

    _cifar_folder(tmp_path, b"not a pickle")
    done = subprocess.run([sys.executable, "-m", "badsad_lib.cli", "train", "--dataset", "cifar10", "--quick",
                           "--data-root", str(tmp_path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "data_batch_1" in lines[0] and "Traceback" not in done.stderr
