"""Speed benchmark: seconds per autoencoder epoch and per DeepSAD epoch on MNIST (normal class 0,
batch 128, paper learning rates), the AUC reached, and the time of one quick grid cell.

    BADSAD_DATA=../shared/data python benchmarks/bench_deepsad.py [--epochs 10] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import torch

from badsad_lib.deepsad import DeepSAD
from badsad_lib.device import get_device
from badsad_lib.experiments import run_attack, split_for
from badsad_lib.metrics import auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each phase to time")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-cell", action="store_true", help="skip timing a grid cell")
    args = parser.parse_args()
    device = get_device(args.device)
    split = split_for("mnist", 0, labeled_ratio=0.05)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(split.x_train)} training images, batch 128")
    ae = DeepSAD("mnist", epochs=0, ae_epochs=args.epochs, device=device, progress=False)
    ae.fit(split.x_train, split.semi_targets)
    per_ae = ae.fit_seconds_ / args.epochs
    model = DeepSAD("mnist", epochs=args.epochs, ae_epochs=0, lr=1e-4, device=device, progress=False)
    start = time.perf_counter()
    model.fit(split.x_train, split.semi_targets, X_val=split.x_val)
    per_sad = (time.perf_counter() - start) / args.epochs
    quick = DeepSAD("mnist", epochs=20, ae_epochs=10, lr=1e-3, ae_lr=1e-3, milestones=(15,), device=device,
                    progress=False).fit(split.x_train, split.semi_targets, X_val=split.x_val)
    print(f"autoencoder epoch: {per_ae:.3f} s   (reference implementation on 2 CPU cores: about 2.1 s)")
    print(f"DeepSAD epoch:     {per_sad:.3f} s   (reference implementation on 2 CPU cores: about 0.6 s)")
    print(f"quick model (10 AE + 20 DeepSAD epochs): {quick.fit_seconds_:.1f} s, "
          f"AUC {auc(quick.decision_function(split.x_test), split.y_test):.4f}")
    if not args.no_cell:
        start = time.perf_counter()
        _, _, _, _, m = run_attack("mnist", 0, "badsad", quick=True, device=device)
        print(f"one quick grid cell (clean + BadSAD model, MNIST class 0): {time.perf_counter() - start:.1f} s, "
              f"ASR@95 {m['asr']['95']:.3f}, AUC {m['auc_clean_model']:.4f} -> {m['auc_backdoored']:.4f}")


if __name__ == "__main__":
    main()
