"""Speed benchmark: seconds per autoencoder and DeepSAD epoch on MNIST (normal class 0, batch 128,
paper settings), a quick model's time and AUC, one quick attack (clean + BadSAD model), and the
``badsad demo`` command. Prints the figures; ``--record`` also writes them to
``badsad_lib/results/speed.json``, from which the README's Speed table is rendered.

    BADSAD_DATA=../shared/data python benchmarks/bench_deepsad.py [--epochs 10] [--device cpu] [--record]

Run it on an otherwise idle machine: tiny networks slow down badly when threads outnumber free cores.
(Whole grids are timed by ``badsad tables``, which records wall and cell seconds in MANIFEST.json.)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from badsad_lib.deepsad import DeepSAD
from badsad_lib.device import get_device
from badsad_lib.experiments import run, split_for
from badsad_lib.io import write_json
from badsad_lib.metrics import auc
from badsad_lib.settings import PAPER, QUICK
from badsad_lib.spec import RunSpec
from badsad_lib.tables import RESULTS, _git, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each phase to time")
    parser.add_argument("--device", default=None)
    parser.add_argument("--record", action="store_true", help="write the figures to badsad_lib/results/speed.json")
    args = parser.parse_args()
    device = get_device(args.device)
    figures = {}
    split = split_for("mnist", 0, labeled_ratio=0.05)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(split.x_train)} training images, batch 128")
    ae = DeepSAD("mnist", PAPER, epochs=0, ae_epochs=args.epochs, device=device, progress=False)
    ae.fit(split.x_train, split.semi_targets)
    figures["autoencoder epoch, paper settings (s)"] = ae.fit_seconds_ / args.epochs
    model = DeepSAD("mnist", PAPER, epochs=args.epochs, ae_epochs=0, device=device, progress=False)
    model.fit(split.x_train, split.semi_targets, X_val=split.x_val)
    figures["DeepSAD epoch, paper settings (s)"] = model.fit_seconds_ / args.epochs
    quick = DeepSAD("mnist", QUICK, device=device, progress=False).fit(split.x_train, split.semi_targets,
                                                                        X_val=split.x_val)
    figures["one quick model, 10 + 20 epochs (s)"] = quick.fit_seconds_
    figures["its AUC"] = auc(quick.decision_function(split.x_test), split.y_test)
    start = time.perf_counter()
    attack = run(RunSpec("mnist", 0, method="badsad", settings=QUICK), device=device).metrics
    figures["one quick attack, clean + BadSAD model, MNIST class 0 (s)"] = time.perf_counter() - start
    figures["its ASR@95"] = attack["asr"]["95"]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "badsad_lib.cli", "demo", "--out", out], check=True,
                       capture_output=True)
        figures["badsad demo, whole command (s)"] = time.perf_counter() - start
    for name, value in figures.items():
        print(f"{name:60s} {value:.3f}")
    if args.record:
        write_json(RESULTS / "speed.json", {"figures": {k: round(v, 3) for k, v in figures.items()},
                                            "command": "python benchmarks/bench_deepsad.py --record",
                                            "machine": machine(), "threads": torch.get_num_threads(),
                                            "commit": _git("rev-parse", "HEAD") or "unknown",
                                            "made": time.strftime("%Y-%m-%d")})
        print(f"wrote {Path(RESULTS / 'speed.json')}")


if __name__ == "__main__":
    main()
