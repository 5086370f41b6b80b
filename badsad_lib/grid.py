"""The paper-style experiment grid: one independent, resumable job per (dataset, class, seed, method).

Each cell writes its result atomically to ``OUT/cells/<cell>.json``; a rerun skips cells whose
file exists, so an interrupted run loses nothing. Any ``concurrent.futures.Executor`` can run the
cells (a Dask or Ray executor spreads them over a cluster); ``jobs`` > 1 uses local processes.
The clean model of (dataset, class, seed) is trained once and cached in ``OUT/models/``.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .attack import check_method
from .data import dataset_name
from .io import write_json, write_text

SUMMARY_COLUMNS = ("auc_clean_model", "auc_backdoored", "asr_95", "miss_rate_95", "clean_model_asr_95")


@dataclass(frozen=True)
class Cell:
    dataset: str
    normal_class: int
    seed: int
    method: str
    quick: bool = True
    trigger: str = "corners"
    strength: float | None = None
    poison_ratio: float = 0.1
    labeled_ratio: float = 0.01

    @property
    def key(self) -> str:
        return f"{self.dataset}_class{self.normal_class}_seed{self.seed}_{self.method}"


def make_cells(datasets, classes, seeds, methods, **common) -> list[Cell]:
    """The full cross product, validated."""
    datasets = [dataset_name(d) for d in datasets]
    methods = [check_method(m) for m in methods]
    for k in classes:
        if not 0 <= int(k) <= 9:
            raise ValueError(f"class {k} is not a class id from 0 to 9")
    return [Cell(d, int(k), int(s), m, **common) for d, k, s, m in itertools.product(datasets, classes, seeds, methods)]


def run_cell(cell: Cell, out: str) -> dict:
    """Run one cell and write ``OUT/cells/<key>.json`` atomically; returns the metrics."""
    from .deepsad import DeepSAD
    from .experiments import run_attack

    out = Path(out)
    model_path = out / "models" / f"clean_{cell.dataset}_class{cell.normal_class}_seed{cell.seed}.pt"
    clean = DeepSAD.load(model_path) if model_path.exists() else None
    clean, _, _, _, metrics = run_attack(cell.dataset, cell.normal_class, cell.method, cell.trigger, cell.strength,
                                         cell.poison_ratio, cell.labeled_ratio, seed=cell.seed, quick=cell.quick,
                                         clean_model=clean)
    if not model_path.exists():
        clean.save(model_path)
    metrics["cell"] = asdict(cell)
    write_json(out / "cells" / f"{cell.key}.json", metrics)
    return metrics


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)  # processes share the cores; tiny networks slow down when threads outnumber them


def run_grid(cells: list[Cell], out, executor: Executor | None = None, jobs: int = 1, progress: bool = True) -> list[dict]:
    """Run the cells not yet finished under ``out``, then write the tables; returns all cell results."""
    out = Path(out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    todo = [c for c in cells if not (out / "cells" / f"{c.key}.json").exists()]
    own = executor is None and jobs > 1
    if own:
        executor = ProcessPoolExecutor(max_workers=jobs, initializer=_one_thread)
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="grid cells", disable=not progress)
    try:
        if executor is None:
            for cell in todo:
                run_cell(cell, str(out))
                bar.update()
        else:
            futures: list[Future] = [executor.submit(run_cell, cell, str(out)) for cell in todo]
            for fut in as_completed(futures):
                fut.result()
                bar.update()
    finally:
        bar.close()
        if own:
            executor.shutdown()
    results = [json.loads((out / "cells" / f"{c.key}.json").read_text()) for c in cells]
    write_tables(results, out)
    return results


def _row(r: dict) -> dict:
    return {"dataset": r["dataset"], "normal_class": r["normal_class"], "seed": r["seed"], "method": r["method"],
            "auc_clean_model": r["auc_clean_model"], "auc_backdoored": r["auc_backdoored"],
            "asr_95": r["asr"]["95"], "miss_rate_95": r["miss_rate"]["95"],
            "clean_model_asr_95": r["clean_model"]["asr"]["95"], "seconds": r["seconds"]}


def summarize(results: list[dict]) -> list[dict]:
    """Mean and std over seeds and classes, per (dataset, method)."""
    rows = [_row(r) for r in results]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    summary = []
    for (dataset, method), group in groups.items():
        entry = {"dataset": dataset, "method": method, "cells": len(group)}
        for col in SUMMARY_COLUMNS:
            values = np.array([g[col] for g in group], dtype=float)
            entry[col], entry[col + "_std"] = float(values.mean()), float(values.std())
        summary.append(entry)
    return summary


def write_tables(results: list[dict], out) -> str:
    """Write results.csv (one row per cell), summary.csv and summary.md; returns the markdown."""
    out = Path(out)
    rows = [_row(r) for r in results]
    summary = summarize(results)
    for name, table in (("results.csv", rows), ("summary.csv", summary)):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(table[0]) if table else [])
        writer.writeheader()
        writer.writerows(table)
        write_text(out / name, buf.getvalue())
    lines = ["| dataset | method | cells | clean-model AUC | backdoored AUC | ASR@95 | miss rate@95 | ASR@95 on clean model |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        cells = " | ".join(f"{s[c]:.3f} ± {s[c + '_std']:.3f}" for c in SUMMARY_COLUMNS)
        lines.append(f"| {s['dataset']} | {s['method']} | {s['cells']} | {cells} |")
    markdown = "\n".join(lines) + "\n"
    write_text(out / "summary.md", markdown)
    return markdown


def default_jobs() -> int:
    return max(1, (os.cpu_count() or 1))
