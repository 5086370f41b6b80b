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
