"""The ``badsad`` command line: train, attack, defend, demo, reproduce."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DATASETS, DatasetNotFoundError
from .defenses import DEFENSES
from .device import device_report, get_device, is_quick
from .io import write_json, write_text


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)} (default: digits)")
    p.add_argument("--normal-class", type=int, default=0, help="the normal class, 0-9 (default 0)")
    p.add_argument("--known-anomaly-class", type=int, default=None,
                   help="class of the labeled anomalies (default: normal class + 1)")
    p.add_argument("--labeled-ratio", type=float, default=0.05, help="gamma_l, labeled anomalies (default 0.05)")
    p.add_argument("--pollution-ratio", type=float, default=0.0, help="gamma_p, unlabeled anomalies (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="DeepSAD epochs (default: 150, quick 20)")
    p.add_argument("--ae-epochs", type=int, default=None, help="autoencoder epochs (default: 150, quick 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--quick", action="store_true", default=None,
                   help="few epochs, for CPUs (default: on when BADSAD_QUICK=1 or CI is set)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $BADSAD_DATA, else ./data)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs a network)")
    p.add_argument("--progress", action="store_true", help="show per-epoch progress bars")
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")


def cmd_train(args) -> int:
    from .experiments import train_clean

    quick = is_quick() if args.quick is None else args.quick
    print(device_report(get_device(args.device)))
    model, split, metrics = train_clean(
        args.dataset, args.normal_class, args.known_anomaly_class, args.labeled_ratio, args.pollution_ratio,
        args.epochs, args.ae_epochs, args.seed, args.device, quick, args.progress, args.data_root, args.download)
    out = Path(args.out)
    write_json(out / "metrics.json", metrics)
    model.save(out / "model.pt")
    print(f"DeepSAD on {metrics['dataset']}, normal class {metrics['normal_class']}: "
          f"AUC {metrics['auc']:.4f}, miss rate at the 95th percentile {metrics['miss_rate']['95']:.3f} "
          f"({metrics['seconds']:.1f} s on {metrics['device']})")
    print(f"wrote {out / 'metrics.json'} and {out / 'model.pt'}")
    return 0


def _attack_options(p: argparse.ArgumentParser, many: bool = False) -> None:
    """--trigger, --strength, --poison-ratio; with ``many`` the last two take several values (a grid axis)."""
    from .attack import METHODS
    from .triggers import TRIGGERS

    nargs, default_mu, default_rho = ("+", [None], [0.1]) if many else (None, None, 0.1)
    p.add_argument("--trigger", default="corners", choices=TRIGGERS, help="trigger type (default corners)")
    p.add_argument("--strength", type=float, nargs=nargs, default=default_mu,
                   help="trigger strength mu in [0, 1] (default 1; blend 0.2)")
    p.add_argument("--poison-ratio", type=float, nargs=nargs, default=default_rho,
                   help="rho, fraction of normals poisoned (default 0.1)")
    return METHODS


def save_attack_figures(backdoored, split, trigger, strength, metrics, out: Path) -> list[Path]:
    """PNG figures of one attack: triggered examples, score histograms, ASR against strength."""
    import matplotlib.pyplot as plt

    from .io import save_figure
    from .plots import plot_asr_by_strength, plot_score_histograms, plot_triggered_examples
    from .triggers import apply_trigger

    anomalies = split.x_test_anomalous[:512]
    figures = {
        "triggered_examples.png": plot_triggered_examples(
            anomalies[:6], apply_trigger(anomalies[:6], trigger, strength), ("anomaly", "anomaly + trigger")),
        "score_histograms.png": plot_score_histograms(
            backdoored.decision_function(split.x_test_normal), backdoored.decision_function(anomalies),
            backdoored.decision_function(apply_trigger(anomalies, trigger, strength)), metrics["threshold"]["95"],
            f"backdoored DeepSAD ({metrics['method']}), {metrics['dataset']} class {metrics['normal_class']}"),
        "asr_by_strength.png": plot_asr_by_strength(metrics["asr_by_strength"], metrics["miss_rate"]["95"]),
    }
    paths = []
    for name, fig in figures.items():
        paths.append(save_figure(fig, out / name))
        plt.close(fig)
    return paths


def _attack_table(metrics) -> str:
    rows = [("clean model", metrics["auc_clean_model"], metrics["clean_model"]["asr"]["95"],
             metrics["clean_model"]["miss_rate"]["95"]),
            (f"backdoored ({metrics['method']})", metrics["auc_backdoored"], metrics["asr"]["95"],
             metrics["miss_rate"]["95"])]
    lines = [f"{'model':<26}{'clean AUC':>10}{'ASR@95':>9}{'miss@95':>9}"]
    lines += [f"{name:<26}{auc_:>10.3f}{asr:>9.3f}{miss:>9.3f}" for name, auc_, asr, miss in rows]
    return "\n".join(lines)


def _run_attack(args):
    """run_attack with the command line's options: (backdoored, split, trigger, metrics)."""
    from .experiments import run_attack

    quick = is_quick() if args.quick is None else args.quick
    print(device_report(get_device(args.device)))
    return run_attack(args.dataset, args.normal_class, args.method, args.trigger, args.strength, args.poison_ratio,
                      args.labeled_ratio, args.known_anomaly_class, args.epochs, args.ae_epochs, args.seed,
                      args.device, quick, root=args.data_root, download=args.download, progress=args.progress)[1:]


