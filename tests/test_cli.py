import json

from badsad_lib.cli import main


def test_train_writes_metrics(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--normal-class", "1", "--quick", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("auc", "dataset", "normal_class", "seconds", "device", "labeled_ratio", "settings"):
        assert key in metrics
    assert metrics["auc"] > 0.9 and metrics["normal_class"] == 1
    assert "AUC" in capsys.readouterr().out


def test_cli_errors_name_the_bad_value(tmp_path, capsys):
    assert main(["train", "--dataset", "svhn", "--out", str(tmp_path)]) == 2
    assert "svhn" in capsys.readouterr().err
    assert main(["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "BADSAD_DATA" in capsys.readouterr().err
