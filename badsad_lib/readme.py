"""The README's tables, rendered from the shipped CSVs and the manifest.

Each table sits in the README between ``<!-- begin table NAME -->`` and ``<!-- end table NAME -->``;
``badsad tables --readme README.md`` re-renders every block, and a test fails when the README and
the CSVs disagree.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .result import STRENGTH_COLUMNS
from .summaries import _floats, _pm, mean_by, std_by
from .tables import ABLATION, RESULTS, TABLES, manifest, results_table


PAPER_TABLE1 = {"mnist": 96.7, "fmnist": 90.5}  # DeepSAD mean AUC (%), gamma_l = .05, as Table 1 is usually quoted


def _f(v, digits=3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def readme_table1() -> str:
    rows = results_table("deepsad_table1")
    lines = ["| dataset | classes | mean AUC ± std | lowest class | highest class | paper (Table 1) |",
             "|---|---|---|---|---|---|"]
    for dataset, label in (("mnist", "MNIST"), ("fmnist", "Fashion-MNIST")):
        aucs = _floats(r["auc"] for r in rows if r["dataset"] == dataset)
        if aucs.size:
            lines.append(f"| {label} | {aucs.size} | {100 * aucs.mean():.1f} ± {100 * aucs.std():.1f} | "
                         f"{100 * aucs.min():.1f} | {100 * aucs.max():.1f} | {PAPER_TABLE1[dataset]:.1f} ± 1 |")
    return "\n".join(lines)


def _attack_lines(rows, label_of, order) -> list[str]:
    cols = ("auc_clean_model", "clean_model_asr_95", "auc_backdoored", "asr_95", "conditional_asr_95", "miss_rate_95",
            "triggered_normal_pass_95", "trigger_exposure")
    means, stds = mean_by(rows, ("method", "poison_ratio"), cols), std_by(rows, ("method", "poison_ratio"), cols)
    lines = []
    for key in order:
        if key in means:
            m, s = means[key], stds[key]
            lines.append(f"| {label_of(key)} | {m['cells']} | {_pm(m['auc_clean_model'], s['auc_clean_model'])} | "
                         f"{_pm(m['clean_model_asr_95'], s['clean_model_asr_95'])} | "
                         f"{_pm(m['auc_backdoored'], s['auc_backdoored'])} | **{_pm(m['asr_95'], s['asr_95'])}** | "
                         f"{_pm(m['conditional_asr_95'], s['conditional_asr_95'])} | "
                         f"{_pm(m['miss_rate_95'], s['miss_rate_95'])} | "
                         f"{_pm(m['triggered_normal_pass_95'], s['triggered_normal_pass_95'])} | "
                         f"{_f(m['trigger_exposure'], 2)} | "
                         f"{_f(_worst_cost(r for r in rows if (r['method'], r['poison_ratio']) == key), 1)} |")
    return lines


def _worst_cost(rows) -> float | None:
    """The largest clean-AUC cost of one model over ``rows``, in AUC points (clean model's minus backdoored)."""
    costs = [100 * (float(r["auc_clean_model"]) - float(r["auc_backdoored"])) for r in rows]
    return max(costs) if costs else None


ATTACK_HEADER = ["| method (attacker tier) | cells | clean-model AUC | clean-model ASR@95 | backdoored AUC | ASR@95 | "
                 "conditional ASR@95 | miss rate@95 | triggered normals passing@95 | trigger exposure | "
                 "worst cell's AUC cost (points) |", "|---|---|---|---|---|---|---|---|---|---|---|"]


def readme_weight_sweep() -> str:
    """Per weight setting: each class's clean-AUC cost and ASR@95, the worst of each, and whether the victim's
    per-model check (cost under 2 points) and ASR@95 >= .90 both hold on every class."""
    rows = results_table("mnist_weight_sweep")
    classes = sorted({int(r["normal_class"]) for r in rows})
    lines = ["| weights (conc. / align. / sep.) | " + " | ".join(f"class {k}: AUC cost, ASR@95" for k in classes)
             + " | worst AUC cost | lowest ASR@95 | cost < 2 and ASR >= .90 on every class |",
             "|---|" + "---|" * (len(classes) + 3)]
    for weights in dict.fromkeys(r["weights"] for r in rows):
        group = {int(r["normal_class"]): r for r in rows if r["weights"] == weights}
        costs = {k: 100 * (float(r["auc_clean_model"]) - float(r["auc_backdoored"])) for k, r in group.items()}
        asrs = {k: float(r["asr_95"]) for k, r in group.items()}
        cells = [f"{costs[k]:+.1f}, {asrs[k]:.3f}" if k in group else "n/a" for k in classes]
        ok = len(group) == len(classes) and max(costs.values()) < 2 and min(asrs.values()) >= 0.90
        lines.append(f"| {weights.replace('/', ' / ')} | " + " | ".join(cells) + f" | {max(costs.values()):+.1f} | "
                     f"{min(asrs.values()):.3f} | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def readme_ablation(name: str) -> str:
    from .registry import TIERS, method_info

    rows = results_table(name)
    order = sorted({(r["method"], r["poison_ratio"]) for r in rows},
                   key=lambda k: (list(TIERS).index(k[0]), -float(k[1])))

    def label(key):
        method, rho = key
        return f"{method}{f', rho {float(rho):g}' if method_info(method).trigger else ''} ({TIERS[method]})"
    return "\n".join(ATTACK_HEADER + _attack_lines(rows, label, order))


def readme_seeds(name: str = "mnist_seeds") -> str:
    """Per method and seed, mean +- std over the classes of a multi-seed table."""
    rows = results_table(name)
    cols = ("auc_clean_model", "auc_backdoored", "asr_95", "miss_rate_95")
    lines = ["| method | seed | cells | clean-model AUC | backdoored AUC | ASR@95 | miss rate@95 |",
             "|---|---|---|---|---|---|---|"]
    means, stds = mean_by(rows, ("method", "seed"), cols), std_by(rows, ("method", "seed"), cols)
    for key in sorted(means, key=lambda k: (ABLATION.index(k[0]) if k[0] in ABLATION else len(ABLATION), k[0],
                                            int(k[1]))):
        m, s = means[key], stds[key]
        lines.append(f"| {key[0]} | {key[1]} | {m['cells']} | " + " | ".join(_pm(m[c], s[c]) for c in cols) + " |")
    return "\n".join(lines)


def readme_poison_curve() -> str:
    rows = results_table("mnist_poison_curve")
    cols = ("asr_95", "conditional_asr_95", "miss_rate_95", "auc_backdoored", *STRENGTH_COLUMNS, "best_strength",
            "best_strength_asr_95", "triggered_normal_pass_95")
    means = mean_by(rows, "poison_ratio", cols)
    lines = ["| rho | cells | ASR@95 | conditional ASR@95 | miss rate@95 | backdoored AUC | "
             + " | ".join(f"ASR at test mu = {c[len('asr_mu'):]}" for c in STRENGTH_COLUMNS)
             + " | best test mu (mean) | ASR@95 at the best mu | triggered normals passing@95 |",
             "|---" * (9 + len(STRENGTH_COLUMNS)) + "|"]
    for rho in sorted(means, key=float):
        m = means[rho]
        lines.append(f"| {float(rho):g} | {m['cells']} | " + " | ".join(_f(m[c]) for c in cols) + " |")
    return "\n".join(lines)


DEFENSE_LABELS = {"spectral": "spectral signatures (ratio estimated)", "clustering": "activation clustering",
                  "strip": "STRIP, total false alarms matched to 5%", "fine_tuning": "fine-tuning",
                  "bn_recalibration": "BatchNorm recalibration only", "fine_pruning": "fine-pruning (50%)",
                  "preprocess": "erase corners", "reverse_trigger": "reverse trigger (attack-family surrogates)",
                  "reverse_trigger_distinct": "reverse trigger (distinct surrogates)"}


def readme_defenses(name: str = "mnist_defenses") -> str:
    rows = results_table(name)
    cols = ("auc_before", "auc_after", "asr_before", "asr_after", "der", "tpr", "fpr", "false_alarm_after",
            "mask_share", "flagged")
    means = mean_by(rows, ("method", "trigger", "defense"), cols)
    lines = ["| attack | trigger | defense | AUC before → after | ASR@95 before → after | DER | detection TPR / FPR | "
             "false alarms after | flagged |", "|---|---|---|---|---|---|---|---|---|"]
    for (method, trigger, defense), m in means.items():
        after = "" if m["auc_after"] is None else f" → {_f(m['auc_after'])}"
        asr_after = "" if m["asr_after"] is None else f" → {_f(m['asr_after'])}"
        detect = "-" if m["tpr"] is None and m["fpr"] is None else \
            f"{'-' if m['tpr'] is None else _f(m['tpr'], 2)} / {_f(m['fpr'], 2)}"  # no tpr: nothing poisoned
        flagged = "-" if m["flagged"] is None else f"{round(m['flagged'] * m['cells'])} of {m['cells']}"
        lines.append(f"| {method} | {trigger} | {DEFENSE_LABELS.get(defense, defense)} | {_f(m['auc_before'])}{after} "
                     f"| {_f(m['asr_before'])}{asr_after} | {_f(m['der'], 2)} | {detect} | "
                     f"{_f(m['false_alarm_after'])} | {flagged} |")
    return "\n".join(lines)


def readme_speed() -> str:
    speed = json.loads((RESULTS / "speed.json").read_text())
    lines = ["| what | measured |", "|---|---|"]
    for name, value in speed["figures"].items():
        lines.append(f"| {name} | {value:.3f} |" if "AUC" in name or "ASR" in name else f"| {name} | {value:.1f} |")
    lines.append(f"\nMachine: {speed['machine']}; {speed['threads']} threads; `{speed['command']}` at commit "
                 f"{speed['commit'][:10]}, {speed['made']}.")
    return "\n".join(lines)


TIMING_LABELS = {"autoencoder": "autoencoder epoch", "deepsad": "DeepSAD epoch",
                 "badsad": "BadSAD epoch (views, 3n forward pass)", "quick_model": "one quick model (10 + 20 epochs)",
                 "quick_attack": "one quick attack (clean + BadSAD model)"}


def readme_speed_against() -> str:
    """The side-by-side timings of ``bench_deepsad.py --against``: this code against an earlier commit."""
    speed = json.loads((RESULTS / "speed_against.json").read_text())
    old = speed["against"][:7]
    lines = [f"| timing | this code (s) | {old} (s) | speed-up |", "|---|---|---|---|"]
    for row in speed["rows"]:
        extra = "".join(f"; its {key.replace('this_tree_', '').upper().replace('_', '@')} {row[key]:.3f} vs "
                        f"{row[key.replace('this_tree', 'against')]:.3f}"
                        for key in row if key.startswith("this_tree_") and key != "this_tree_s")
        lines.append(f"| {TIMING_LABELS.get(row['timing'], row['timing'])}{extra} | {row['this_tree_s']:.3f} | {row['against_s']:.3f} | "
                     f"{row['speedup']:.2f}x |")
    at_once = f", {speed['jobs']} processes of a tree at once (their mean)" if speed.get("jobs", 1) > 1 else ""
    lines.append(f"\nMedians of {speed['rows'][0]['rounds']} alternating rounds, {speed['threads']} thread(s)"
                 f"{at_once}, epochs at the paper's settings (MNIST class 0, batch 128, median of {speed['epochs_timed']} "
                 f"after a warm-up epoch). Machine: {speed['machine']}; `{speed['command']}` at commit "
                 f"{speed['commit'][:10]}{' (+ uncommitted changes)' if speed['uncommitted_changes'] else ''}, "
                 f"{speed['made']}.")
    rounds = [f"{row['timing']} {min(r):.2f}-{max(r):.2f} ({', '.join(f'{x:.2f}' for x in r)})"
              for row in speed["rows"] if (r := row.get("round_speedups"))]
    if rounds:
        lines[-1] += (f" Each round's ratio ({old} / this code, timed back to back, alternating which goes first): "
                      f"{'; '.join(rounds)}.")
    if speed.get("note"):
        lines[-1] += f" {speed['note']}"
    return "\n".join(lines)


def readme_grids() -> str:
    """How long each shipped table took to make, from the manifest."""
    lines = ["| table | cells | made by | commit | wall time | summed cell time |", "|---|---|---|---|---|---|"]
    for name, e in manifest().items():
        if name in TABLES:
            lines.append(f"| `{name}` | {e['cells']} | `{e['command']}` | {e['commit'][:10]}"
                         f"{' (+ uncommitted changes)' if e['uncommitted_changes'] else ''} | "
                         f"{e['wall_seconds'] / 60:.1f} min | {e['cell_seconds'] / 60:.1f} min |")
            if e.get("note"):
                lines.append(f"| | | {e['note']} | | | |")
            if e.get("trained"):
                t = e["trained"]
                lines.append(f"| | | re-evaluated from the models trained by `{t['command']}` | {t['commit'][:10]} | "
                             f"{t['wall_seconds'] / 60:.1f} min | {t['cell_seconds'] / 60:.1f} min |")
    for name, table in TABLES.items():
        if table.not_yet_made:
            lines.append(f"| `{name}` | {len({s.key for s in table.specs()})} | `badsad tables {name} --jobs 2` | "
                         f"not made yet: {table.not_yet_made} | | |")
    machines = sorted({e["machine"] for e in manifest().values()})
    return "\n".join(lines) + "\n\nMachine: " + "; ".join(machines) + ". Each cell runs on one thread; " \
        "\"jobs\" cells run side by side; a cell's time includes training its clean model unless another table " \
        "had cached it."


README_TABLES = {"deepsad_table1": readme_table1, "mnist_ablation": lambda: readme_ablation("mnist_ablation"),
                 "mnist_controls": lambda: readme_ablation("mnist_controls"),
                 "mnist_unconfounded": lambda: readme_ablation("mnist_unconfounded"),
                 "fmnist_ablation": lambda: readme_ablation("fmnist_ablation"),
                 "cifar10_ablation": lambda: readme_ablation("cifar10_ablation"),
                 "mnist_paper_attack": lambda: readme_ablation("mnist_paper_attack"),
                 "mnist_weight_sweep": readme_weight_sweep,
                 "mnist_poison_curve": readme_poison_curve, "mnist_seeds": readme_seeds,
                 "mnist_ablation_seeds": lambda: readme_seeds("mnist_ablation_seeds"),
                 "mnist_defenses": readme_defenses,
                 "mnist_defense_controls": lambda: readme_defenses("mnist_defense_controls"), "speed": readme_speed,
                 "speed_against": readme_speed_against, "grids": readme_grids}
_BLOCK = re.compile(r"(<!-- begin table (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- end table (?P=name) -->)", re.S)


def readme_not_yet_made(name: str) -> str:
    return (f"*Not shipped at this commit: {TABLES[name].not_yet_made}. "
            f"`badsad tables {name} --jobs 2` makes it.*")


def render_readme(text: str) -> str:
    """``text`` with every table block re-rendered from the shipped CSVs."""
    def render(m):
        name = m.group("name")
        if name not in README_TABLES:
            raise ValueError(f"README names an unknown table block {name!r}; known: {', '.join(README_TABLES)}")
        pending = name in TABLES and TABLES[name].not_yet_made
        return m.group(1) + (readme_not_yet_made(name) if pending else README_TABLES[name]()) + "\n" + m.group(4)
    return _BLOCK.sub(render, text)


def check_readme(readme: Path) -> str:
    """The text of ``readme``, refused unless it holds at least one table block (checked before any table is made)."""
    try:
        text = readme.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read --readme {readme}: {getattr(err, 'strerror', None) or err}") from None
    if not _BLOCK.search(text):
        raise ValueError(f"--readme {readme} holds no table block (<!-- begin table NAME --> ... <!-- end table NAME -->)"
                         f"; nothing to re-render: give the project's README.md")
    return text


