"""The command line: results on good input; one sentence and exit 2, before any training, on bad input."""
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from badsad_lib.cli import main


def test_train_writes_metrics(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--normal-class", "1", "--quick", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("auc", "dataset", "normal_class", "seconds", "device", "labeled_ratio", "spec"):
        assert key in metrics
    assert metrics["auc"] > 0.9 and metrics["normal_class"] == 1
    assert "AUC" in capsys.readouterr().out


def _fails_fast(argv, capsys, *fragments):
    start = time.perf_counter()
    assert main(argv) == 2
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert seconds < 5, f"{argv} took {seconds:.1f} s to fail"
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_cli_errors_name_the_bad_value(tmp_path, capsys):
    _fails_fast(["train", "--dataset", "svhn", "--out", str(tmp_path)], capsys, "svhn")
    _fails_fast(["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path)], capsys,
                "BADSAD_DATA")
    _fails_fast(["attack", "--poison-ratio", "-0.1", "--out", str(tmp_path)], capsys, "poison ratio", "-0.1")
    _fails_fast(["attack", "--labeled-ratio", "1.5", "--out", str(tmp_path)], capsys, "labeled ratio")
    _fails_fast(["train", "--normal-class", "12", "--out", str(tmp_path)], capsys, "normal class=12")
    _fails_fast(["train", "--seed", "-3", "--out", str(tmp_path)], capsys, "seed=-3")
    _fails_fast(["train", "--epochs", "-1", "--out", str(tmp_path)], capsys, "epochs=-1")
    _fails_fast(["train", "--device", "cuda:7", "--out", str(tmp_path)], capsys, "cuda:7")


def test_a_bad_output_folder_fails_before_training(tmp_path, capsys):
    existing = tmp_path / "results.txt"
    existing.write_text("not a folder")
    _fails_fast(["attack", "--out", str(existing)], capsys, "is an existing file")
    _fails_fast(["attack", "--out", str(existing / "sub")], capsys, "is a file")
    _fails_fast(["reproduce", "--datasets", "digits", "--out", str(existing)], capsys, "is an existing file")


def test_a_bad_output_folder_is_refused_before_torch_is_imported(tmp_path):
    """What makes the refusal fast for a user: the command does not import torch or scikit-learn first."""
    existing = tmp_path / "results.txt"
    existing.write_text("not a folder")
    for argv in (["attack", "--dataset", "digits", "--out", str(existing)],
                 ["reproduce", "--datasets", "digits", "--out", str(existing)],
                 ["tables", "mnist_ablation", "--work", str(existing)]):
        code = f"import sys; from badsad_lib.cli import main; rc = main({argv!r}); " \
               "print(rc, 'torch' in sys.modules, 'sklearn' in sys.modules)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.stdout.split() == ["2", "False", "False"], (argv, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "is an existing file" in done.stderr, done.stderr


def test_a_refused_command_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    _fails_fast(["attack", "--dataset", "digits", "--strength", "2", "--out", str(out)], capsys, "strength 2.0")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_training(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        _fails_fast(["train", "--out", str(locked)], capsys, "not writable")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["train", "--dataset", "digits", "--epochs", "2", "--ae-epochs", "1", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    for name in ("metrics.json", "model.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_bad_grid_arguments_are_refused(tmp_path, capsys):
    _fails_fast(["reproduce", "--datasets", "digits", "--strength", "1.5", "--out", str(tmp_path)], capsys, "1.5")
    _fails_fast(["tables", "nope", "--work", str(tmp_path)], capsys, "unknown table(s) nope")
    with pytest.raises(SystemExit):
        main(["reproduce", "--datasets", "digits", "--jobs", "0", "--out", str(tmp_path)])


def _no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_sentence_and_no_half_result(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing (simulated at the flush to disk): exit 2, one line naming the file, and the run
    folder holds neither a metrics.json without its model nor a temporary file."""
    from badsad_lib import io

    monkeypatch.setattr(io.os, "fsync", _no_space)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--ae-epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "could not write" in err and "model.pt" in err and "No space left" in err, err
    assert not out.exists()  # made by the command and left empty: removed
    out.mkdir()  # a folder that was there before is kept, and holds nothing half-written
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--ae-epochs", "1", "--out", str(out)]) == 2
    assert list(out.iterdir()) == []


def test_torch_save_on_a_full_disk_is_an_output_error(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError; the checkpoint is serialised in memory first, so a
    full disk is the write's OSError, turned into an OutputError naming the file."""
    import torch

    from badsad_lib import io
    from badsad_lib.errors import OutputError

    monkeypatch.setattr(io.os, "fsync", _no_space)
    with pytest.raises(OutputError, match=r"could not write .*ckpt\.pt: No space left on device; free some space"):
        io.save_torch(tmp_path / "ckpt.pt", {"w": torch.zeros(3)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, fragment", [(["--device", "cuda:7"], "cuda"),
                                             (["--dataset", "mnist", "--data-root", "EMPTY"], "BADSAD_DATA")])
def test_a_refused_device_or_dataset_leaves_no_folder_behind(tmp_path, capsys, flags, fragment):
    (tmp_path / "empty").mkdir()
    flags = [str(tmp_path / "empty") if f == "EMPTY" else f for f in flags]
    out = tmp_path / "new" / "run"
    _fails_fast(["train", *flags, "--out", str(out)], capsys, fragment)
    assert not (tmp_path / "new").exists()


def test_train_runs_on_one_thread_like_a_grid_cell(tmp_path, capsys):
    """The same run from `badsad train` (on a 2-thread process) and from the grid gives the same threshold."""
    import torch

    from badsad_lib.grid import run_grid
    from badsad_lib.settings import DIGITS
    from badsad_lib.spec import RunSpec

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "--dataset", "digits", "--epochs", "3", "--ae-epochs", "2", "--out",
                     str(tmp_path / "train")]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    cli = json.loads((tmp_path / "train" / "metrics.json").read_text())
    spec = RunSpec("digits", 0, method="clean", labeled_ratio=0.05, settings=DIGITS.replace(epochs=3, ae_epochs=2))
    cell = run_grid([spec], tmp_path / "grid", progress=False)[0]
    assert cli["threshold"] == cell["threshold"] and cli["auc"] == cell["auc"]


def test_prepare_refuses_a_bad_cache_before_training(tmp_path, capsys, monkeypatch):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("x")
    monkeypatch.setenv("BADSAD_CACHE", str(not_a_folder))
    _fails_fast(["prepare", "--datasets", "digits", "--quick"], capsys, "model cache", str(not_a_folder))


def test_tables_refuses_a_readme_without_table_blocks(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("just notes\n")
    _fails_fast(["tables", "--readme", str(notes)], capsys, "notes.txt", "no table block")
    _fails_fast(["tables", "--readme", str(tmp_path / "missing.md")], capsys, "missing.md")
    assert notes.read_text() == "just notes\n"


def test_version(capsys):
    from badsad_lib import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"badsad {__version__}"


def test_reproduce_on_a_dask_scheduler(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    argv = ["reproduce", "--datasets", "digits", "--classes", "2", "--methods", "naive", "--quick", "--out"]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) \
            as cluster:
        assert main([*argv, str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]) == 0
    assert "the Dask scheduler at tcp://" in capsys.readouterr().out
    cell = json.loads(next((tmp_path / "dask" / "cells").glob("*.json")).read_text())
    assert cell["normal_class"] == 2 and 0.5 < cell["auc_backdoored"] <= 1  # the same numbers as a local pool: test_grid


def test_a_scheduler_that_does_not_answer_is_one_sentence(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from badsad_lib import cli

    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT", 2.0)
    assert main(["reproduce", "--datasets", "digits", "--classes", "2", "--methods", "naive", "--quick",
                 "--out", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Dask scheduler answered at --scheduler 'tcp://127.0.0.1:9' within 2 s" in err, err


def test_a_log_file_gets_no_progress_bars(tmp_path):
    """Into a file (not a terminal), a command writes its lines, not every redraw of a progress bar."""
    done = subprocess.run([sys.executable, "-m", "badsad_lib.cli", "train", "--dataset", "digits", "--epochs", "3",
                           "--ae-epochs", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "it/s" not in done.stderr, done.stderr[:300]
    forced = subprocess.run([sys.executable, "-m", "badsad_lib.cli", "train", "--dataset", "digits", "--epochs", "3",
                             "--ae-epochs", "2", "--progress", "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert "DeepSAD" in forced.stderr and "it/s" in forced.stderr  # asked for: shown


def test_quiet_prints_results_only_and_verbose_shows_progress(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--epochs", "2", "--ae-epochs", "1", "--out", str(tmp_path)]
    assert main([*argv, "-q"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("DeepSAD on digits") and len(out.splitlines()) == 1 and "it/s" not in err
    assert main([*argv, "-v"]) == 0
    out, err = capsys.readouterr()
    assert "run: deepsad on digits" in out and "it/s" in err
    with pytest.raises(SystemExit):
        main([*argv, "-q", "-v"])


def test_grade_scores_an_empty_and_a_filled_in_lesson(monkeypatch, capsys):
    """Runs lesson 01 as a learner left it (nothing solved) and as solved, on the embedded digits."""
    monkeypatch.delenv("BADSAD_DATA", raising=False)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert main(["grade", "--json", "-q", os.path.join(root, "lessons", "01_deepsad_basics.ipynb"),
                 os.path.join(root, "solutions", "01_deepsad_basics.ipynb")]) == 0
    empty, solved = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert (empty["done"], solved["done"], empty["exercises"]) == (0, 4, 4) and not solved["errors"]
    assert set(empty["verdicts"].values()) == {"not started"} and set(solved["verdicts"].values()) == {"done"}


def test_grade_refuses_what_is_not_a_lesson(tmp_path, capsys):
    (tmp_path / "x.ipynb").write_text("not json")
    (tmp_path / "plain.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                      "nbformat_minor": 5}))
    for name, says in (("missing.ipynb", "is not a notebook file"), ("x.ipynb", "is not a readable notebook"),
                       ("plain.ipynb", "has no progress cell")):
        assert main(["grade", str(tmp_path / name)]) == 2
        assert says in capsys.readouterr().err


def test_reevaluating_a_table_without_its_models_names_what_is_missing(tmp_path, capsys):
    _fails_fast(["tables", "mnist_ablation", "--reevaluate", "--work", str(tmp_path / "work")], capsys,
                "40 of 40 cells cannot be re-evaluated", "mnist_class0_seed0_clean_", "is missing")
    assert not list((tmp_path / "work").rglob("*.json"))


def test_attack_refuses_negative_weights_before_training(tmp_path, capsys):
    _fails_fast(["attack", "--dataset", "digits", "--normal-class", "0", "--weights", "1", "-1", "1",
                 "--out", str(tmp_path / "out")], capsys, "weights must be 3 finite numbers >= 0", "-1.0")
    assert not (tmp_path / "out").exists()
