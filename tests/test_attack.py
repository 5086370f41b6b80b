import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from badsad_lib import grid
from badsad_lib.cli import main
from badsad_lib.experiments import run_attack


@pytest.fixture(scope="module")
def attacks():
    """Naive poisoning vs. full BadSAD on digits (normal class 0), same clean model."""
    clean, _, _, _, naive = run_attack("digits", 0, "naive", seed=0)
    _, _, _, _, badsad = run_attack("digits", 0, "badsad", seed=0, clean_model=clean)
    return naive, badsad


def test_full_badsad_creates_a_backdoor(attacks):
    _, badsad = attacks
    assert badsad["asr"]["95"] >= 0.8
    assert badsad["asr"]["95"] > badsad["miss_rate"]["95"] + 0.5  # the trigger, not a weak detector
    assert badsad["asr_by_strength"]["1"] > badsad["asr_by_strength"]["0"]


def test_backdoored_model_stays_stealthy(attacks):
    _, badsad = attacks
    assert badsad["auc_backdoored"] >= badsad["auc_clean_model"] - 0.05
    assert badsad["auc_clean_model"] > 0.95


def test_naive_poisoning_does_not_transfer_to_anomalies(attacks):
    naive, badsad = attacks
    assert naive["asr"]["95"] <= 0.3
    assert badsad["asr"]["95"] - naive["asr"]["95"] >= 0.5


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown attack method 'magic'.*naive, alignment, concentration, badsad"):
        run_attack("digits", 0, "magic")


def test_grid_resumes_without_recomputing_or_losing_cells(tmp_path, monkeypatch):
    cells = grid.make_cells(["digits"], [0, 1], [0], ["naive"])
    first = grid.run_grid(cells, tmp_path, executor=ThreadPoolExecutor(1), progress=False)
    assert len(first) == 2 and (tmp_path / "summary.md").exists() and (tmp_path / "results.csv").exists()
    kept = tmp_path / "cells" / f"{cells[0].key}.json"
    kept_text = kept.read_text()
    (tmp_path / "cells" / f"{cells[1].key}.json").unlink()  # an interrupted run lost this one
    ran = []
    real = grid.run_cell
    monkeypatch.setattr(grid, "run_cell", lambda cell, out: ran.append(cell.key) or real(cell, out))
    second = grid.run_grid(cells, tmp_path, progress=False)
    assert ran == [cells[1].key]
    assert kept.read_text() == kept_text
    assert [r["cell"] for r in second] == [r["cell"] for r in first]
    assert not list((tmp_path / "cells").glob(".*tmp"))


def test_attack_cli_writes_metrics_and_figures(tmp_path, capsys):
    assert main(["attack", "--dataset", "digits", "--normal-class", "2", "--method", "naive", "--quick",
                 "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("auc_clean_model", "auc_backdoored", "asr", "miss_rate", "seconds", "poison_ratio", "strength"):
        assert key in metrics
    assert set(metrics["asr"]) == set(metrics["miss_rate"]) == {"90", "95", "99"}
    for png in ("triggered_examples.png", "score_histograms.png", "asr_by_strength.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert "ASR@95" in capsys.readouterr().out
    assert main(["attack", "--dataset", "digits", "--strength", "2", "--out", str(tmp_path)]) == 2
    assert "strength 2.0 is outside [0, 1]" in capsys.readouterr().err
