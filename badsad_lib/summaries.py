"""Grid results as rows, summaries and markdown: one cell's result dict -> CSV rows (attacks, clean
runs, defenses), means and spreads over cells, and the ``results.csv`` / ``defenses.csv`` /
``summary.md`` that every grid folder gets (``write_tables``).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .io import write_text
from .spec import CLEAN

STRENGTH_COLUMNS = ("asr_mu0", "asr_mu0.25", "asr_mu0.5", "asr_mu0.75", "asr_mu1")
ATTACK_COLUMNS = ("dataset", "normal_class", "seed", "detector", "method", "tier", "trigger", "strength",
                  "poison_ratio", "labeled_ratio", "settings", "auc_clean_model", "auc_backdoored", "asr_90", "asr_95",
                  "asr_99", "conditional_asr_95", "miss_rate_95", "clean_model_asr_95", "trigger_exposure",
                  *STRENGTH_COLUMNS, "seconds", "key")
CLEAN_COLUMNS = ("dataset", "normal_class", "seed", "detector", "labeled_ratio", "known_anomaly_class", "settings",
                 "epochs", "ae_epochs", "lr", "auc", "miss_rate_95", "seconds", "key")
DEFENSE_COLUMNS = ("auc_before", "auc_after", "asr_before", "asr_after", "der", "tpr", "fpr", "false_alarm_after")
DEFENSE_DETAILS = ("mask_share", "held_out_pass_rate", "flagged", "detection_auroc", "flagged_share")  # flagged: 1/0
SUMMARY_COLUMNS = ("auc_clean_model", "auc_backdoored", "asr_95", "conditional_asr_95", "miss_rate_95",
                   "clean_model_asr_95")


# ------------------------------------------------------------------ cell results -> rows
def attack_row(r: dict) -> dict:
    """One CSV row of an attacked cell's metrics."""
    by_mu = r.get("asr_by_strength", {})
    return {"dataset": r["dataset"], "normal_class": r["normal_class"], "seed": r["seed"], "detector": r["detector"],
            "method": r["method"], "tier": r["tier"], "trigger": r["trigger"], "strength": r["strength"],
            "poison_ratio": r["poison_ratio"], "labeled_ratio": r["labeled_ratio"], "settings": r["settings_name"],
            "auc_clean_model": r["auc_clean_model"], "auc_backdoored": r["auc_backdoored"],
            **{f"asr_{q}": r["asr"][q] for q in ("90", "95", "99")},
            "conditional_asr_95": r["conditional_asr"]["95"], "miss_rate_95": r["miss_rate"]["95"],
            "clean_model_asr_95": r["clean_model"]["asr"]["95"], "trigger_exposure": r["trigger_exposure"],
            **{col: by_mu.get(col[len("asr_mu"):]) for col in STRENGTH_COLUMNS},
            "seconds": r["seconds"], "key": r["key"]}


def clean_row(r: dict) -> dict:
    """One CSV row of a clean cell's metrics."""
    s = r["spec"]["settings"]
    return {"dataset": r["dataset"], "normal_class": r["normal_class"], "seed": r["seed"], "detector": r["detector"],
            "labeled_ratio": r["labeled_ratio"], "known_anomaly_class": r["known_anomaly_class"],
            "settings": r["settings_name"], "epochs": s["epochs"], "ae_epochs": s["ae_epochs"], "lr": s["lr"],
            "auc": r["auc"], "miss_rate_95": r["miss_rate"]["95"], "seconds": r["seconds"], "key": r["key"]}


def defense_rows(results: list[dict]) -> list[dict]:
    """One row per (cell, defense)."""
    rows = []
    for r in results:
        for d in r.get("defenses", []):
            details = d.get("details", {})
            rows.append({"dataset": r["dataset"], "normal_class": r["normal_class"], "seed": r["seed"],
                         "method": r["method"], "trigger": r["trigger"], "defense": d["defense"],
                         **{c: d[c] for c in DEFENSE_COLUMNS},
                         **{c: int(v) if isinstance(v := details.get(c), bool) else v for c in DEFENSE_DETAILS},
                         "seconds": d["seconds"], "key": r["key"]})
    return rows


def rows_of(results: list[dict]) -> list[dict]:
    return [clean_row(r) if r["method"] == CLEAN else attack_row(r) for r in results]


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
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
    attacked = [attack_row(r) for r in results if r["method"] != CLEAN]
    clean = [clean_row(r) for r in results if r["method"] == CLEAN]
    write_text(out / "results.csv", csv_text(rows_of(results)))
    parts = []
    if clean:
        parts.append(clean_markdown(clean))
    if attacked:
        parts.append(summary_markdown(attacked))
    defended = defense_rows(results)
    if defended:
        write_text(out / "defenses.csv", csv_text(defended))
        parts.append(defense_markdown(defended))
    markdown = "\n".join(parts)
    write_text(out / "summary.md", markdown)
    return markdown