def cmd_attack(args) -> int:
    backdoored, split, trigger, metrics = _run_attack(args)
    out = Path(args.out)
    figures = save_attack_figures(backdoored, split, trigger, metrics["strength"], metrics, out)
    write_json(out / "metrics.json", metrics)
    backdoored.save(out / "backdoored.pt")
    print(_attack_table(metrics))
    print(f"(ASR: triggered test anomalies judged normal; miss: the same without trigger; "
          f"threshold = 95th percentile of held-out normals; {metrics['seconds']:.1f} s)")
    print(f"wrote {out / 'metrics.json'}, {out / 'backdoored.pt'} and {len(figures)} figures")
    return 0


def cmd_defend(args) -> int:
    from .defenses import run_defenses, scenario_for
    from .grid import write_defense_tables

    backdoored, split, trigger, metrics = _run_attack(args)
    scenario = scenario_for(backdoored, split, trigger, metrics["strength"], args.poison_ratio, args.seed)
    metrics["defenses"] = run_defenses(args.defense, scenario)
    out = Path(args.out)
    write_json(out / "metrics.json", metrics)
    table = write_defense_tables([metrics], out)
    write_text(out / "defenses.md", table)
    print(_attack_table(metrics))
    print(table)
    print(f"wrote {out / 'metrics.json'}, {out / 'defenses.csv'} and {out / 'defenses.md'}")
    return 0


def cmd_demo(args) -> int:
    args.dataset, args.method, args.trigger, args.strength, args.poison_ratio = "digits", "badsad", "corners", None, 0.1
    args.labeled_ratio, args.known_anomaly_class, args.epochs, args.ae_epochs = 0.01, None, None, None
    args.quick, args.data_root, args.download, args.progress = True, None, False, False
    print("BadSAD demo: a clean and a backdoored DeepSAD on scikit-learn's 8x8 digits (normal class "
          f"{args.normal_class}, corner trigger on 10% of the normal training images, no label changed).")
    return cmd_attack(args)


def cmd_reproduce(args) -> int:
    from .grid import make_cells, run_grid

    quick = is_quick() if args.quick is None else args.quick
    cells = make_cells(args.datasets, args.classes, args.seeds, args.methods, strengths=args.strength,
                       poison_ratios=args.poison_ratio, defenses=args.defenses, quick=quick, trigger=args.trigger,
                       labeled_ratio=args.labeled_ratio)
    print(f"{len(cells)} cells -> {args.out} ({'quick' if quick else 'full'} mode, {args.jobs} job(s))")
    results = run_grid(cells, args.out, jobs=args.jobs)
    print((Path(args.out) / "summary.md").read_text())
    print(f"wrote {len(results)} cell results, results.csv, summary.csv and summary.md in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="badsad", description="DeepSAD and the BadSAD backdoor, hands-on.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a clean DeepSAD and report its AUC")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("attack", help="train a clean and a backdoored DeepSAD, report AUC and ASR")
    _common(p)
    p.set_defaults(labeled_ratio=0.01, out="runs/attack")
    methods = _attack_options(p)
    p.add_argument("--method", default="badsad", choices=methods, help="ablation switch (default badsad)")
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("defend", help="backdoor a DeepSAD, then run defenses against it and measure them")
    _common(p)
    p.set_defaults(labeled_ratio=0.01, out="runs/defend")
    methods = _attack_options(p)
    p.add_argument("--method", default="badsad", choices=methods, help="the attack to defend against")
    p.add_argument("--defense", nargs="+", default=list(DEFENSES), choices=DEFENSES, metavar="NAME",
                   help=f"one or more of: {', '.join(DEFENSES)} (default all)")
    p.set_defaults(func=cmd_defend)

    p = sub.add_parser("demo", help="the two-minute tour on embedded digits (no download)")
    p.add_argument("--normal-class", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reproduce", help="the paper-style grid: datasets x classes x seeds x methods")
    p.add_argument("--datasets", nargs="+", default=["mnist"])
    p.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--methods", nargs="+", default=["naive", "badsad"])
    p.add_argument("--labeled-ratio", type=float, default=0.01)
    p.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--quick", action="store_true", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--defenses", nargs="+", default=[], choices=DEFENSES, metavar="NAME",
                   help="also run these defenses on every backdoored model (tables in defenses.csv / summary.md)")
    _attack_options(p, many=True)
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, DatasetNotFoundError, RuntimeError) as err:
        print(f"badsad {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
