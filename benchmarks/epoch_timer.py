"""One timing, printed as one JSON line; ``bench_deepsad.py --against`` runs it in a fresh process
for each code tree (its ``PYTHONPATH`` names the tree), so both trees are timed by the same code.

    python benchmarks/epoch_timer.py KIND [--epochs 3] [--threads 1] [--device cpu]

KIND: ``autoencoder``, ``deepsad``, ``badsad`` (seconds per epoch at the paper's settings on MNIST
normal class 0, batch 128: the median over ``--epochs`` epochs after one warm-up epoch),
``quick_model`` (a whole quick DeepSAD, seconds and test AUC) or ``quick_attack`` (clean + BadSAD
model at quick settings, seconds and ASR@95). Uses only names both the old and the new code have.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

KINDS = ("autoencoder", "deepsad", "badsad", "quick_model", "quick_attack")


def epoch_seconds(fit, epochs: int) -> float:
    """Median seconds per epoch of ``fit(callback)``, which trains ``epochs`` + 1 epochs; the first is warm-up."""
    stamps = []
    fit(lambda phase, epoch, loss: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    if len(gaps) != epochs:
        raise RuntimeError(f"expected {epochs + 1} epoch callbacks, got {len(stamps)}")
    return statistics.median(gaps)


def measure(kind: str, epochs: int, device: str | None) -> dict:
    import torch

    import badsad_lib
    from badsad_lib.attack import AttackWeights, BadSADObjective
    from badsad_lib.deepsad import DeepSAD
    from badsad_lib.experiments import run, split_for
    try:
        from badsad_lib.attack import poisoned_training_set
    except ImportError:  # trees before the registry commit kept it in experiments
        from badsad_lib.experiments import poisoned_training_set
    from badsad_lib.metrics import auc
    from badsad_lib.settings import PAPER, QUICK
    from badsad_lib.spec import RunSpec
    from badsad_lib.triggers import trigger_for

    out = {"kind": kind, "library": badsad_lib.__file__, "threads": torch.get_num_threads()}
    split = split_for("mnist", 0, labeled_ratio=0.05)
    if kind == "autoencoder":
        model = DeepSAD("mnist", PAPER, epochs=0, ae_epochs=epochs + 1, device=device, progress=False)
        out["seconds"] = epoch_seconds(lambda cb: model.fit(split.x_train, split.semi_targets, callback=cb), epochs)
    elif kind == "deepsad":
        model = DeepSAD("mnist", PAPER, epochs=epochs + 1, ae_epochs=0, device=device, progress=False)
        out["seconds"] = epoch_seconds(lambda cb: model.fit(split.x_train, split.semi_targets, callback=cb), epochs)
    elif kind == "badsad":
        spec = RunSpec("mnist", 0, method="badsad", settings=PAPER.replace(epochs=epochs + 1, ae_epochs=0))
        trigger = trigger_for(split.x_train, spec.trigger)
        x, semi, poisoned = poisoned_training_set(spec, split, trigger)
        mask = torch.zeros(len(x), dtype=torch.bool)
        mask[torch.from_numpy(poisoned)] = True
        model = DeepSAD("mnist", spec.settings, device=device, progress=False)
        clean = (split.train_labels == 0) & (split.semi_targets == 0) & ~mask[:len(split.x_train)]
        objective = BadSADObjective("badsad", trigger, spec.strength, mask.to(model.device),
                                    split.x_train[clean].to(model.device), AttackWeights(), seed=0)
        out["seconds"] = epoch_seconds(lambda cb: model.fit(x, semi, objective=objective, callback=cb), epochs)
    elif kind == "quick_model":
        start = time.perf_counter()
        model = DeepSAD("mnist", QUICK, device=device, progress=False).fit(split.x_train, split.semi_targets,
                                                                            X_val=split.x_val)
        out["seconds"] = time.perf_counter() - start
        out["auc"] = auc(model.decision_function(split.x_test), split.y_test.numpy())
    elif kind == "quick_attack":
        start = time.perf_counter()
        metrics = run(RunSpec("mnist", 0, method="badsad", settings=QUICK), device=device).metrics
        out["seconds"] = time.perf_counter() - start
        out["asr_95"], out["auc"] = metrics["asr"]["95"], metrics["auc_backdoored"]
    else:
        raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (grid cells use 1)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.kind, args.epochs, args.device)))


if __name__ == "__main__":
    main()
