"""The tables shipped in ``badsad_lib/results``: which grid makes each, and making them.

Every shipped table is made by one command, ``badsad tables NAME``, which runs (or resumes) the
cells of NAME's grid and records in ``results/MANIFEST.json`` the command, the commit, the machine
and the seconds. (A grid's rows and summaries are ``summaries``; the README's tables, ``readme``;
machine and commit, ``provenance``.)
"""
from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .io import write_json, write_text
from .provenance import _git, commit, machine
from .spec import CLEAN, RunSpec
from .summaries import csv_text, defense_rows, rows_of

RESULTS = Path(__file__).parent / "results"
MANIFEST = RESULTS / "MANIFEST.json"
# ------------------------------------------------------------------ the shipped tables
def _mnist(method, classes=range(10), seeds=(0,), **kw):
    from .grid import make_specs
    return make_specs(["mnist"], list(classes), list(seeds), [method], **kw)


def _specs(*groups) -> list[RunSpec]:
    return [s for g in groups for s in g]


@dataclass(frozen=True)
class ShippedTable:
    name: str
    description: str
    specs: Callable[[], list[RunSpec]]
    kind: str = "attack"  # "attack", "clean" or "defense": which rows the CSV holds
    not_yet_made: str = ""  # why the table is defined but not shipped at this commit (empty: it ships)


ABLATION = ("naive", "alignment", "concentration", "badsad")
DEFENSE_CONTROLS = ("spectral", "clustering", "strip", "reverse_trigger", "reverse_trigger_distinct")  # those that flag


def _all_defenses() -> tuple[str, ...]:
    from .defenses import DEFENSES
    return DEFENSES


def _ablation(dataset):
    from .grid import make_specs
    return lambda: make_specs([dataset], range(10), [0], ABLATION)


def _table1():
    from .grid import make_specs
    from .settings import PAPER
    return make_specs(["mnist", "fmnist"], range(10), [0], [CLEAN], labeled_ratio=0.05, settings=PAPER)


def _paper_attack(classes=range(3)):
    from .settings import PAPER
    return _specs(_mnist("naive", classes, settings=PAPER), _mnist("badsad", classes, settings=PAPER))


def _controls(seeds=(0,)):
    return _specs(_mnist("badsad", seeds=seeds, poison_ratios=(0.1, 0.0)),
                  *(_mnist(m, seeds=seeds) for m in ("outlier_exposure", "data_only", "label_preserving")))


_FOR_A_GPU = ("meant for a lent GPU (scripts/make_tables_on_gpu.sh); on 2 CPU cores it is about {} of grid, "
              "from the wall time of {}")


# (concentration, alignment, separation): the default, then each term halved or doubled, and alignment alone off
WEIGHT_SWEEP = ((1.0, 1.0, 1.0), (0.5, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 0.5, 1.0), (1.0, 1.0, 0.5),
                (1.0, 1.0, 2.0))


def _weight_sweep():
    return _specs(*(_mnist("badsad", (1, 7, 8), weights=w) for w in WEIGHT_SWEEP))


def _tradeoff(dataset, strengths, ratios):
    from .grid import make_specs
    return lambda: make_specs([dataset], [0], [0], ["badsad"], strengths=strengths, poison_ratios=ratios)


def _defense_grid():
    d = _all_defenses()
    return _specs(_mnist("naive", range(3), range(3), defenses=d), _mnist("badsad", range(3), range(3), defenses=d),
                  _mnist("badsad", range(3), range(3), triggers=("blend",), defenses=d))


