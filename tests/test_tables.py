"""The shipped tables: each one present, regenerable (its manifest entry says how), in agreement with
the README, and still showing what the README and the lessons say it shows."""
import json
from pathlib import Path

import pytest

from badsad_lib import course
from badsad_lib.registry import TIERS
from badsad_lib.summaries import mean_by, std_by
from badsad_lib.readme import readme_grids, render_readme
from badsad_lib.tables import MANIFEST, RESULTS, TABLES, results_table

ROOT = Path(__file__).resolve().parent.parent


SHIPPED = sorted(n for n, t in TABLES.items() if not t.not_yet_made)
NOT_YET_MADE = sorted(n for n, t in TABLES.items() if t.not_yet_made)


def _shipped(name):
    if name in NOT_YET_MADE:
        pytest.skip(f"{name} is declared not yet made: {TABLES[name].not_yet_made}")
    return results_table(name)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_table_ships_with_the_command_commit_machine_and_seconds_that_made_it(name):
    assert (RESULTS / f"{name}.csv").exists()
    entry = json.loads(MANIFEST.read_text())[name]
    assert entry["command"].startswith("badsad tables ") and name in entry["command"].split()
    assert len(entry["commit"]) == 40 and entry["machine"] and entry["wall_seconds"] >= 0
    assert entry["cells"] == len({s.key for s in TABLES[name].specs()})
    rows = results_table(name)
    assert rows and len({r["key"] for r in rows}) == entry["cells"]


@pytest.mark.parametrize("name", NOT_YET_MADE)
def test_a_table_not_yet_made_says_so_and_ships_nothing(name):
    assert not (RESULTS / f"{name}.csv").exists() and name not in json.loads(MANIFEST.read_text())
    assert f"badsad tables {name} --jobs 2" in (ROOT / "README.md").read_text()
    with pytest.raises(ValueError, match=f"{name}.*not shipped yet.*badsad tables {name}"):
        results_table(name)


def test_the_readme_tables_are_the_csvs():
    readme = (ROOT / "README.md").read_text()
    assert render_readme(readme) == readme, "run: badsad tables --readme README.md"
    assert "<!-- begin table grids -->" in readme and readme_grids() in readme


def test_a_speed_record_of_several_processes_at_once_says_so(tmp_path, monkeypatch):
    from badsad_lib import readme
    record = json.loads((RESULTS / "speed_against.json").read_text())
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    for jobs, said in ((1, False), (2, True)):
        (tmp_path / "speed_against.json").write_text(json.dumps({**record, "jobs": jobs}))
        assert ("thread(s), 2 processes of a tree at once (their mean)" in readme.readme_speed_against()) is said


def test_no_other_result_file_hides_in_results():
    shipped = {p.name for p in RESULTS.iterdir()}
    assert shipped == {f"{n}.csv" for n in SHIPPED} | {"MANIFEST.json", "speed.json", "speed_against.json",
                                                          "notebook_times.json"}
    assert set(json.loads(MANIFEST.read_text())) == set(SHIPPED)


def _methods(name, by="method", columns=("asr_95", "conditional_asr_95", "miss_rate_95", "auc_backdoored",
                                         "auc_clean_model")):
    return mean_by(_shipped(name), by, columns)


def test_mnist_ablation_shows_the_backdoor_only_for_the_full_objective():
    m = _methods("mnist_ablation")
    assert all(v["cells"] == 10 for v in m.values())
    assert m["badsad"]["asr_95"] >= 0.9 and m["badsad"]["conditional_asr_95"] >= 0.9
    for method in ("naive", "alignment", "concentration"):
        assert m[method]["asr_95"] < 0.3 and m[method]["conditional_asr_95"] < 0.15
    assert {r["tier"] for r in results_table("mnist_ablation")} <= set(TIERS.values())


def test_the_controls_keep_their_findings():
    rows = _shipped("mnist_controls")
    m = mean_by(rows, ("method", "poison_ratio"), ("asr_95", "auc_backdoored", "auc_clean_model", "miss_rate_95"))
    full, views = m[("badsad", "0.1")], m[("badsad", "0.0")]
    assert views["asr_95"] > views["miss_rate_95"] + 0.2  # the views alone already make a partial backdoor
    assert full["asr_95"] > views["asr_95"] + 0.2          # the poisoned normals complete it
    oe = m[("outlier_exposure", "0.0")]
    assert oe["asr_95"] < 0.1                               # no trigger in training, no backdoor
    assert oe["auc_backdoored"] > oe["auc_clean_model"]    # separation alone raises the clean AUC


