"""The grid: resumable, one file per distinct run, never a model trained with other settings, safe to share."""
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from badsad_lib import grid
from badsad_lib.grid import make_specs, run_grid
from badsad_lib.settings import DIGITS
from badsad_lib.spec import RunSpec


def test_grid_resumes_without_recomputing_or_losing_cells(tmp_path, monkeypatch):
    specs = make_specs(["digits"], [0, 1], [0], ["naive"])
    first = run_grid(specs, tmp_path, executor=ThreadPoolExecutor(1), progress=False)
    assert len(first) == 2 and (tmp_path / "summary.md").exists() and (tmp_path / "results.csv").exists()
    kept = grid.cell_path(tmp_path, specs[0])
    kept_text = kept.read_text()
    grid.cell_path(tmp_path, specs[1]).unlink()  # an interrupted run lost this one
    ran = []
    real = grid.run_cell
    monkeypatch.setattr(grid, "run_cell", lambda spec, out: ran.append(spec.key) or real(spec, out))
    second = run_grid(specs, tmp_path, progress=False)
    assert ran == [specs[1].key]
    assert kept.read_text() == kept_text
    assert [r["key"] for r in second] == [r["key"] for r in first]
    assert not list((tmp_path / "cells").glob(".*tmp")) and not list((tmp_path / "cells").glob("*.claim"))


def test_a_rerun_with_another_labeled_ratio_trains_its_own_clean_model(tmp_path):
    low = run_grid(make_specs(["digits"], [0], [0], ["naive"], labeled_ratio=0.01), tmp_path, progress=False)[0]
    high = run_grid(make_specs(["digits"], [0], [0], ["naive"], labeled_ratio=0.1), tmp_path, progress=False)[0]
    assert high["labeled_ratio"] == 0.1 and low["key"] != high["key"]
    assert len(list((tmp_path / "models").glob("digits_class0_seed0_clean_*.pt"))) == 2
    alone = run_grid(make_specs(["digits"], [0], [0], ["naive"], labeled_ratio=0.1), tmp_path / "alone",
                     progress=False)[0]
    assert high["auc_clean_model"] == pytest.approx(alone["auc_clean_model"], abs=1e-9)


@pytest.mark.parametrize("a, b", [
    (dict(defenses=("strip",)), dict(defenses=("spectral",))),
    (dict(strength=0.1234561), dict(strength=0.1234564)),
    (dict(labeled_ratio=0.01), dict(labeled_ratio=0.1)),
    (dict(settings=DIGITS), dict(settings=DIGITS.replace(epochs=10))),
])
def test_different_runs_never_share_a_key(a, b):
    assert RunSpec("digits", 0, **a).key != RunSpec("digits", 0, **b).key


def test_the_same_run_spelled_twice_is_one_cell():
    assert RunSpec("fmnist", 0).key == RunSpec("fashion-mnist", 0).key
    assert RunSpec("digits", 0, strength=None).key == RunSpec("digits", 0, strength=1.0).key
    assert len(make_specs(["digits"], [0, 0], [0], ["naive", "naive"])) == 1
    assert RunSpec("digits", 0, method="outlier_exposure", poison_ratio=0.3).key == \
        RunSpec("digits", 0, method="outlier_exposure", poison_ratio=0.0).key  # nothing is poisoned either way


def test_a_live_claim_is_respected_and_a_dead_one_taken_over(tmp_path):
    spec = RunSpec("digits", 0, method="naive")
    path = grid.cell_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    assert grid.claim(path) and not grid.claim(path)  # this process holds it
    assert grid.run_cell(spec, str(tmp_path)) == grid.CLAIMED_ELSEWHERE
    import socket
    path.with_suffix(".claim").write_text(f"{socket.gethostname()} 999999999 0\n")  # a pid that does not exist
    assert grid.claim(path)
    grid.release(path)


def test_stale_temporary_files_are_cleaned_and_fresh_ones_kept(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    stale, fresh = cells / ".x.json.abc.tmp", cells / ".y.json.def.tmp"
    stale.write_text("half")
    fresh.write_text("half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    run_grid([], tmp_path, progress=False)
    assert not stale.exists() and fresh.exists()


def test_cells_run_on_one_thread_whatever_the_jobs(tmp_path):
    torch.set_num_threads(2)
    result = run_grid(make_specs(["digits"], [3], [0], ["naive"]), tmp_path, progress=False)[0]
    assert result["threads"] == 1 and torch.get_num_threads() == 2
    cell = json.loads(grid.cell_path(tmp_path, RunSpec("digits", 3, method="naive")).read_text())
    assert cell["spec"]["dataset"] == "digits"


def test_a_model_planted_under_another_runs_name_in_out_models_is_retrained(tmp_path, capsys):
    spec = make_specs(["digits"], [0], [0], ["naive"])
    first = run_grid(spec, tmp_path, progress=False)[0]
    models = tmp_path / "models"
    clean = models / f"{spec[0].clean().model_key}.pt"
    backdoored = models / f"{spec[0].model_key}.pt"
    clean.write_bytes(backdoored.read_bytes())  # the backdoored model under the clean model's name
    grid.cell_path(tmp_path, spec[0]).unlink()
    capsys.readouterr()
    again = run_grid(spec, tmp_path, progress=False)[0]
    assert "trained for another run" in capsys.readouterr().err
    assert again["auc_clean_model"] == pytest.approx(first["auc_clean_model"], abs=1e-6)
    assert again["clean_model"]["asr"] == first["clean_model"]["asr"]
