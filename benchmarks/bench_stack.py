"""Stacking benchmark: seconds per model-epoch when K DeepSAD models (MNIST normal class 0, paper settings,
batch 128, seeds 0..K-1) train at once (``badsad_lib.stacked.fit_stacked``), for K = 1, 2, 4, ...; K = 1
is the single-model fit. With ``--auc K`` it also trains K quick models stacked and the same K alone and
prints the paired differences of their test AUC (equivalence, not identity, is expected for K > 1).

    BADSAD_DATA=../shared/data python benchmarks/bench_stack.py [--ks 1 2 4 8] [--epochs 2] [--device cuda]
                                                                [--auc 4] [--threads 1]

On this 2-core CPU a stack of 2 or 4 gave about 1.1x the models per second of one model at a time (one
thread; the phase-grid blocks' per-operator cost is shared by the stack); on a GPU it is the way to fill the
device. Prints one line per K and, with --auc, the pairs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from badsad_lib.deepsad import DeepSAD
from badsad_lib.device import get_device
from badsad_lib.experiments import split_for
from badsad_lib.metrics import auc
from badsad_lib.settings import PAPER, QUICK
from badsad_lib.stacked import fit_stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each phase to time")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--auc", type=int, default=0, metavar="K", help="also compare K quick models, stacked and alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    split = split_for("mnist", 0, labeled_ratio=0.05)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(split.x_train)} training images, batch 128, {args.epochs} + {args.epochs} epochs per model")
    settings = PAPER.replace(epochs=args.epochs, ae_epochs=args.epochs)
    # a first fit in a process pays one-time costs (allocator growth, oneDNN's kernel choices, cached tap maps):
    # a throwaway one, so that whichever K comes first is not charged them
    fit_stacked([DeepSAD("mnist", PAPER.replace(epochs=1, ae_epochs=1), device=device, progress=False)],
                [split.x_train[:1024]], [split.semi_targets[:1024]])
    base = None
    for k in args.ks:
        models = [DeepSAD("mnist", settings, seed=s, device=device, progress=False) for s in range(k)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fit_stacked(models, [split.x_train] * k, [split.semi_targets] * k)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per = (time.perf_counter() - start) / (k * 2 * args.epochs)
        base = base or (per if k == 1 else None)
        ratio = f"  {base / per:5.2f}x the models per second of K = 1" if base else ""
        print(f"K = {k:3d}: {per:8.4f} s per model-epoch{ratio}", flush=True)
    if args.auc:
        k = args.auc
        stacked = fit_stacked([DeepSAD("mnist", QUICK, seed=s, device=device, progress=False) for s in range(k)],
                              [split.x_train] * k, [split.semi_targets] * k, X_vals=[split.x_val] * k)
        alone = [DeepSAD("mnist", QUICK, seed=s, device=device, progress=False).fit(
            split.x_train, split.semi_targets, X_val=split.x_val) for s in range(k)]
        y = split.y_test.numpy()
        pairs = [(auc(a.decision_function(split.x_test), y), auc(b.decision_function(split.x_test), y))
                 for a, b in zip(alone, stacked)]
        for s, (a, b) in enumerate(pairs):
            print(f"seed {s}: quick-model AUC alone {a:.4f}, stacked {b:.4f}, difference {b - a:+.4f}")
        alone_auc = [a for a, _ in pairs]
        print(f"mean |difference| {statistics.mean(abs(b - a) for a, b in pairs):.4f}; seed-to-seed spread of the "
              f"single fits (sd) {statistics.stdev(alone_auc) if k > 1 else float('nan'):.4f}")


if __name__ == "__main__":
    main()
