"""The ``badsad`` command line: train, attack, defend, demo, reproduce, tables, prepare.

Every run is described by one ``RunSpec``, built and validated (with the output folder) before
any training starts. Every expected error ends the command with one sentence on stderr and exit
code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import CheckpointError, DatasetNotFoundError, OutputError
from .io import clean_stale_temps, ensure_output_dir, write_json, write_text
from .registry import DEFENSES, DETECTORS, METHODS, TIERS, TRIGGERS, dataset_names

SCHEDULER_TIMEOUT = 10.0  # seconds a --scheduler has to answer
EXPECTED_ERRORS = (ValueError, DatasetNotFoundError, CheckpointError, OutputError, FloatingPointError, OSError)
STACK_HELP = ("train up to K models at once in one set of kernels (default: 16 on CUDA; 1 on the CPU, where a stack "
              "of 2-4 gains only about 1.1x); each cell records its trainer and stack")


def _quick(args) -> bool:
    from .settings import resolve_quick

    return args.quick if args.quick is not None else resolve_quick(False)


def _settings(args, dataset: str):
    """The training settings of a command: quick or the paper's (digits: its own), epoch overrides applied."""
    from .registry import settings_for

    settings = settings_for(dataset, _quick(args))
    changes = {k: v for k, v in (("epochs", args.epochs), ("ae_epochs", args.ae_epochs)) if v is not None}
    return settings.replace(**changes) if changes else settings


