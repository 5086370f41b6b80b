"""Grid results as rows, summaries and markdown: cells -> CSV rows (``CellResult.to_row``), means and
spreads over cells, and the ``results.csv`` / ``defenses.csv`` / ``summary.md`` that every grid folder
gets (``write_tables``).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .io import write_text
from .result import DEFENSE_COLUMNS, CellResult

SUMMARY_COLUMNS = ("auc_clean_model", "auc_backdoored", "asr_95", "conditional_asr_95", "miss_rate_95",
                   "clean_model_asr_95")


# ------------------------------------------------------------------ cell results -> rows
def _cell(r) -> CellResult:
    return r if isinstance(r, CellResult) else CellResult.from_dict(r)


def rows_of(results) -> list[dict]:
    """One row per cell (``CellResult.to_row``); ``results`` are CellResults or their dicts."""
    return [_cell(r).to_row() for r in results]


def defense_rows(results) -> list[dict]:
    """One row per (cell, defense)."""
    return [row for r in results for row in _cell(r).defense_rows()]


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    columns = list(dict.fromkeys(c for row in rows for c in row))  # clean and attack rows: every column, once
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------ summaries
def _floats(values) -> np.ndarray:
    return np.array([float(v) for v in values if v not in ("", None)], dtype=float)


def _aggregate(rows, by, columns, statistic) -> dict:
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[by] if isinstance(by, str) else tuple(r[b] for b in by), []).append(r)

    def stat(group, c):
        values = _floats(r.get(c) for r in group)
        return float(statistic(values)) if values.size else None
    return {k: {c: stat(g, c) for c in columns} | {"cells": len(g)} for k, g in groups.items()}


def mean_by(rows, by="method", columns=("auc_clean_model", "auc_backdoored", "asr_95", "miss_rate_95")):
    """Mean of ``columns`` per value of ``by`` (a column, or a tuple of columns) over rows of a results
    table: {value: {column: mean, "cells": n}}. Empty entries are skipped; a column with none is None."""
    return _aggregate(rows, by, columns, np.mean)


def std_by(rows, by="method", columns=SUMMARY_COLUMNS) -> dict:
    """Like ``mean_by``, with the standard deviation over the group's cells."""
    return _aggregate(rows, by, columns, np.std)


def format_table(means: dict, order=None) -> str:
    """A plain-text table of ``mean_by``'s result (n/a where a mean is None)."""
    order = [k for k in (order or means) if k in means]
    columns = [c for c in next(iter(means.values())) if c != "cells"]
    labels = {k: k if isinstance(k, str) else " / ".join(map(str, k)) for k in order}
    width = max(14, *(len(v) + 2 for v in labels.values()))
    cell = max(11, *(len(c) + 2 for c in columns))

    def f(v):
        return f"{'n/a':>{cell}s}" if v is None else f"{v:{cell}.3f}"
    lines = [" " * width + "".join(f"{c:>{cell}s}" for c in columns) + f"{'cells':>7s}"]
    lines += [f"{labels[k]:{width}s}" + "".join(f(means[k][c]) for c in columns) + f"{means[k]['cells']:7d}"
              for k in order]
    return "\n".join(lines)


def format_defenses(results: dict) -> str:
    """A plain-text table of defense results: {attack: [DefenseResult dicts]}."""
    def f(v):
        return "    n/a" if v is None else f"{v:7.3f}"
    lines = [f"{'attack':8s}{'defense':19s}{'AUC before':>11s}{'after':>8s}{'ASR before':>11s}{'after':>8s}"
             f"{'DER':>8s}{'TPR':>8s}{'FPR':>8s}{'FA after':>9s}"]
    for attack, rows in results.items():
        for r in rows:
            lines.append(f"{attack:8s}{r['defense']:19s}{r['auc_before']:11.3f}{f(r['auc_after'])}"
                         f"{r['asr_before']:11.3f}{f(r['asr_after'])}{f(r['der'])}{f(r['tpr'])}{f(r['fpr'])}"
                         f"{f(r['false_alarm_after'])} ")
    return "\n".join(lines)


def _pm(mean, std, digits: int = 3) -> str:
    return "n/a" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_markdown(rows: list[dict]) -> str:
    """Mean ± std over cells per (dataset, method, trigger, strength, poison ratio) of attack rows."""
    by = ("dataset", "method", "trigger", "strength", "poison_ratio")
    means, stds = mean_by(rows, by, SUMMARY_COLUMNS), std_by(rows, by, SUMMARY_COLUMNS)
    lines = ["| dataset | method | trigger | mu | rho | cells | clean-model AUC | backdoored AUC | ASR@95 | "
             "conditional ASR@95 | miss rate@95 | ASR@95 on clean model |", "|---" * 12 + "|"]
    for key, m in means.items():
        cells = " | ".join(_pm(m[c], stds[key][c]) for c in SUMMARY_COLUMNS)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {float(key[3]):g} | {float(key[4]):g} | {m['cells']} | {cells} |")
    return "\n".join(lines) + "\n"


def clean_markdown(rows: list[dict]) -> str:
    by = ("dataset", "settings", "labeled_ratio")
    means, stds = mean_by(rows, by, ("auc",)), std_by(rows, by, ("auc",))
    lines = ["| dataset | settings | labeled ratio | cells | AUC |", "|---|---|---|---|---|"]
    for key, m in means.items():
        lines.append(f"| {key[0]} | {key[1]} | {float(key[2]):g} | {m['cells']} | {_pm(m['auc'], stds[key]['auc'])} |")
    return "\n".join(lines) + "\n"


def defense_markdown(rows: list[dict]) -> str:
    by = ("dataset", "method", "trigger", "defense")
    means, stds = mean_by(rows, by, DEFENSE_COLUMNS), std_by(rows, by, DEFENSE_COLUMNS)
    lines = ["| dataset | attack | trigger | defense | cells | " + " | ".join(DEFENSE_COLUMNS) + " |",
             "|---" * (5 + len(DEFENSE_COLUMNS)) + "|"]
    for key, m in means.items():
        lines.append(f"| {' | '.join(map(str, key))} | {m['cells']} | "
                     + " | ".join(_pm(m[c], stds[key][c]) for c in DEFENSE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def write_tables(results: list[dict], out) -> str:
    """results.csv (one row per cell), defenses.csv (one per cell and defense) and summary.md; returns the markdown."""
    out = Path(out)
    cells = [_cell(r) for r in results]
    attacked = [c.to_row() for c in cells if c.attacked]
    clean = [c.to_row() for c in cells if not c.attacked]
    write_text(out / "results.csv", csv_text(attacked + clean))
    parts = []
    if clean:
        parts.append(clean_markdown(clean))
    if attacked:
        parts.append(summary_markdown(attacked))
    defended = defense_rows(cells)
    if defended:
        write_text(out / "defenses.csv", csv_text(defended))
        parts.append(defense_markdown(defended))
    markdown = "\n".join(parts)
    write_text(out / "summary.md", markdown)
    return markdown
