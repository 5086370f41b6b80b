"""Speed benchmark: seconds per autoencoder epoch and per DeepSAD epoch on MNIST (normal class 0,
batch 128, paper learning rates), the AUC reached, the time of one quick grid cell and, with
``--grid DIR``, the wall time of the whole quick MNIST grid (10 classes x 4 methods, one seed).

    BADSAD_DATA=../shared/data python benchmarks/bench_deepsad.py [--epochs 10] [--device cpu]
    BADSAD_DATA=../shared/data python benchmarks/bench_deepsad.py --no-epochs --no-cell --grid /tmp/grid --jobs 2 [--seed 1]

The grid resumes like ``badsad reproduce``: cells already in DIR are not rerun, and the figures
printed separate this run's wall time from the compute time recorded in every cell file.
"""
from __future__ import annotations

import argparse
import time

import torch

from badsad_lib.deepsad import DeepSAD
from badsad_lib.device import get_device
from badsad_lib.experiments import run_attack, split_for
from badsad_lib.grid import make_cells, run_grid
from badsad_lib.metrics import auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each phase to time")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-epochs", action="store_true", help="skip the per-epoch timings")
    parser.add_argument("--no-cell", action="store_true", help="skip timing a grid cell")
    parser.add_argument("--grid", metavar="DIR", help="run (or resume) the quick MNIST grid in DIR and time it")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for --grid")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --grid cells")
    args = parser.parse_args()
    device = get_device(args.device)
    if not args.no_epochs:
        time_epochs(args.epochs, device)
    if not args.no_cell:
        start = time.perf_counter()
        _, _, _, _, m = run_attack("mnist", 0, "badsad", quick=True, device=device)
        print(f"one quick grid cell (clean + BadSAD model, MNIST class 0): {time.perf_counter() - start:.1f} s, "
              f"ASR@95 {m['asr']['95']:.3f}, AUC {m['auc_clean_model']:.4f} -> {m['auc_backdoored']:.4f}")
    if args.grid:
        time_grid(args.grid, args.jobs, args.seed)


def time_epochs(epochs: int, device) -> None:
    """Seconds per AE and DeepSAD epoch at paper settings, and a quick model's time and AUC."""
    split = split_for("mnist", 0, labeled_ratio=0.05)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(split.x_train)} training images, batch 128")
    ae = DeepSAD("mnist", epochs=0, ae_epochs=epochs, device=device, progress=False)
    ae.fit(split.x_train, split.semi_targets)
    per_ae = ae.fit_seconds_ / epochs
    model = DeepSAD("mnist", epochs=epochs, ae_epochs=0, lr=1e-4, device=device, progress=False)
    start = time.perf_counter()
    model.fit(split.x_train, split.semi_targets, X_val=split.x_val)
    per_sad = (time.perf_counter() - start) / epochs
    quick = DeepSAD("mnist", epochs=20, ae_epochs=10, lr=1e-3, ae_lr=1e-3, milestones=(15,), device=device,
                    progress=False).fit(split.x_train, split.semi_targets, X_val=split.x_val)
    print(f"autoencoder epoch: {per_ae:.3f} s   (reference implementation on 2 CPU cores: about 2.1 s)")
    print(f"DeepSAD epoch:     {per_sad:.3f} s   (reference implementation on 2 CPU cores: about 0.6 s)")
    print(f"quick model (10 AE + 20 DeepSAD epochs): {quick.fit_seconds_:.1f} s, "
          f"AUC {auc(quick.decision_function(split.x_test), split.y_test):.4f}")


def time_grid(out: str, jobs: int, seed: int = 0) -> None:
    """Run or resume the 40-cell quick MNIST grid; print wall time and per-cell compute times."""
    cells = make_cells(["mnist"], range(10), [seed], ["naive", "alignment", "concentration", "badsad"])
    start = time.perf_counter()
    results = run_grid(cells, out, jobs=jobs)
    wall = time.perf_counter() - start
    seconds = sorted(r["seconds"] for r in results)
    print(f"quick MNIST grid, seed {seed}, {len(cells)} cells, {jobs} job(s): this run {wall / 60:.1f} min wall; "
          f"recorded cell times {sum(seconds) / 60:.1f} min in all, median {seconds[len(seconds) // 2]:.0f} s, "
          f"max {seconds[-1]:.0f} s (cells include training their clean model when it is not cached)")


if __name__ == "__main__":
    main()