TABLES = {t.name: t for t in [
    ShippedTable("digits_ablation", "digits, all ten normal classes, seed 0: the four ablation methods",
                 _ablation("digits")),
    ShippedTable("digits_tradeoff", "digits, normal class 0: BadSAD at strengths x poison ratios",
                 _tradeoff("digits", (0.25, 0.5, 0.75, 1.0), (0.01, 0.05, 0.1, 0.2))),
    ShippedTable("mnist_ablation", "MNIST, all ten normal classes, seed 0: the four ablation methods",
                 _ablation("mnist")),
    ShippedTable("mnist_controls", "MNIST, all ten normal classes, seed 0: BadSAD at rho 0.1 and 0, and the "
                 "outlier-exposure, data-only and label-preserving controls",
                 _controls),
    ShippedTable("mnist_unconfounded", "MNIST, all ten normal classes, seed 0: the controls that each remove one "
                 "confound, data_only_contrast (data_only plus the same views untriggered, labeled anomalous) and "
                 "label_preserving_pull (label_preserving without its separation term)",
                 lambda: _specs(*(_mnist(m) for m in ("data_only_contrast", "label_preserving_pull")))),
    ShippedTable("mnist_poison_curve", "MNIST, all ten normal classes, seed 0: BadSAD at rho 0, 0.01, 0.05, 0.1 "
                 "(test-time strength curve in the asr_mu* columns)",
                 lambda: _mnist("badsad", poison_ratios=(0.0, 0.01, 0.05, 0.1))),
    ShippedTable("mnist_seeds", "MNIST, all ten normal classes, seeds 0-2: the headline rows (naive, BadSAD)",
                 lambda: _specs(_mnist("naive", seeds=range(3)), _mnist("badsad", seeds=range(3)))),
    ShippedTable("mnist_tradeoff", "MNIST, normal class 0: BadSAD at strengths x poison ratios",
                 _tradeoff("mnist", (0.25, 0.5, 1.0), (0.01, 0.05, 0.1))),
    ShippedTable("mnist_defenses", "MNIST, normal classes 0-2 x seeds 0-2: every defense against naive "
                 "poisoning, BadSAD with the corners trigger and BadSAD with the (off-corner) blend trigger",
                 _defense_grid, kind="defense"),
    ShippedTable("mnist_defense_controls", "MNIST, normal classes 0-2 x seeds 0-2: the defenses that flag (training-"
                 "set inspection, STRIP, reverse engineering) on clean models and on outlier-exposure models (the "
                 "views and the separation term, never a trigger): what they flag where there is no backdoor to find",
                 lambda: _specs(*(_mnist(m, range(3), range(3), defenses=DEFENSE_CONTROLS)
                                  for m in (CLEAN, "outlier_exposure"))), kind="defense"),
    ShippedTable("deepsad_table1", "DeepSAD alone at the paper's settings, 5% labeled anomalies, MNIST and "
                 "Fashion-MNIST, all ten normal classes, seed 0 (the paper's Table 1 setting)", _table1, kind="clean"),
    ShippedTable("fmnist_ablation", "Fashion-MNIST, all ten normal classes, seed 0: the four ablation methods",
                 _ablation("fmnist")),
    ShippedTable("mnist_paper_attack", "MNIST, normal classes 0-2, seed 0: naive poisoning and BadSAD at the paper's "
                 "settings (150 + 150 epochs, lr 1e-4, milestone 50), where every other attack table is quick",
                 _paper_attack),
    ShippedTable("mnist_weight_sweep", "MNIST, normal classes 1, 7 and 8 (the lowest ASR and the two largest clean-AUC "
                 "costs of mnist_ablation), seed 0: BadSAD with each term's weight halved or doubled",
                 _weight_sweep),
    ShippedTable("cifar10_ablation", "CIFAR-10 subset, all ten normal classes, seed 0: the four ablation methods",
                 _ablation("cifar10")),
    # the same grids at three seeds, and the paper-settings attack on every class (seed 0 shares its cells'
    # keys with the one-seed table: copy those cells into the --work folder and only the rest is computed)
    ShippedTable("mnist_ablation_seeds", "mnist_ablation at seeds 0-2", lambda: _specs(
        *(_mnist(m, seeds=range(3)) for m in ABLATION)),
        not_yet_made="meant for a lent GPU (scripts/make_tables_on_gpu.sh); on 2 CPU cores it is about 2 hours "
                     "of grid (measured: one cell a minute over its first 22 cells of seeds 1-2, clean models "
                     "included)"),
    ShippedTable("mnist_controls_seeds", "mnist_controls at seeds 0-2", lambda: _controls(range(3)),
                 not_yet_made=_FOR_A_GPU.format("1.3 hours", "mnist_controls (25.9 min for one seed)")),
    ShippedTable("mnist_poison_curve_seeds", "mnist_poison_curve at seeds 0-2",
                 lambda: _mnist("badsad", seeds=range(3), poison_ratios=(0.0, 0.01, 0.05, 0.1)),
                 not_yet_made=_FOR_A_GPU.format("1.7 hours", "mnist_poison_curve (34.5 min for one seed)")),
    ShippedTable("mnist_paper_attack_all", "mnist_paper_attack on all ten normal classes",
                 lambda: _paper_attack(range(10)),
                 not_yet_made=_FOR_A_GPU.format("4 hours", "mnist_paper_attack (70.1 min for 3 classes)")),
]}