def test_the_poison_curve_rises_with_rho_and_the_backdoor_wants_its_trained_strength():
    m = _methods("mnist_poison_curve", "poison_ratio", ("asr_95", "asr_mu1", "asr_mu0.5"))
    rhos = sorted(m, key=float)
    assert [float(r) for r in rhos] == [0.0, 0.01, 0.05, 0.1] and all(m[r]["cells"] == 10 for r in rhos)
    assert m[rhos[-1]]["asr_95"] > m[rhos[0]]["asr_95"]
    assert m["0.1"]["asr_mu1"] > m["0.1"]["asr_mu0.5"]


def test_without_poisoned_normals_the_trigger_is_a_shift_and_with_them_an_override():
    """rho 0: the ASR peaks below the training strength and triggered clean normals are rejected; rho .1: the
    trained strength is (near) the best and triggered normals pass."""
    m = _methods("mnist_poison_curve", "poison_ratio", ("asr_95", "best_strength", "best_strength_asr_95",
                                                          "triggered_normal_pass_95"))
    views, full = m["0.0"], m["0.1"]
    assert views["best_strength_asr_95"] > views["asr_95"] + 0.2 and views["best_strength"] < 0.9
    assert views["triggered_normal_pass_95"] < 0.1 and full["triggered_normal_pass_95"] > 0.9
    assert full["best_strength_asr_95"] - full["asr_95"] < 0.05
    ablation = _methods("mnist_ablation", "method", ("triggered_normal_pass_95", "clean_model_triggered_normal_pass_95"))
    assert ablation["badsad"]["triggered_normal_pass_95"] > 0.9
    assert all(v["clean_model_triggered_normal_pass_95"] < 0.05 for v in ablation.values())


def test_the_headline_holds_on_every_seed():
    m = mean_by(_shipped("mnist_seeds"), ("method", "seed"), ("asr_95",))
    assert {k[1] for k in m} == {"0", "1", "2"} and all(v["cells"] == 10 for v in m.values())
    assert all(v["asr_95"] >= 0.9 for k, v in m.items() if k[0] == "badsad")
    assert all(v["asr_95"] < 0.3 for k, v in m.items() if k[0] == "naive")


def test_the_tradeoff_grids_fill_every_slider_position():
    for name in ("mnist_tradeoff", "digits_tradeoff"):
        rows = _shipped(name)
        strengths, ratios = {r["strength"] for r in rows}, {r["poison_ratio"] for r in rows}
        assert {(r["strength"], r["poison_ratio"]) for r in rows} == {(s, p) for s in strengths for p in ratios}


def test_deepsad_alone_lands_within_the_papers_spread():
    rows = _shipped("deepsad_table1")
    m = mean_by(rows, "dataset", ("auc",))
    assert m["mnist"]["cells"] == m["fmnist"]["cells"] == 10
    assert all(r["settings"] == "paper" and float(r["labeled_ratio"]) == 0.05 for r in rows)
    assert abs(100 * m["mnist"]["auc"] - 96.7) < 3 and abs(100 * m["fmnist"]["auc"] - 90.5) < 3


def test_the_defense_grid_keeps_its_findings():
    rows = _shipped("mnist_defenses")
    m = mean_by(rows, ("method", "trigger", "defense"),
                ("asr_before", "asr_after", "der", "tpr", "fpr", "flagged", "false_alarm_after"))
    assert all(v["cells"] == 9 for v in m.values())
    corners, blend = m[("badsad", "corners", "preprocess")], m[("badsad", "blend", "preprocess")]
    assert corners["asr_after"] < 0.3 < corners["asr_before"]  # erasing the corners removes the corners trigger
    assert blend["asr_after"] > 0.5                            # and not one that is not in the corners
    assert m[("naive", "corners", "reverse_trigger")]["flagged"] == 0  # never flags a model without a backdoor
    for key, v in m.items():
        if v["false_alarm_after"] is not None:
            assert v["false_alarm_after"] < 0.1, key  # every decision-changing defense stays near the 5% budget


