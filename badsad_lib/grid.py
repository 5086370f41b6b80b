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

GROUP_COLUMNS = ("dataset", "method", "trigger", "strength", "poison_ratio")
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
    defenses: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """File name of the cell; settings that differ from the defaults are spelled out."""
        key = f"{self.dataset}_class{self.normal_class}_seed{self.seed}_{self.method}"
        if self.trigger != "corners" or self.strength is not None:
            key += f"_{self.trigger}" + ("" if self.strength is None else f"{self.strength:g}")
        if self.poison_ratio != 0.1:
            key += f"_rho{self.poison_ratio:g}"
        if self.labeled_ratio != 0.01:
            key += f"_gl{self.labeled_ratio:g}"
        if not self.quick:
            key += "_full"
        if self.defenses:
            key += "_defended"
        return key


def make_cells(datasets, classes, seeds, methods, strengths=(None,), poison_ratios=(0.1,), defenses=(),
               **common) -> list[Cell]:
    """The full cross product (datasets x classes x seeds x methods x strengths x poison ratios), validated."""
    from .triggers import check_strength

    datasets = [dataset_name(d) for d in datasets]
    methods = [check_method(m) for m in methods]
    for k in classes:
        if not 0 <= int(k) <= 9:
            raise ValueError(f"class {k} is not a class id from 0 to 9")
    from .defenses import DEFENSES

    strengths = [None if mu is None else check_strength(mu) for mu in strengths]
    unknown = [d for d in defenses if d not in DEFENSES]
    if unknown:
        raise ValueError(f"unknown defense(s) {', '.join(unknown)}: choose from {', '.join(DEFENSES)}")
    for rho in poison_ratios:
        if not 0.0 <= float(rho) <= 1.0:
            raise ValueError(f"poison ratio {rho} is outside [0, 1]")
    return [Cell(d, int(k), int(s), m, strength=mu, poison_ratio=float(rho), defenses=tuple(defenses), **common)
            for d, k, s, m, mu, rho in itertools.product(datasets, classes, seeds, methods, strengths, poison_ratios)]


def run_cell(cell: Cell, out: str) -> dict:
    """Run one cell and write ``OUT/cells/<key>.json`` atomically; returns the metrics."""
    from .deepsad import DeepSAD
    from .experiments import run_attack

    out = Path(out)
    model_path = out / "models" / f"clean_{cell.dataset}_class{cell.normal_class}_seed{cell.seed}.pt"
    clean = DeepSAD.load(model_path) if model_path.exists() else None
    clean, backdoored, split, trigger, metrics = run_attack(
        cell.dataset, cell.normal_class, cell.method, cell.trigger, cell.strength, cell.poison_ratio,
        cell.labeled_ratio, seed=cell.seed, quick=cell.quick, clean_model=clean)
    if not model_path.exists():
        clean.save(model_path)
    if cell.defenses:
        from .defenses import run_defenses, scenario_for

        scenario = scenario_for(backdoored, split, trigger, metrics["strength"], cell.poison_ratio, cell.seed)
        metrics["defenses"] = run_defenses(cell.defenses, scenario)
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
            "trigger": r["trigger"], "strength": r["strength"], "poison_ratio": r["poison_ratio"],
            "auc_clean_model": r["auc_clean_model"], "auc_backdoored": r["auc_backdoored"],
            "asr_95": r["asr"]["95"], "miss_rate_95": r["miss_rate"]["95"],
            "clean_model_asr_95": r["clean_model"]["asr"]["95"], "seconds": r["seconds"]}


def summarize(results: list[dict]) -> list[dict]:
    """Mean and std over seeds and classes, per (dataset, method, trigger, strength, poison ratio)."""
    rows = [_row(r) for r in results]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_COLUMNS), []).append(row)
    summary = []
    for key, group in groups.items():
        entry = {**dict(zip(GROUP_COLUMNS, key)), "cells": len(group)}
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
    lines = ["| dataset | method | trigger | mu | rho | cells | clean-model AUC | backdoored AUC | ASR@95 | "
             "miss rate@95 | ASR@95 on clean model |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        cells = " | ".join(f"{s[c]:.3f} ± {s[c + '_std']:.3f}" for c in SUMMARY_COLUMNS)
        lines.append(f"| {s['dataset']} | {s['method']} | {s['trigger']} | {s['strength']:g} | {s['poison_ratio']:g} "
                     f"| {s['cells']} | {cells} |")
    markdown = "\n".join(lines) + "\n"
    if any(r.get("defenses") for r in results):
        markdown += "\n" + write_defense_tables(results, out)
    write_text(out / "summary.md", markdown)
    return markdown


DEFENSE_COLUMNS = ("auc_before", "auc_after", "asr_before", "asr_after", "der", "tpr", "fpr")


def defense_rows(results: list[dict]) -> list[dict]:
    """One row per (cell, defense)."""
    return [{"dataset": r["dataset"], "normal_class": r["normal_class"], "seed": r["seed"], "method": r["method"],
             "defense": d["defense"], **{c: d[c] for c in DEFENSE_COLUMNS}, "seconds": d["seconds"]}
            for r in results for d in r.get("defenses", [])]


def write_defense_tables(results: list[dict], out) -> str:
    """defenses.csv (one row per cell and defense) and a markdown table of means +- std; returns the markdown."""
    rows = defense_rows(results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(Path(out) / "defenses.csv", buf.getvalue())
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"], row["defense"]), []).append(row)
    lines = ["| dataset | attack | defense | cells | AUC before | AUC after | ASR@95 before | ASR@95 after | DER | "
             "detection TPR | detection FPR |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, method, defense), group in groups.items():
        cells = []
        for c in DEFENSE_COLUMNS:
            values = np.array([g[c] for g in group if g[c] is not None], dtype=float)
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}" if values.size else "n/a")
        lines.append(f"| {dataset} | {method} | {defense} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def default_jobs() -> int:
    return max(1, (os.cpu_count() or 1))
