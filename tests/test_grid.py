"""The grid: resumable, one file per distinct run, never a model trained with other settings, safe to share."""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from badsad_lib import claims, grid
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
    lock = path.with_suffix(".claim")
    token = claims.claim(lock)
    assert token and claims.claim(lock) is None  # this process holds it
    assert grid.run_cell(spec, str(tmp_path)) == grid.CLAIMED_ELSEWHERE
    assert claims.release(lock, token) and not lock.exists()
    import socket
    lock.write_text(f"{socket.gethostname()} 999999999 0\n")  # an older claim naming a pid that does not exist
    assert claims.claim(lock)
    for garbage in ("", "not a claim", '{"host": 3}'):  # not claims at all: taken over
        lock.write_text(garbage)
        assert claims.claim(lock)


def test_a_claim_naming_a_reused_pid_is_taken_over(tmp_path):
    """A live process with the claim's PID that started at another time (a reused PID) does not own it."""
    lock = tmp_path / "cell.claim"
    owner = claims.me()
    if not owner["started"]:
        pytest.skip("no /proc: process start times are unknown here")
    owner["started"] = str(int(owner["started"]) + 12345)  # this very PID is alive, but not that process
    lock.write_text(json.dumps(owner))
    assert claims.claim(lock)


def test_a_claim_of_another_live_process_is_respected_and_only_its_owner_releases_it(tmp_path):
    lock = tmp_path / "cell.claim"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {**claims.me(), "pid": child.pid, "started": claims.start_time(child.pid)}
        lock.write_text(json.dumps(owner))
        assert claims.claim(lock) is None
        assert not claims.release(lock, "someone else's token") and lock.exists()
        assert "process %d on" % child.pid in claims.describe(claims.read_owner(lock))
    finally:
        child.kill()
        child.wait()
    assert claims.claim(lock)  # its owner is gone