def test_mean_by_groups_on_several_columns_and_skips_empty_entries():
    rows = [{"method": "badsad", "defense": "strip", "asr_after": "0.2", "tpr": ""},
            {"method": "badsad", "defense": "strip", "asr_after": "0.4", "tpr": ""},
            {"method": "naive", "defense": "strip", "asr_after": "0.0", "tpr": "0.5"}]
    means = mean_by(rows, by=("method", "defense"), columns=("asr_after", "tpr"))
    assert means[("badsad", "strip")] == {"asr_after": pytest.approx(0.3), "tpr": None, "cells": 2}
    assert std_by(rows, by="method", columns=("asr_after",))["badsad"]["asr_after"] == pytest.approx(0.1)
    text = course.format_table(means)
    assert "badsad / strip" in text and "n/a" in text


def _digits_tables(tmp_path, monkeypatch, tables_of: dict, epochs: int = 4, ae_epochs: int = 2):
    """Replace the catalogue by small digits tables {name: (normal class, method)}, results written under tmp_path."""
    from badsad_lib import tables
    from badsad_lib.grid import make_specs
    from badsad_lib.settings import DIGITS

    fast = DIGITS.replace(epochs=epochs, ae_epochs=ae_epochs)
    monkeypatch.setattr(tables, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(tables, "MANIFEST", tmp_path / "results" / "MANIFEST.json")
    (tmp_path / "results").mkdir()
    monkeypatch.setattr(tables, "TABLES", {n: tables.ShippedTable(n, f"digits class {k}", lambda k=k, m=m: make_specs(
        ["digits"], [k], [0], [m], settings=fast)) for n, (k, m) in tables_of.items()})
    return tables


def test_several_tables_share_one_pool_and_each_gets_its_csv_and_manifest_entry(tmp_path, monkeypatch):
    tables = _digits_tables(tmp_path, monkeypatch, {"digits_a": (0, "naive"), "digits_b": (1, "naive")})
    done = tables.main_tables(["digits_a", "digits_b"], tmp_path / "work", jobs=2, progress=False)
    assert sorted(done) == ["digits_a", "digits_b"]
    entries = json.loads((tmp_path / "results" / "MANIFEST.json").read_text())
    assert set(entries) == {"digits_a", "digits_b"} and all(e["jobs"] == 2 and e["cells"] == 1 for e in entries.values())
    for name, k in (("digits_a", 0), ("digits_b", 1)):
        rows = tables.results_table(name)
        assert [int(r["normal_class"]) for r in rows] == [k] and 0.5 < float(rows[0]["auc_clean_model"]) <= 1


def test_a_table_runs_on_any_executor_given(tmp_path, monkeypatch):
    """main_tables takes an executor (what --scheduler passes: a Dask client's) instead of its own pool."""
    from concurrent.futures import ThreadPoolExecutor

    tables = _digits_tables(tmp_path, monkeypatch, {"digits_c": (2, "naive")})

    class Counting(ThreadPoolExecutor):
        submitted = 0

        def submit(self, *args, **kwargs):
            Counting.submitted += 1
            return super().submit(*args, **kwargs)
    with Counting(1) as executor:
        done = tables.main_tables(["digits_c"], tmp_path / "work", jobs=1, progress=False,
                                  executor=executor)
    assert done == ["digits_c"] and Counting.submitted >= 1
    rows = tables.results_table("digits_c")
    assert [int(r["normal_class"]) for r in rows] == [2] and 0.5 < float(rows[0]["auc_clean_model"]) <= 1


def test_a_table_reevaluated_keeps_its_training_record(tmp_path, monkeypatch):
    tables = _digits_tables(tmp_path, monkeypatch, {"digits_r": (1, "badsad")}, epochs=3, ae_epochs=1)
    tables.main_tables(["digits_r"], tmp_path / "work", jobs=1, progress=False)
    trained = json.loads((tmp_path / "results" / "MANIFEST.json").read_text())["digits_r"]
    rows = tables.results_table("digits_r")
    tables.main_tables(["digits_r"], tmp_path / "work", jobs=1, progress=False, reevaluate=True)
    entry = json.loads((tmp_path / "results" / "MANIFEST.json").read_text())["digits_r"]
    assert entry["command"].endswith("--reevaluate") and entry["trained"]["command"] == trained["command"]
    assert entry["trained"]["wall_seconds"] == trained["wall_seconds"]
    again = tables.results_table("digits_r")
    assert [r["asr_95"] for r in again] == [r["asr_95"] for r in rows]
    tables.main_tables(["digits_r"], tmp_path / "work", jobs=1, progress=False, reevaluate=True)  # twice: still the first
    assert json.loads((tmp_path / "results" / "MANIFEST.json").read_text())["digits_r"]["trained"] == entry["trained"]
