"""Speed benchmark: seconds per autoencoder and DeepSAD epoch on MNIST (normal class 0, batch 128,
paper settings), a quick model's time and AUC, one quick attack (clean + BadSAD model), and the
``badsad demo`` command. Prints the figures; ``--record`` also writes them to
``badsad_lib/results/speed.json``, from which the README's Speed table is rendered.

    BADSAD_DATA=../shared/data python benchmarks/bench_deepsad.py [--epochs 10] [--device cpu] [--record]

``--against REV`` instead times this working tree and commit REV side by side in one run: each
round runs every timing (``epoch_timer.py``: an autoencoder, a DeepSAD and a BadSAD epoch, a quick
model with its AUC, and with ``--kinds`` a quick attack) once in each tree, in a fresh process,
alternating which tree goes first; it prints the medians and the speed-up REV / this tree.
``--record`` then writes them to ``badsad_lib/results/speed_against.json`` (the README's table).

    BADSAD_DATA=../shared/data python benchmarks/bench_deepsad.py --against c376657 --rounds 3 [--threads 1]

``--jobs 2`` runs each timing in two processes of the same tree at once, the way ``badsad tables --jobs 2``
keeps both cores busy with one-thread cells (the figure is their mean), so the ratio is the grid's.

Run it on an otherwise idle machine: tiny networks slow down badly when threads outnumber free cores.
(Whole grids are timed by ``badsad tables``, which records wall and cell seconds in MANIFEST.json.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
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
from badsad_lib.provenance import _git, machine
from badsad_lib.tables import RESULTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each phase to time")
    parser.add_argument("--device", default=None)
    parser.add_argument("--record", action="store_true", help="write the figures to badsad_lib/results/speed.json "
                        "(with --against: speed_against.json)")
    parser.add_argument("--against", metavar="REV", help="time this tree and git commit REV side by side")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: alternating rounds (medians)")
    parser.add_argument("--threads", type=int, default=1, help="with --against: torch threads per timing")
    parser.add_argument("--jobs", type=int, default=1, help="with --against: run each timing in this many "
                        "processes of the same tree at once (as `badsad tables --jobs` runs cells); their mean")
    parser.add_argument("--kinds", default="autoencoder,deepsad,badsad,quick_model",
                        help="with --against: comma-separated timings (epoch_timer.py's KINDs)")
    args = parser.parse_args()
    if args.jobs < 1 or args.threads < 1 or args.rounds < 1:
        parser.error(f"--jobs, --threads and --rounds take a whole number of at least 1, not "
                     f"{min((args.jobs, args.threads, args.rounds))}")
    if args.against:
        return against(args)
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


TIMER = Path(__file__).resolve().parent / "epoch_timer.py"
TREE = TIMER.parent.parent


def timing(tree: Path, kind: str, args) -> dict:
    """``epoch_timer.py`` with ``tree``'s badsad_lib first on the path (checked: it names its file), in
    ``args.jobs`` processes at once: the mean of their seconds (and of any AUC or ASR)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(TIMER), kind, "--threads", str(args.threads), "--epochs", str(args.epochs)]
    if args.device:
        command += ["--device", args.device]
    running = [subprocess.Popen(command, env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(args.jobs)]
    results = []
    try:
        for process in running:
            out, err = process.communicate()
            if process.returncode:
                raise RuntimeError(f"the timing {kind} in {tree} failed ({process.returncode}):\n{err}")
            result = json.loads(out.strip().splitlines()[-1])
            if not Path(result["library"]).resolve().is_relative_to(tree.resolve()):
                raise RuntimeError(f"the timing meant for {tree} imported {result['library']}")
            results.append(result)
    finally:
        for process in running:  # a failed timing stops its siblings
            if process.poll() is None:
                process.kill()
                process.wait()
    return {**results[0], **{key: statistics.mean(r[key] for r in results)
                             for key in ("seconds", "auc", "asr_95") if key in results[0]}}


def against(args) -> None:
    """Time this tree and ``args.against`` side by side (alternating rounds); print medians and ratios."""
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    rev = subprocess.run(["git", "rev-parse", args.against], cwd=TREE, check=True, capture_output=True,
                         text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "archive", rev], cwd=TREE, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        trees = {"this tree": TREE, rev[:10]: old}
        seen = {name: {k: [] for k in kinds} for name in trees}
        extras = {name: {k: {} for k in kinds} for name in trees}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for kind in kinds:
                for name in order:
                    result = timing(trees[name], kind, args)
                    seen[name][kind].append(result["seconds"])
                    for key in ("auc", "asr_95"):
                        if key in result:
                            extras[name][kind].setdefault(key, []).append(result[key])
                    print(f"round {r + 1}: {kind:13s} {name:10s} {result['seconds']:8.3f} s", flush=True)
    rows = []
    print(f"\n{'timing':14s} {'this tree (s)':>14s} {rev[:10] + ' (s)':>16s} {'speed-up':>9s}")
    for kind in kinds:
        new, base = (statistics.median(seen[n][kind]) for n in trees)
        this, that = (seen[n][kind] for n in trees)
        row = {"timing": kind, "this_tree_s": round(new, 3), "against_s": round(base, 3),
               "speedup": round(base / new, 2), "rounds": args.rounds,
               "round_speedups": [round(b / a, 2) for a, b in zip(this, that)]}  # each round's back-to-back pair
        for key, values in extras["this tree"][kind].items():
            row[f"this_tree_{key}"] = round(statistics.median(values), 4)
            row[f"against_{key}"] = round(statistics.median(extras[rev[:10]][kind][key]), 4)
        rows.append(row)
        print(f"{kind:14s} {new:14.3f} {base:16.3f} {base / new:8.2f}x")
    if args.record:
        command = " ".join(["python benchmarks/bench_deepsad.py", *sys.argv[1:]])
        write_json(RESULTS / "speed_against.json",
                   {"against": rev, "commit": _git("rev-parse", "HEAD") or "unknown",
                    "uncommitted_changes": bool(_git("status", "--porcelain", "--", ".", ":(exclude)results")),
                    "rows": rows, "command": command, "threads": args.threads, "jobs": args.jobs,
                    "epochs_timed": args.epochs, "machine": machine(), "made": time.strftime("%Y-%m-%d")})
        print(f"wrote {RESULTS / 'speed_against.json'}")


if __name__ == "__main__":
    main()