def _contend(folder: str, rounds: int) -> int:
    """Claim, check that nobody else holds the cell, release; returns how many times two held it at once."""
    folder, clashes = Path(folder), 0
    lock, held = folder / "cell.claim", folder / "held"
    for _ in range(rounds):
        token = None
        while token is None:
            token = claims.claim(lock)
        try:
            os.close(os.open(held, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            clashes += 1
        else:
            os.unlink(held)
        assert claims.release(lock, token)
    return clashes


def test_contending_processes_never_hold_one_cell_at_once(tmp_path):
    with ProcessPoolExecutor(3) as pool:
        clashes = list(pool.map(_contend, [str(tmp_path)] * 3, [300] * 3))
    assert clashes == [0, 0, 0]


def test_a_waiting_grid_says_which_cell_and_owner_it_waits_for(tmp_path, capsys):
    spec = make_specs(["digits"], [0], [0], ["naive"])[0]
    path = grid.cell_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    lock = path.with_suffix(".claim")
    token = claims.claim(lock)
    computed = run_grid([spec], tmp_path / "elsewhere", progress=False)[0]  # what the owner will write

    def finish_later():
        time.sleep(0.5)
        path.write_text(json.dumps(computed))
        claims.release(lock, token)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(finish_later)
        assert grid._wait_for(spec, tmp_path, poll=0.1) == computed
    err = capsys.readouterr().err
    assert f"waiting for cell {spec.key}: process {os.getpid()} on" in err and err.count("waiting") == 1


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
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = run_grid(make_specs(["digits"], [3], [0], ["naive"]), tmp_path, progress=False)[0]
        assert result["threads"] == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    made_by = result["made_by"]  # which node and which code computed it
    assert made_by["host"] and "torch" in made_by["machine"] and len(made_by["source"]) == 12
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


def test_one_run_spelled_two_ways_is_one_cell():
    """Defenses in another order and a poison ratio of -0.0 are the same run: one key, one cell."""
    from badsad_lib.spec import RunSpec

    a = RunSpec("digits", 0, method="badsad", poison_ratio=0.0, defenses=("fine_pruning", "bn_recalibration"))
    b = RunSpec("digits", 0, method="badsad", poison_ratio=-0.0, defenses=("bn_recalibration", "fine_pruning"))
    assert a.key == b.key and a.defenses == b.defenses
    assert str(b.poison_ratio) == "0.0"
    c = RunSpec("digits", 0, settings=a.settings.replace(weight_decay=-0.0))
    assert c.settings.weight_decay == 0.0 and str(c.settings.weight_decay) == "0.0"
    assert len(make_specs(["digits"], [0], [0], ["badsad"], poison_ratios=(0.0, -0.0))) == 1


def test_never_more_workers_than_cells(tmp_path, monkeypatch):
    asked = []

    class Stop(Exception):
        pass

    def pool(jobs):
        asked.append(jobs)
        raise Stop
    monkeypatch.setattr(grid, "worker_pool", pool)
    with pytest.raises(Stop):
        run_grid(make_specs(["digits"], [0, 1], [0], ["naive"]), tmp_path, jobs=64, progress=False)
    assert asked == [2]


_PARENT = """
import os, sys, time
from badsad_lib.grid import worker_pool
pool = worker_pool(2)
futures = [pool.submit(time.sleep, 120) for _ in range(2)]
time.sleep(1)
print(*[p.pid for p in pool._processes.values()], flush=True)
time.sleep(120)
"""


def test_workers_do_not_outlive_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2
    parent.kill()  # kill -9: no chance to shut its pool down
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(claims.alive({"host": __import__("socket").gethostname(), "pid": w})
                                         for w in workers):
        time.sleep(0.2)
    left = [w for w in workers if claims.alive({"host": __import__("socket").gethostname(), "pid": w})]
    for w in left:
        os.kill(w, 9)
    assert not left, f"workers {left} outlived their parent"


def test_ctrl_c_on_a_grid_with_two_jobs_is_one_line(tmp_path):
    """Ctrl-C reaches the whole process group; the workers go quietly, the parent says so in one line."""
    import signal

    command = [sys.executable, "-m", "badsad_lib.cli", "reproduce", "--datasets", "digits", "--classes", "0", "1", "2",
               "--methods", "badsad", "--quick", "--jobs", "2", "--out", str(tmp_path)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "cells").glob("*.claim")):
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith("a rerun resumes"), err
    time.sleep(1)
    left = subprocess.run(["pgrep", "-g", str(run.pid)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes {left} were left running"


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_a_dask_cluster_with_a_two_thread_worker_gives_the_pools_cells(tmp_path):
    """Two cells at once in one Dask worker process (two threads) give what the local pool gives, cell for
    cell; the driver writes the cells from the futures' results."""
    distributed = pytest.importorskip("distributed")
    specs = make_specs(["digits"], [0, 1], [0], ["naive"])
    pool = run_grid(specs, tmp_path / "pool", jobs=2, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        cells = run_grid(specs, tmp_path / "dask", executor=client.get_executor(), progress=False)
    assert [_without_timings(c) for c in cells] == [_without_timings(c) for c in pool]
    assert all(grid.cell_path(tmp_path / "dask", s).exists() for s in specs)


def test_another_hosts_claim_holds_while_touched_and_expires_when_not(tmp_path):
    lock = tmp_path / "cell.claim"
    lock.write_text(json.dumps({**claims.me(), "host": "elsewhere.example"}))
    assert claims.claim(lock) is None  # fresh: its owner on that machine is at work
    day_old = time.time() - 86400
    os.utime(lock, (day_old, day_old))
    assert claims.claim(lock)  # untouched for a day: its owner is gone


def test_the_owner_touches_its_claim_while_it_works(tmp_path):
    lock = tmp_path / "cell.claim"
    token = claims.claim(lock)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with claims.heartbeat(lock, token, interval=0.05):
        time.sleep(0.3)
    assert time.time() - lock.stat().st_mtime < 5


def test_cells_that_share_a_clean_model_train_it_once(tmp_path, monkeypatch):
    """Two cells of one class run at once (two threads): one trains the clean model, the other waits for it."""
    from badsad_lib import experiments

    trained = []
    real = experiments.train_clean_model

    def counting(*args, **kwargs):
        trained.append(args[0].key)
        time.sleep(1.0)  # long enough for the other cell to find the claim
        return real(*args, **kwargs)
    monkeypatch.setattr(experiments, "train_clean_model", counting)
    specs = make_specs(["digits"], [4], [0], ["naive", "badsad"])
    with ThreadPoolExecutor(2) as pool:
        cells = run_grid(specs, tmp_path, executor=pool, progress=False)
    assert len(trained) == 1
    assert cells[0]["auc_clean_model"] == cells[1]["auc_clean_model"]
    assert not list((tmp_path / "models").glob("*.claim"))


def test_a_cell_made_by_other_code_is_computed_again_and_a_worker_with_other_code_is_refused(tmp_path):
    specs = make_specs(["digits"], [5], [0], ["naive"])
    first = run_grid(specs, tmp_path, progress=False)[0]
    path = grid.cell_path(tmp_path, specs[0])
    stale = {**first, "auc_backdoored": -1.0, "made_by": {**first["made_by"], "source": "0" * 12}}
    path.write_text(json.dumps(stale))
    again = run_grid(specs, tmp_path, progress=False)[0]  # not mixed into this code's table: recomputed
    assert again["auc_backdoored"] == first["auc_backdoored"] and again["made_by"]["source"] == grid.code()

    class OtherInstall(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            def elsewhere():
                result = fn(*args, **kwargs)
                return {**result, "made_by": {**result["made_by"], "source": "f" * 12}}
            return super().submit(elsewhere)
    with OtherInstall(1) as pool, pytest.raises(ValueError, match="same version of the course on every worker"):
        run_grid(make_specs(["digits"], [6], [0], ["naive"]), tmp_path / "mixed", executor=pool, progress=False)


def test_a_cell_file_that_is_not_a_whole_result_is_computed_again(tmp_path):
    specs = make_specs(["digits"], [7], [0], ["naive"])
    first = run_grid(specs, tmp_path, progress=False)[0]
    path = grid.cell_path(tmp_path, specs[0])
    for broken in ({k: v for k, v in first.items() if k != "asr"},        # a field missing
                   {**first, "asr": "high"},                                # a field of the wrong type
                   {**first, "extra": 1},                                   # a field no result has
                   {**first, "key": specs[0].replace(seed=1).key}):         # another cell's result
        path.write_text(json.dumps(broken))
        assert grid.finished_cell(path) is None
    again = run_grid(specs, tmp_path, progress=False)[0]
    assert again["asr"] == first["asr"] and grid.finished_cell(path) == again


def test_the_result_schema_round_trips_and_names_what_is_wrong(tmp_path):
    from badsad_lib.result import CellResult

    result = run_grid(make_specs(["digits"], [7], [0], ["naive"]), tmp_path, progress=False)[0]
    cell = CellResult.from_dict(result)
    assert cell.to_dict() == result and cell.to_row()["asr_95"] == result["asr"]["95"]
    with pytest.raises(ValueError, match="lacks auc_backdoored"):
        CellResult.from_dict({k: v for k, v in result.items() if k != "auc_backdoored"})
    with pytest.raises(ValueError, match="'threads' must be a whole number"):
        CellResult.from_dict({**result, "threads": 1.5})


def test_a_grid_is_reevaluated_from_its_kept_models_whatever_code_trained_them(tmp_path, monkeypatch):
    """--reevaluate: the same numbers from the kept models, nothing trained, each cell naming the code that trained it."""
    from badsad_lib.deepsad import DeepSAD

    specs = make_specs(["digits"], [3], [0], ["naive", "badsad"], settings=DIGITS.replace(epochs=4, ae_epochs=2))
    with monkeypatch.context() as older:
        older.setattr(grid, "code", lambda: "0" * 12)  # the models were trained by another version of the library
        first = run_grid(specs, tmp_path, progress=False)
    monkeypatch.setattr(DeepSAD, "fit", lambda *a, **k: pytest.fail("re-evaluation must train nothing"))
    again = grid.reevaluate_grid(specs, tmp_path, progress=False)
    for before, after in zip(first, again):
        assert after["made_by"]["source"] == grid.code() != "0" * 12 and after["trained_by"] == "0" * 12
        for metric in ("auc_clean_model", "auc_backdoored", "asr", "miss_rate", "asr_by_strength", "triggered_normal_pass"):
            assert after[metric] == before[metric], metric
        assert grid.finished_cell(grid.cell_path(tmp_path, specs[0]))["trained_by"] == "0" * 12
    assert "badsad" in (tmp_path / "results.csv").read_text()


def test_reevaluation_refuses_missing_and_misnamed_models_before_measuring_anything(tmp_path, monkeypatch):
    specs = make_specs(["digits"], [4], [0], ["naive", "badsad"], settings=DIGITS.replace(epochs=3, ae_epochs=1))
    run_grid(specs, tmp_path, progress=False)
    naive, badsad = (tmp_path / "models" / f"{s.model_key}.pt" for s in specs)
    measured = []
    monkeypatch.setattr(grid, "reevaluate_cell", lambda spec, out: measured.append(spec))
    badsad.write_bytes(naive.read_bytes())  # a model copied under another run's name
    with pytest.raises(ValueError, match=f"not trained for cell {specs[1].key}"):
        grid.reevaluate_grid(specs, tmp_path, progress=False)
    naive.unlink()
    with pytest.raises(ValueError, match=r"2 of 2 cells cannot be re-evaluated.*is missing"):
        grid.reevaluate_grid(specs, tmp_path, progress=False)
    (tmp_path / "models" / f"{specs[0].clean().model_key}.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be used"):
        grid.reevaluate_grid(specs[:1], tmp_path, progress=False)
    assert measured == []


def test_the_objectives_weights_are_part_of_the_run_and_only_other_weights_change_its_key():
    base = RunSpec("digits", 0)
    assert RunSpec("digits", 0, weights=(1, 1.0, 1)).key == base.key and "weights" not in base.canonical()
    halved = RunSpec("digits", 0, weights=(0.5, 1, 1))
    assert halved.key != base.key and halved.canonical()["weights"] == [0.5, 1.0, 1.0]
    assert RunSpec.from_canonical(halved.canonical()) == halved and halved.clean() == base.clean()
    assert RunSpec("digits", 0, method="naive", weights=(2, 1, 1)).key == RunSpec("digits", 0, method="naive").key
    for bad in ((1, -0.5, 1), (1, 1), (1, float("nan"), 1), "111"):
        with pytest.raises(ValueError, match="weights must be 3"):
            RunSpec("digits", 0, weights=bad)


def test_a_run_trains_with_its_specs_weights(tmp_path):
    fast = DIGITS.replace(epochs=3, ae_epochs=1)
    specs = [RunSpec("digits", 2, settings=fast), RunSpec("digits", 2, settings=fast, weights=(1, 1, 0))]
    plain, no_separation = run_grid(specs, tmp_path, progress=False)
    assert plain["weights"] == {"concentration": 1.0, "alignment": 1.0, "separation": 1.0}
    assert no_separation["weights"]["separation"] == 0.0
    assert no_separation["auc_clean_model"] == plain["auc_clean_model"]  # one clean model for both
    assert no_separation["auc_backdoored"] != plain["auc_backdoored"]
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert "weights" in rows[0].split(",") and any(",1/1/0," in r for r in rows) and any(",1/1/1," in r for r in rows)
