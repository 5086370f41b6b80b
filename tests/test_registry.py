"""One place for each variant: a dataset registered in one call trains, attacks and tabulates end to end."""
import csv

import pytest
import torch

from badsad_lib import registry
from badsad_lib.data import ImageData, load_dataset, make_split
from badsad_lib.deepsad import DeepSAD, DeepSVDD, detector_class
from badsad_lib.errors import DatasetCorruptError
from badsad_lib.grid import make_specs, run_grid
from badsad_lib.registry import DatasetInfo, dataset_info, register_dataset, unregister_dataset
from badsad_lib.settings import DIGITS
from badsad_lib.spec import RunSpec
from badsad_lib.summaries import rows_of

SETTINGS = DIGITS.replace(epochs=60, ae_epochs=10, milestones=(40,), name="strokes")


def _strokes(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 8x8 images: a horizontal stroke, a vertical stroke, a diagonal, at random places."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(3 * n_per_class, 1, 8, 8)
    y = torch.arange(3).repeat_interleave(n_per_class)
    at = torch.randint(1, 7, (len(y),), generator=g)
    for i, (label, k) in enumerate(zip(y.tolist(), at.tolist())):
        if label == 0:
            x[i, 0, k, 1:7] = 1.0
        elif label == 1:
            x[i, 0, 1:7, k] = 1.0
        else:
            x[i, 0].fill_diagonal_(1.0)
            x[i, 0] = torch.roll(x[i, 0], k - 4, dims=1)
    x = (x + 0.15 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    return x, y


def _load_strokes(root) -> ImageData:
    return ImageData("strokes", *_strokes(200, 0), *_strokes(60, 1))


@pytest.fixture
def strokes():
    """The synthetic dataset, registered in this one place (and forgotten afterwards)."""
    info = register_dataset(DatasetInfo(
        "strokes", ("horizontal", "vertical", "diagonal"), dataset_info("digits").architecture, _load_strokes,
        quick=SETTINGS, full=SETTINGS, val_ratio=0.2, aliases=("stroke-set",), embedded=True))
    yield info
    unregister_dataset("strokes")


def test_a_registered_dataset_trains_attacks_and_tabulates_end_to_end(strokes, tmp_path):
    assert "strokes" in registry.dataset_names() and registry.dataset_name("Stroke-Set") == "strokes"
    spec = RunSpec("stroke-set", normal_class=2, seed=0, method="badsad")
    assert spec.dataset == "strokes" and spec.known_anomaly_class == 0  # the class after 2, of three
    assert spec.settings == SETTINGS
    results = run_grid(make_specs(["strokes"], None, [0], ["clean", "badsad"]), tmp_path / "grid", progress=False)
    assert [r["normal_class"] for r in results] == [0, 0, 1, 1, 2, 2]  # every class of three, none more
    attacked = [r for r in results if r["method"] == "badsad"]
    assert min(r["auc_clean_model"] for r in attacked) > 0.9  # three separable stroke shapes
    # the backdoor takes hold on a new dataset: measured .22/.39/.43 where the clean models pass none
    assert sum(r["asr"]["95"] for r in attacked) / 3 > 0.15
    assert max(r["clean_model"]["asr"]["95"] for r in attacked) < 0.05
    rows = rows_of(results)
    assert {r["dataset"] for r in rows} == {"strokes"}
    summary = (tmp_path / "grid" / "summary.md").read_text()  # one table of the clean runs, one of the attacks
    assert "| strokes | badsad | corners |" in summary and "| strokes | strokes | 0.01 | 3 | 1.000" in summary
    with open(tmp_path / "grid" / "results.csv") as f:  # clean and attack rows in one file, each saying which
        table = list(csv.DictReader(f))
    assert sorted((r["dataset"], r["method"], r["normal_class"]) for r in table) == sorted(
        ("strokes", m, str(k)) for m in ("clean", "badsad") for k in range(3))


def test_a_registered_dataset_checks_its_classes_and_its_loader(strokes):
    with pytest.raises(ValueError, match="normal class=3 must be from 0 to 2"):
        RunSpec("strokes", normal_class=3)
    with pytest.raises(ValueError, match="from 0 to 2"):
        make_split(load_dataset("strokes"), 0, known_anomaly_classes=(5,), labeled_ratio=0.1)
    with pytest.raises(ValueError, match="dataset name 'strokes' is taken"):
        register_dataset(strokes)

    def wrong(root):
        x, y = _strokes(10, 0)
        return ImageData("strokes", x[:, :, :7], y, x, y)
    unregister_dataset("strokes")  # entries are frozen: replace the whole entry
    register_dataset(DatasetInfo("strokes", strokes.class_names, strokes.architecture, wrong, SETTINGS, SETTINGS))
    with pytest.raises(DatasetCorruptError, match=r"train images torch.float32 \(30, 1, 7, 8\)"):
        load_dataset("strokes")


def test_every_registered_detector_has_its_class():
    for name, info in registry.DETECTORS.items():
        cls = detector_class(name)
        assert cls.detector == name and detector_class(info.title) is cls
    assert detector_class("deepsvdd") is DeepSVDD and detector_class("DeepSAD") is DeepSAD
    with pytest.raises(ValueError, match="unknown detector 'svdd'"):
        detector_class("svdd")


def test_every_method_entry_is_consistent():
    for m in registry.METHOD_INFO.values():
        assert m.needs_objective == (m.name not in ("naive", "data_only", "data_only_contrast"))
        assert m.views_in_data <= (m.views is not None)
    with pytest.raises(ValueError, match="terms"):
        registry.MethodInfo("x", "1 data", "", terms=("shrink",))