def results_table(name: str) -> list[dict]:
    """Rows of a table shipped with the library (``badsad_lib/results/<name>.csv``)."""
    path = RESULTS / f"{name}.csv"
    if not path.exists() and name in TABLES and TABLES[name].not_yet_made:
        raise ValueError(f"table {name!r} is not shipped yet ({TABLES[name].not_yet_made}); "
                         f"make it with: badsad tables {name} --jobs 2")
    if not path.exists():
        available = sorted(p.stem for p in RESULTS.glob("*.csv"))
        raise ValueError(f"no precomputed results {name!r}; available: {', '.join(available) or 'none'}")
    with path.open() as f:
        return list(csv.DictReader(f))


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def make_table(name: str, work, jobs: int = 1, progress: bool = True, command: str | None = None,
               executor=None, stack: int | None = None, reevaluate: bool = False) -> Path:
    """Run (or resume) table ``name``'s grid under ``work`` and write ``results/<name>.csv`` and its manifest entry.

    ``executor``: a pool shared with other tables (``jobs`` is then its size, for the record). ``reevaluate``:
    train nothing; measure every cell again from the models kept under ``work/models`` (``grid.reevaluate_grid``);
    the manifest entry then keeps the training run's record under ``trained``."""
    from .grid import reevaluate_grid, run_grid

    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}: choose from {', '.join(TABLES)}")
    table = TABLES[name]
    specs = table.specs()
    # the code that makes the table: any change outside results/ means the commit alone does not reproduce it
    dirty = bool(_git("status", "--porcelain", "--", ".", ":(exclude)results")) and "BADSAD_COMMIT" not in os.environ
    start = time.perf_counter()
    if reevaluate:
        results = reevaluate_grid(specs, work, executor=executor, jobs=jobs, progress=progress)
    else:
        results = run_grid(specs, work, executor=executor, jobs=jobs, progress=progress, stack=stack)
    wall = time.perf_counter() - start
    rows = defense_rows(results) if table.kind == "defense" else rows_of(results)
    path = write_text(RESULTS / f"{name}.csv", csv_text(rows))
    with _MANIFEST_LOCK:
        before = manifest().get(name, {})
        trained = ({"trained": before.get("trained") or {k: before[k] for k in _TRAINING_RECORD if k in before}}
                   if reevaluate else {})
        _record(name, {"description": table.description, **trained,
                     "command": command or f"badsad tables {name} --jobs {jobs} --work {work}"
                                           + (" --reevaluate" if reevaluate else ""),
                     "commit": commit(),
                     "uncommitted_changes": dirty,
                     "machine": machine(), "threads_per_cell": 1, "jobs": jobs, "cells": len(results),
                     "stack": max((r.get("stack", 1) for r in results), default=1),
                     "wall_seconds": round(wall, 1), "cell_seconds": round(sum(r["seconds"] for r in results), 1),
                     "made": time.strftime("%Y-%m-%d")})
    return path


_MANIFEST_LOCK = threading.Lock()
# what a re-evaluated table's manifest entry keeps of the run that trained its models
_TRAINING_RECORD = ("command", "commit", "uncommitted_changes", "machine", "jobs", "stack", "wall_seconds",
                    "cell_seconds", "made")


def _record(name: str, entry: dict) -> None:
    entries = manifest()
    entries[name] = entry
    write_json(MANIFEST, dict(sorted(entries.items())))


def main_tables(names, work, jobs: int, progress: bool = True, executor=None, stack: int | None = None,
                reevaluate: bool = False) -> list[str]:
    """The ``badsad tables`` command's work: make tables ``names`` (the command then re-renders the README).

    With several names and ``jobs`` > 1 every table's cells share one pool of ``jobs`` workers (submitted in the
    order named: put the longest first), so no worker idles while another table has cells left; each table's
    wall time is then counted from the shared start. ``executor`` (e.g. a Dask client's) replaces that pool."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import nullcontext

    from .grid import worker_pool

    command = "badsad tables " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["tables"] else None
    work = Path(work)
    if executor is None and (len(names) < 2 or jobs < 2):
        for name in names:
            make_table(name, work / name.split("_")[0], jobs=jobs, progress=progress, command=command, stack=stack,
                       reevaluate=reevaluate)
        done = list(names)
    else:
        done = []
        with nullcontext(executor) if executor is not None else worker_pool(jobs) as pool, \
                ThreadPoolExecutor(max(1, len(names))) as threads:
            futures = {}
            for name in names:  # one at a time, so the pool's queue holds the tables in the order named
                futures[threads.submit(make_table, name, work / name.split("_")[0], jobs, False, command,
                                       pool, stack, reevaluate)] = name
                time.sleep(0.5)
            for fut in as_completed(futures):
                fut.result()
                done.append(futures[fut])
                if progress:
                    print(f"made {futures[fut]}", flush=True)
    return done