def _mode_options(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=None,
                      help="few epochs, minutes on a CPU (default when BADSAD_QUICK=1 or CI is set)")
    mode.add_argument("--full", dest="quick", action="store_false",
                      help="the paper's settings, 150 + 150 epochs (the default otherwise)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(dataset_names())} (default: digits)")
    p.add_argument("--normal-class", type=int, default=0, help="the normal class, 0-9 (default 0)")
    p.add_argument("--known-anomaly-class", type=int, default=None,
                   help="class of the labeled anomalies (default: normal class + 1)")
    p.add_argument("--labeled-ratio", type=float, default=0.05, help="gamma_l, labeled anomalies (default 0.05)")
    p.add_argument("--pollution-ratio", type=float, default=0.0, help="gamma_p, unlabeled anomalies (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="DeepSAD epochs (default: 150, quick 20)")
    p.add_argument("--ae-epochs", type=int, default=None, help="autoencoder epochs (default: 150, quick 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batch order "
                                                        "(default 0); the same seed gives the same numbers")
    p.add_argument("--detector", default="deepsad", choices=DETECTORS,
                   help="; ".join(f"{d.name}: {d.summary}" for d in DETECTORS.values()) + " (default deepsad)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    _mode_options(p)
    p.add_argument("--data-root", default=None, help="dataset folder (default: $BADSAD_DATA, else ./data)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs a network)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="per-epoch progress bars (default: only when stderr is a terminal, so a log file gets none)")
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")


def _attack_options(p: argparse.ArgumentParser, many: bool = False) -> None:
    """--method, --trigger, --strength, --poison-ratio; with ``many`` the values become grid axes."""
    tiers = "; ".join(f"{m}: tier {TIERS[m]}" for m in METHODS)
    nargs = "+" if many else None
    p.add_argument("--method" + ("s" if many else ""), default=["naive", "badsad"] if many else "badsad",
                   nargs=nargs, choices=METHODS, metavar="METHOD",
                   help=f"attack method(s) ({tiers}); see `python -c 'import badsad_lib.attack as a; "
                        f"help(a)'` (default {'naive badsad' if many else 'badsad'})")
    p.add_argument("--trigger" + ("s" if many else ""), default=["corners"] if many else "corners", nargs=nargs,
                   choices=TRIGGERS, metavar="TRIGGER", help=f"trigger: {', '.join(TRIGGERS)} (default corners)")
    p.add_argument("--strength", type=float, nargs=nargs, default=[None] if many else None,
                   help="trigger strength mu in [0, 1] (default 1; blend 0.2)")
    p.add_argument("--poison-ratio", type=float, nargs=nargs, default=[0.1] if many else 0.1,
                   help="rho, fraction of the unlabeled normal training images poisoned (default 0.1)")
    if not many:
        p.add_argument("--weights", type=float, nargs=3, default=None, metavar=("CONC", "ALIGN", "SEP"),
                       help="weights of the concentration, alignment and separation terms, each >= 0 (default 1 1 1; "
                            "methods that train with an objective)")


@contextmanager
def _output_first(path):
    """Check (creating it) the output folder before anything heavy is imported, so a bad --out fails at once.
    A folder made here is removed again if the command then fails before writing anything into it (a bad
    argument, a refused device, a missing dataset, a late check, Ctrl-C): a refusal leaves nothing behind."""
    made = [p for p in (Path(path), *Path(path).parents) if not p.exists()]  # the leaf first
    out = ensure_output_dir(path)
    try:
        yield out
    except (*EXPECTED_ERRORS, KeyboardInterrupt):
        for folder in made:
            with suppress(OSError):
                folder.rmdir()  # only empty folders go: anything written stays
        raise


def _spec(args, method: str, defenses=()):
    """The command's RunSpec, validated."""
    from .spec import RunSpec

    return RunSpec(args.dataset, args.normal_class, args.seed, method, detector=args.detector,
                   trigger=getattr(args, "trigger", "corners"), strength=getattr(args, "strength", None),
                   poison_ratio=getattr(args, "poison_ratio", 0.0), labeled_ratio=args.labeled_ratio,
                   known_anomaly_class=args.known_anomaly_class, pollution_ratio=args.pollution_ratio,
                   settings=_settings(args, args.dataset), defenses=tuple(defenses),
                   weights=getattr(args, "weights", None))


@contextmanager
def _one_run(args, method: str, defenses=()):
    """The command's (RunSpec, output folder), everything that can fail before training checked first (the
    folder, the arguments, the device, the data); a folder the command made and left empty is removed."""
    with _output_first(args.out) as out:
        spec = _spec(args, method, defenses)
        from .data import load_dataset
        from .device import device_report, get_device

        device = get_device(args.device)
        clean_stale_temps(out)
        load_dataset(spec.dataset, root=args.data_root, download=args.download)
        _note(args, device_report(device, quick=spec.settings.name != "paper"))
        _note(args, f"run: {spec.describe()}")
        yield spec, out


def _progress(args) -> bool:
    """Progress bars: as asked (--progress, -v; none with -q), else only on a terminal (a log file would collect
    every redraw)."""
    if getattr(args, "progress", None) is not None:
        return args.progress
    if getattr(args, "verbose", False) or getattr(args, "quiet", False):
        return args.verbose
    return sys.stderr.isatty()


def _note(args, text: str) -> None:
    """An informational line (what runs where, what was written); -q leaves it out, results are always printed."""
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def _run(args, spec):
    """Train and measure ``spec`` on one thread, as a grid cell does: the same run gives the same numbers
    (thresholds included) from the command line, the grid and any core count."""
    from .experiments import run
    from .grid import one_thread

    with one_thread():
        return run(spec, root=args.data_root, download=args.download, device=args.device, progress=_progress(args))


def cmd_train(args) -> int:
    with _one_run(args, "clean") as (spec, out):
        result = _run(args, spec)
        metrics = result.metrics
        result.clean.save(out / "model.pt")  # the model first: metrics.json never claims a model that is not there
        write_json(out / "metrics.json", metrics)
    print(f"DeepSAD on {metrics['dataset']}, normal class {metrics['normal_class']}: "
          f"AUC {metrics['auc']:.4f}, miss rate at the 95th percentile {metrics['miss_rate']['95']:.3f} "
          f"({metrics['seconds']:.1f} s on {metrics['device']})")
    _note(args, f"wrote {out / 'model.pt'} and {out / 'metrics.json'}")
    return 0


def save_attack_figures(result, out: Path) -> list[Path]:
    """PNG figures of one attack: triggered examples, score histograms, ASR against strength."""
    import matplotlib.pyplot as plt

    from .io import save_figure
    from .plots import plot_asr_by_strength, plot_score_histograms, plot_triggered_examples
    from .triggers import apply_trigger

    split, model, metrics = result.split, result.backdoored, result.metrics
    anomalies = split.x_test_anomalous[:512]
    stamped = apply_trigger(anomalies, result.trigger, result.spec.strength)
    figures = {
        "triggered_examples.png": plot_triggered_examples(anomalies[:6], stamped[:6], ("anomaly", "anomaly + trigger"),
                                                          title=f"{result.spec.trigger} trigger, mu = "
                                                                f"{result.spec.strength:g}"),
        "score_histograms.png": plot_score_histograms(
            model.decision_function(split.x_test_normal), model.decision_function(anomalies),
            model.decision_function(stamped), metrics["threshold"]["95"],
            f"backdoored DeepSAD ({metrics['method']}), {metrics['dataset']} class {metrics['normal_class']}"),
        "asr_by_strength.png": plot_asr_by_strength(metrics["asr_by_strength"], metrics["miss_rate"]["95"],
                                                    normal_pass_by_strength=metrics["normal_pass_by_strength"]),
    }
    paths = []
    for name, fig in figures.items():
        paths.append(save_figure(fig, out / name))
        plt.close(fig)
    return paths


def _attack_table(metrics) -> str:
    rows = [("clean model", metrics["auc_clean_model"], metrics["clean_model"]["asr"]["95"],
             metrics["clean_model"]["conditional_asr"]["95"], metrics["clean_model"]["miss_rate"]["95"]),
            (f"backdoored ({metrics['method']})", metrics["auc_backdoored"], metrics["asr"]["95"],
             metrics["conditional_asr"]["95"], metrics["miss_rate"]["95"])]

    def f(v):
        return f"{'n/a':>10}" if v is None else f"{v:>10.3f}"
    lines = [f"{'model':<30}{'clean AUC':>10}{'ASR@95':>10}{'cond.ASR':>10}{'miss@95':>10}"]
    lines += [f"{name:<30}{f(a)}{f(b)}{f(c)}{f(d)}" for name, a, b, c, d in rows]
    return "\n".join(lines)


def cmd_attack(args) -> int:
    with _one_run(args, args.method) as (spec, out):
        result = _run(args, spec)
        metrics = result.metrics
        result.backdoored.save(out / "backdoored.pt")
        figures = save_attack_figures(result, out)
        write_json(out / "metrics.json", metrics)  # last: it claims the model and figures above
    print(_attack_table(metrics))
    print(f"(attacker tier {metrics['tier']}; ASR: triggered test anomalies judged normal; cond.ASR: the same among "
          f"anomalies caught without the trigger; miss: untriggered anomalies judged normal; threshold = 95th "
          f"percentile of held-out normals; {metrics['seconds']:.1f} s)")
    _note(args, f"wrote {out / 'backdoored.pt'}, {len(figures)} figures and {out / 'metrics.json'}")
    return 0


def cmd_defend(args) -> int:
    with _one_run(args, args.method, args.defense) as (spec, out):
        from .summaries import csv_text, defense_markdown

        result = _run(args, spec)  # trains, attacks and runs the spec's defenses, on one thread
        metrics = result.metrics
        rows = result.cell.defense_rows()
        write_text(out / "defenses.csv", csv_text(rows))
        table = defense_markdown(rows)
        write_text(out / "defenses.md", table)
        write_json(out / "metrics.json", metrics)  # last: it claims the tables above
    print(_attack_table(metrics))
    print(table)
    _note(args, f"wrote {out / 'defenses.csv'}, {out / 'defenses.md'} and {out / 'metrics.json'}")
    return 0


def cmd_demo(args) -> int:
    args.dataset, args.method, args.trigger, args.strength, args.poison_ratio = "digits", "badsad", "corners", None, 0.1
    args.labeled_ratio, args.known_anomaly_class, args.epochs, args.ae_epochs = 0.01, None, None, None
    args.pollution_ratio, args.detector = 0.0, "deepsad"
    args.quick, args.data_root, args.download, args.progress = True, None, False, None
    _note(args, "BadSAD demo: a clean and a backdoored DeepSAD on scikit-learn's 8x8 digits (normal class "
          f"{args.normal_class}, corner trigger on 10% of the normal training images, no label changed; "
          "the attacker also runs the training and trains on triggered synthetic views).")
    return cmd_attack(args)


def cmd_reproduce(args) -> int:
    with _output_first(args.out) as out:
        from .grid import make_specs, reevaluate_grid, run_grid
        from .registry import settings_for

        settings = {d: settings_for(d, _quick(args)) for d in args.datasets}
        specs = [s for d in args.datasets for s in make_specs(
            [d], args.classes, args.seeds, args.methods, strengths=args.strength, poison_ratios=args.poison_ratio,
            triggers=args.triggers, defenses=tuple(args.defenses), labeled_ratio=args.labeled_ratio,
            settings=settings[d])]
    where = f"the Dask scheduler at {args.scheduler}" if args.scheduler else f"{args.jobs} job(s)"
    _note(args, f"{len(specs)} cells -> {out} ({', '.join(sorted({s.settings.name for s in specs}))} settings, "
          f"{where}, one thread each)")
    with _dask_executor(args.scheduler) as executor:
        if args.reevaluate:
            results = reevaluate_grid(specs, out, executor=executor, jobs=args.jobs, progress=_progress(args))
        else:
            results = run_grid(specs, out, executor=executor, jobs=args.jobs, progress=_progress(args),
                               stack=args.stack)
    print((out / "summary.md").read_text())
    _note(args, f"wrote {len(results)} cell results, results.csv and summary.md in {out}")
    return 0


@contextmanager
def _dask_executor(address: str | None):
    """An executor on the Dask scheduler at ``address`` (None: no executor, local jobs)."""
    timeout = SCHEDULER_TIMEOUT
    if not address:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs dask.distributed: pip install 'badsad-course[cluster]'") from None
    try:
        client = Client(address, timeout=timeout)
    except (OSError, ValueError, TypeError) as err:
        raise OSError(f"no Dask scheduler answered at --scheduler {address!r} within {timeout:g} s "
                      f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no message'})") from None
    with client:
        yield client.get_executor()


def cmd_tables(args) -> int:
    if args.names:
        ensure_output_dir(args.work)  # first: a bad --work fails before torch is imported
    from .tables import TABLES, main_tables, manifest

    if args.list or not args.names and not args.readme:
        entries = manifest()
        for name, table in TABLES.items():
            made = entries.get(name)
            print(f"{name:20s} {table.description}")
            print(f"{'':20s} {'made ' + made['made'] + ' at ' + made['commit'][:10] if made else 'not made yet'}")
        return 0
    unknown = [n for n in args.names if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(unknown)}: choose from {', '.join(TABLES)}")
    readme = Path(args.readme) if args.readme else None
    if readme is not None:
        from .readme import check_readme

        check_readme(readme)  # before any table is made
    with _dask_executor(args.scheduler) as executor:
        done = main_tables(args.names, args.work, args.jobs, executor=executor, stack=args.stack,
                           reevaluate=args.reevaluate)
    if readme is not None:
        from .readme import check_readme, render_readme

        write_text(readme, render_readme(check_readme(readme)))
    print(f"made {', '.join(done) or 'no table'}" + (f"; re-rendered {readme}" if readme else ""))
    return 0


def cmd_grade(args) -> int:
    from .grading import format_grade, grade_notebook

    summaries = []
    for notebook in args.notebooks:
        _note(args, f"running {notebook} top to bottom in a fresh kernel (quick mode) ...")
        summaries.append(grade_notebook(notebook, timeout=args.timeout))
        print(json.dumps(summaries[-1]) if args.json else format_grade(summaries[-1]), flush=True)
    return 0


def cmd_nbgrader(args) -> int:
    from .grading import export_nbgrader

    written = export_nbgrader(args.out, args.notebooks or None)
    print(f"wrote {len(written)} lessons under {Path(args.out) / 'source'}: in {args.out}, `nbgrader generate_assignment "
          f"lesson01` makes the learners' copy and `nbgrader autograde lesson01` scores the submissions")
    return 0


def cmd_site(args) -> int:
    from .site import build_site

    _note(args, "running every solution top to bottom in quick mode, then writing its page ...")
    index = build_site(args.out, args.notebooks or None, timeout=args.timeout, progress=lambda line: _note(args, line))
    print(f"wrote {index} and one page per lesson; open it in a browser, or serve the folder")
    return 0


def cmd_prepare(args) -> int:
    """Train and cache every model the lessons use, so a class starts with a warm cache."""
    from . import course

    quick = _quick(args)
    ensure_output_dir(course.cache_dir(), "model cache", "set BADSAD_CACHE to a writable folder")  # before training
    for dataset in args.datasets:
        lesson = course.Lesson(dataset, quick=quick)
        print(f"{dataset}: {lesson.settings.name} settings, cache {course.cache_dir()}")
        course.clean_detector(lesson)
        for method in ("naive", "badsad"):
            course.backdoored_detector(lesson, method)
    print("lesson models cached")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="badsad", description="DeepSAD and the BadSAD backdoor, hands-on.")
    parser.add_argument("--version", action="version", version=f"badsad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a clean DeepSAD and report its AUC")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("attack", help="train a clean and a backdoored DeepSAD, report AUC and ASR")
    _common(p)
    p.set_defaults(labeled_ratio=0.01, out="runs/attack")
    _attack_options(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("defend", help="backdoor a DeepSAD, then run defenses against it and measure them")
    _common(p)
    p.set_defaults(labeled_ratio=0.01, out="runs/defend")
    _attack_options(p)
    p.add_argument("--defense", nargs="+", default=list(DEFENSES), choices=DEFENSES, metavar="NAME",
                   help=f"one or more of: {', '.join(DEFENSES)} (default all)")
    p.set_defaults(func=cmd_defend)

    p = sub.add_parser("demo", help="the one-minute tour on embedded digits (no download)")
    p.add_argument("--normal-class", type=int, default=0, help="the normal class, 0-9 (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batch order (default 0)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("reproduce", help="a grid: datasets x classes x seeds x methods x triggers x strengths x ratios")
    p.add_argument("--datasets", nargs="+", default=["mnist"])
    p.add_argument("--classes", nargs="+", type=int, default=None,
                   help="normal classes (default: every class of each dataset)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--labeled-ratio", type=float, default=0.01)
    p.add_argument("--jobs", type=int, default=1, help="local worker processes, one thread each (default 1)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the cells on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786) "
                        "instead of local jobs; needs the cluster extra")
    p.add_argument("--stack", type=int, default=None, metavar="K",
                   help=STACK_HELP)
    p.add_argument("--reevaluate", action="store_true",
                   help="train nothing: measure every cell again from the models kept under --out/models")
    _mode_options(p)
    p.add_argument("--out", required=True)
    p.add_argument("--defenses", nargs="+", default=[], choices=DEFENSES, metavar="NAME",
                   help="also run these defenses on every backdoored model")
    _attack_options(p, many=True)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("tables", help="regenerate the result tables shipped in badsad_lib/results (see --list)")
    p.add_argument("names", nargs="*", help="tables to make (default: list them)")
    p.add_argument("--list", action="store_true", help="list the tables, what they hold and when they were made")
    p.add_argument("--jobs", type=int, default=1, help="local worker processes, one thread each (default 1)")
    p.add_argument("--work", default="runs/tables", help="folder for the grids' cells and models (resumable)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the tables' cells on the Dask cluster whose scheduler is at ADDRESS")
    p.add_argument("--stack", type=int, default=None, metavar="K",
                   help=STACK_HELP)
    p.add_argument("--reevaluate", action="store_true",
                   help="train nothing: measure every cell again from the models kept under --work (a new metric "
                        "costs minutes, not a grid)")
    p.add_argument("--readme", default=None, help="re-render this README's table blocks from the CSVs")
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("grade", help="score filled-in lessons: run each top to bottom and read its checks' verdicts")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="lesson notebooks (.ipynb) to grade")
    p.add_argument("--timeout", type=int, default=1200, help="seconds any one cell may take (default 1200)")
    p.add_argument("--json", action="store_true", help="one JSON line per notebook instead of the text report")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("nbgrader", help="write the lessons as an nbgrader course (the checks as its autograded tests)")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="solution notebooks (default: solutions/*.ipynb)")
    p.add_argument("--out", required=True, help="the nbgrader course folder (source/lessonNN/ is written in it)")
    p.set_defaults(func=cmd_nbgrader)

    p = sub.add_parser("site", help="the course as a static site: run every solution in quick mode, export each "
                                    "to HTML with its figures, write an index")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="notebooks to build (default: solutions/*.ipynb)")
    p.add_argument("--out", default="site", help="folder for index.html and the pages (default site)")
    p.add_argument("--timeout", type=int, default=1200, help="seconds any one cell may take (default 1200)")
    p.set_defaults(func=cmd_site)

    p = sub.add_parser("prepare", help="train and cache the lessons' models (before a workshop)")
    p.add_argument("--datasets", nargs="+", default=["mnist"], help="mnist (with BADSAD_DATA) and/or digits")
    _mode_options(p)
    p.set_defaults(func=cmd_prepare)
    for command in sub.choices.values():
        chatter = command.add_mutually_exclusive_group()
        chatter.add_argument("-q", "--quiet", action="store_true", help="results only: no set-up lines, no progress")
        chatter.add_argument("-v", "--verbose", action="store_true", help="progress bars even when not on a terminal")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        parser.error(f"--jobs {args.jobs} must be at least 1")
    if getattr(args, "stack", None) is not None and args.stack < 1:
        parser.error(f"--stack {args.stack} must be at least 1 (1: one model at a time)")
    try:
        return args.func(args)
    except EXPECTED_ERRORS as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"badsad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"badsad {args.command}: interrupted; finished results are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
