"""What the lesson notebooks share: the first cell's set-up, the lesson's data split, trained
detectors cached on disk (so a lesson and its solution, or a rerun, train each model once), the
learner's own functions plugged into training, and checks that speak to a learner.

The cache lives in ``BADSAD_CACHE`` (default ``~/.cache/badsad``; on Colab, a mounted Google
Drive's ``MyDrive/badsad-cache`` so that the next notebook finds the models). A cached model's file
name holds its run specification's digest, a hash of this library's source code and, when the
learner's own functions trained it, a hash of theirs: editing anything can never serve a stale model.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .data import OneClassSplit, load_dataset
from .errors import DatasetNotFoundError
from .cache import identity, load_trained_for, save_trained_for
from .provenance import source_hash
from .deepsad import DeepSAD, center_from, deepsad_loss
from .device import device_report, get_device
from .experiments import backdoor_metrics, detection_metrics, make_detector, split_of, train_attacked
from .io import clean_stale_temps
from .registry import settings_for
from .settings import TrainingSettings, resolve_quick
from .spec import RunSpec
from .summaries import format_defenses, format_table, mean_by  # noqa: F401  (the lessons' tables)
from .tables import results_table  # noqa: F401

DRIVE = Path("/content/drive/MyDrive")
# Measured on a 2-core CPU (see the README's Speed section): what a cache miss costs, for the progress line.
TRAINING_SECONDS = {("mnist", "quick"): 30, ("mnist", "paper"): 420, ("digits", "digits"): 6}


def on_colab() -> bool:
    return "google.colab" in sys.modules


class LessonCheckFailed(AssertionError):
    """A measured quantity in a lesson is not what it should be; shown as its message, without a traceback."""

    def _render_traceback_(self):  # IPython shows this instead of a traceback
        return [f"Check failed: {self}"]


def expect(condition: bool, message: str) -> None:
    """Stop the lesson with ``message`` (what went wrong and what to do) unless ``condition`` holds."""
    if not condition:
        raise LessonCheckFailed(message)


@dataclass
class Lesson:
    """The data and settings every model of a lesson uses."""
    dataset: str
    normal_class: int = 0
    labeled_ratio: float = 0.01
    seed: int = 0
    quick: bool = True
    device: torch.device = field(default_factory=get_device)

    @property
    def settings(self) -> TrainingSettings:
        return settings_for(self.dataset, self.quick)

    def spec(self, method: str = "clean", **attack) -> RunSpec:
        """The run specification of one of the lesson's models."""
        return RunSpec(self.dataset, self.normal_class, self.seed, method, labeled_ratio=self.labeled_ratio,
                       settings=self.settings, **attack)

    @cached_property
    def split(self) -> OneClassSplit:
        return split_of(self.spec(), download=on_colab())


_REPORTED: dict = {}


def setup(quick: bool = True) -> bool:
    """The first cell's report: the device, quick or full mode, and where models are cached.

    ``quick`` is the notebook's ``QUICK`` switch; ``BADSAD_QUICK`` (or ``CI``) overrides it. On Colab
    with Google Drive mounted, models are cached on Drive so that the next lesson finds them.
    Returns the mode in force (True = quick).
    """
    mode = resolve_quick(quick)
    print(device_report(get_device(), quick=mode))
    overridden = " (BADSAD_QUICK or CI overrides the QUICK switch)" if mode != bool(quick) else ""
    print(f"Mode: {'quick' if mode else 'full'}{overridden}: " + (
        "few epochs at a larger learning rate, minutes on a CPU. QUICK = False in the first cell gives the "
        "paper's settings." if mode else "the paper's settings (150 + 150 epochs). QUICK = True in the first "
                                         "cell trains in minutes instead."))
    if on_colab() and not os.environ.get("BADSAD_CACHE") and DRIVE.is_dir():
        os.environ["BADSAD_CACHE"] = str(DRIVE / "badsad-cache")
    drive_hint = on_colab() and not str(cache_dir()).startswith(str(DRIVE))
    print(f"Trained models are cached in {cache_dir()}" + (
        " (mount Google Drive before this cell to keep them for the next lesson)" if drive_hint else ""))
    _REPORTED["quick"] = mode
    return mode


def start(preferred: str = "mnist", quick: bool = True, normal_class: int = 0, labeled_ratio: float = 0.01,
          seed: int = 0) -> Lesson:
    """The lesson's data: ``preferred`` if it is available (downloaded on Colab), else the embedded digits.

    Reports the device and mode first unless ``setup`` already did for this mode.
    """
    mode = resolve_quick(quick)
    if _REPORTED.get("quick") != mode:
        setup(quick)
    dataset = preferred
    try:
        load_dataset(preferred, download=on_colab())
    except DatasetNotFoundError:
        from .data import data_root

        dataset = "digits"
        print(f"{preferred.upper()} is not available here (not in {data_root()}).\n"
              "Falling back to scikit-learn's 8x8 digits, which ship with the library: every step works the same, "
              "the images are just smaller. Set BADSAD_DATA to a folder holding MNIST to use it.")
    lesson = Lesson(dataset, normal_class, labeled_ratio, seed, mode, get_device())
    print(f"Data: {dataset}, normal class {normal_class}, {lesson.split.counts()}")
    return lesson


def _progress_bars() -> bool:
    """Per-epoch bars in a notebook or on a terminal; none into a log file (``badsad prepare > log``)."""
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def cache_dir() -> Path:
    return Path(os.environ.get("BADSAD_CACHE") or Path.home() / ".cache" / "badsad")


def function_digest(fn) -> str:
    """A short hash of a function's source (its bytecode and constants when the source is unavailable)."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        code = fn.__code__
        text = repr((code.co_code, code.co_consts, code.co_names))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _cached(spec: RunSpec, train, learner: dict | None = None, what: str = "model") -> DeepSAD:
    """The model of ``spec`` from the cache, or ``train()``-ed, announced, and cached."""
    learner = {k: v for k, v in (learner or {}).items() if v is not None}
    extra = "".join(f"_{name}-{fn if isinstance(fn, str) else function_digest(fn)}" for name, fn in sorted(learner.items()))
    folder = cache_dir()
    path = folder / f"{spec.model_key}_{source_hash()[:10]}{extra}.pt"
    wanted = identity(run=spec.canonical(), code=source_hash(), learner=extra)
    model = load_trained_for(path, wanted, device=get_device())
    if model is not None:
        print(f"{what}: loaded from the cache ({path.name})")
        return model
    seconds = TRAINING_SECONDS.get((spec.dataset, spec.settings.name))
    estimate = f", about {seconds * (2 if spec.attacked else 1)} s on a 2-core CPU" if seconds else ""
    print(f"{what}: training ({spec.describe()}{estimate}{'; progress below' if _progress_bars() else ''})...", flush=True)
    start = time.perf_counter()
    model = train()
    print(f"{what}: trained in {time.perf_counter() - start:.0f} s and cached", flush=True)
    if folder.is_dir():
        clean_stale_temps(folder)
    save_trained_for(model, path, wanted)
    return model


def clean_detector(lesson: Lesson, callback=None, loss=None, center=None) -> DeepSAD:
    """DeepSAD trained on the lesson's split (from the cache when it was trained before).

    ``callback`` (e.g. ``widgets.LiveLoss()``) sees every epoch's loss; a cached model replays its
    history. ``loss(dist, y, eta)`` and ``center(codes, eps)``, when they are the learner's own
    functions, train the model in place of the library's ``deepsad_loss`` and ``center_from``.
    """
    s, spec = lesson.split, lesson.spec()
    loss = None if loss is deepsad_loss else loss
    center = None if center is center_from else center
    objective = None
    if loss is not None:
        eta = spec.settings.eta

        def objective(net, c, x, y, idx):
            return loss(((net(x) - c) ** 2).sum(dim=1), y, eta)
    rule = None if center is None else (lambda codes: center(codes, 0.1))

    def train():
        model = make_detector(spec, lesson.device, progress=_progress_bars())
        return model.fit(s.x_train, s.semi_targets, X_val=s.x_val, callback=callback, objective=objective,
                         center_rule=rule)
    who = "clean DeepSAD" + (" (your loss and center rule)" if loss and center else " (your loss)" if loss else
                             " (your center rule)" if center else "")
    model = _cached(spec, train, {"loss": loss, "center": center}, who)
    if callback is not None and not model.fit_seconds_:
        for phase, history in (("autoencoder", model.ae_history_), ("DeepSAD", model.history_)):
            for epoch, value in enumerate(history, 1):
                callback(phase, epoch, value)
    return model


def backdoored_detector(lesson: Lesson, method: str = "badsad", strength: float | None = None,
                        poison_ratio: float = 0.1, trigger_name: str = "corners", terms=None, combine=None,
                        weights=None, trigger=None):
    """A DeepSAD trained by the attacker on the lesson's split (cached).

    ``terms``: an ``attack.AttackTerms`` holding the learner's term functions, which then train it;
    ``combine``: the learner's mini-batch objective (``attack.BadSADObjective``'s ``combine``), or None;
    ``weights``: the terms' weights (concentration, alignment, separation); ``trigger``: a ``triggers.Trigger``
    of the learner's design (``custom_trigger``) in place of ``trigger_name``'s.
    Returns (model, trigger, strength, indices of the triggered training images).
    """
    from .attack import AttackTerms

    spec = lesson.spec(method, trigger=trigger_name, strength=strength, poison_ratio=poison_ratio, weights=weights)
    library = AttackTerms()
    custom = {} if terms is None else {name: getattr(terms, name) for name in ("concentration", "separation", "mmd")
                                       if getattr(terms, name) is not getattr(library, name)}
    if combine is not None:
        custom["combine"] = combine
    if trigger is not None:
        custom["trigger"] = hashlib.sha1(trigger.mask.numpy().tobytes() + trigger.pattern.numpy().tobytes()).hexdigest()[:10]
    result = {}

    def train():
        model, result["trigger"], result["poisoned"] = train_attacked(spec, lesson.split, lesson.device, progress=_progress_bars(),
                                                                      terms=terms, combine=combine, trigger=trigger)
        return model
    yours = ["your objective" if combine is not None else "your terms" if set(custom) - {"trigger"} else "",
             "your trigger" if trigger is not None else ""]
    who = f"backdoored DeepSAD ({', '.join([method] + [y for y in yours if y])})"
    model = _cached(spec, train, custom, who)
    if "trigger" not in result:
        from .attack import poisoned_training_set
        from .triggers import trigger_for

        result["trigger"] = trigger_for(lesson.split.x_train, trigger_name) if trigger is None else trigger
        result["poisoned"] = poisoned_training_set(spec, lesson.split, result["trigger"])[2]
    return model, result["trigger"], spec.strength, result["poisoned"]


def training_batches(lesson: Lesson, model: DeepSAD, batch_size: int = 128, seed: int = 0) -> list:
    """One epoch of the lesson's training set as shuffled mini-batches [(x (B, C, H, W), y (B,)), ...] on the
    model's device (``seed`` picks the order), for a training loop written by hand (lesson 01)."""
    s = lesson.split
    order = torch.randperm(len(s.x_train), generator=torch.Generator().manual_seed(seed))
    x, y = s.x_train[order].to(model.device), s.semi_targets[order].to(model.device)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def collapse_to_center(model: DeepSAD) -> DeepSAD:
    """The trivial solution that bias terms allow: a copy of ``model`` whose phi ignores its input.

    The network gets bias terms (what DeepSAD's rules forbid), its last layer's weights are set to
    0 and its bias to c, so phi(x) = c for every x: DeepSAD loss 0 on unlabeled data, and every
    score is 0 (AUC 0.5). A bias-free network cannot do this, because c has no zero coordinate.
    """
    from .networks import build_encoder, place

    collapsed = model.copy()
    net = place(build_encoder(model.dataset, bias=True), model.device)
    net.load_state_dict(model.net_.state_dict(), strict=False)
    last = net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(model.c_)
    collapsed.bias, collapsed.net_ = True, net.eval()
    return collapsed


def attack_row(lesson: Lesson, clean: DeepSAD, backdoored: DeepSAD, trigger, strength: float,
               poison_ratio: float) -> dict:
    """One row of the trade-off table, measured on the lesson's test split (at tau_95)."""
    clean_m = backdoor_metrics(clean, lesson.split, trigger, strength, strengths=())
    bad = backdoor_metrics(backdoored, lesson.split, trigger, strength, strengths=())
    return {"strength": strength, "poison_ratio": poison_ratio, "auc_clean_model": clean_m["auc"],
            "auc_backdoored": bad["auc"], "asr_95": bad["asr"]["95"], "miss_rate_95": bad["miss_rate"]["95"],
            "conditional_asr_95": bad["conditional_asr"]["95"], "clean_model_asr_95": clean_m["asr"]["95"]}


def _means(rows, by, columns):
    return mean_by(rows, by=by, columns=columns)


def control_findings(rows: list[dict]) -> str:
    """Sentences on the controls (rows of ``mnist_controls``, optionally with ``mnist_unconfounded``'s), every
    number read from the rows."""
    strengths = [c for c in rows[0] if c.startswith("asr_mu")] if rows else []
    for r in rows:
        r["run"] = r["method"] + (f" rho={float(r['poison_ratio']):g}" if r["method"] == "badsad" else "")
        r["best_strength_asr"] = max(float(r[c]) for c in strengths) if strengths else None
    m = _means(rows, "run", ("asr_95", "conditional_asr_95", "miss_rate_95", "auc_backdoored", "auc_clean_model",
                             "best_strength_asr", "triggered_normal_pass_95"))
    out = []
    if "badsad rho=0.1" in m and "badsad rho=0" in m:
        full, views = m["badsad rho=0.1"], m["badsad rho=0"]
        out.append(f"- Views alone (badsad, rho = 0, no poisoned dataset image): ASR {views['asr_95']:.3f} at the "
                   f"training strength, against {full['asr_95']:.3f} with 10% of the normals poisoned.")
        if views["best_strength_asr"] is not None:
            out.append(f"- At the best of the test strengths mu in {{{', '.join(c[6:] for c in strengths)}}}, taken "
                       f"per class: {views['best_strength_asr']:.3f} with the views alone, "
                       f"{full['best_strength_asr']:.3f} with 10% poisoned.")
        if views["triggered_normal_pass_95"] is not None and full["triggered_normal_pass_95"] is not None:
            out.append(f"- Clean test normals carrying the trigger that still pass tau_95: "
                       f"{views['triggered_normal_pass_95']:.3f} with the views alone, "
                       f"{full['triggered_normal_pass_95']:.3f} with 10% poisoned"
                       + (" (the poisoned normals make the trigger an override that keeps normal images normal)."
                          if full["triggered_normal_pass_95"] > views["triggered_normal_pass_95"] + 0.5 else "."))
    if "outlier_exposure" in m:
        oe = m["outlier_exposure"]
        out.append(f"- Outlier exposure (views pushed away, no trigger anywhere): ASR {oe['asr_95']:.3f} (miss rate "
                   f"{oe['miss_rate_95']:.3f}); clean AUC {oe['auc_backdoored']:.3f} against {oe['auc_clean_model']:.3f} "
                   f"for plain DeepSAD" + (f" and {m['badsad rho=0.1']['auc_backdoored']:.3f} for BadSAD."
                                            if "badsad rho=0.1" in m else "."))
    for run, label in (("data_only", "Data only (triggered views written into the data, plain DeepSAD loss)"),
                       ("data_only_contrast", "Data only with contrast (the same views also written untriggered, "
                                              "labeled anomalous; plain DeepSAD loss)"),
                       ("label_preserving", "Label-preserving (mild, class-keeping views, full objective)"),
                       ("label_preserving_pull", "Label-preserving without separation (mild views, concentration "
                                                 "and alignment only)")):
        if run in m:
            out.append(f"- {label}: ASR {m[run]['asr_95']:.3f}, conditional ASR {m[run]['conditional_asr_95']:.3f}, "
                       f"miss rate {m[run]['miss_rate_95']:.3f}, clean AUC {m[run]['auc_backdoored']:.3f}.")
    return "\n".join(out)


def defense_findings(rows: list[dict]) -> str:
    """Sentences on a defense grid (rows of ``mnist_defenses``), every number read from the rows."""
    cols = ("asr_before", "asr_after", "auc_before", "auc_after", "der", "false_alarm_after", "tpr", "fpr", "mask_share",
            "flagged")
    m = _means(rows, ("method", "trigger", "defense"), cols)
    out = []

    def get(method, trigger, defense):
        return m.get((method, trigger, defense))
    for trigger in ("corners", "blend"):
        r = get("badsad", trigger, "preprocess")
        if r:
            out.append(f"- Erasing the corners, BadSAD with the {trigger} trigger: ASR {r['asr_before']:.3f} -> "
                       f"{r['asr_after']:.3f}.")
    for family, name in (("attack-family", "reverse_trigger"), ("distinct (jigsaw)", "reverse_trigger_distinct")):
        parts = []
        for method, trigger in (("badsad", "corners"), ("badsad", "blend"), ("naive", "corners")):
            r = get(method, trigger, name)
            if r and r["flagged"] is not None:
                parts.append(f"{method}/{trigger} {round(r['flagged'] * r['cells'])} of {r['cells']} "
                             f"(mask {100 * r['mask_share']:.1f}% of the image)")
        if parts:
            out.append(f"- Reverse-engineering with {family} surrogates flags " + ", ".join(parts) + ".")
    for defense in ("fine_tuning", "bn_recalibration", "fine_pruning", "strip"):
        r = get("badsad", "corners", defense)
        if r and r["asr_after"] is not None:
            out.append(f"- {defense}, BadSAD/corners: ASR {r['asr_before']:.3f} -> {r['asr_after']:.3f}, AUC "
                       f"{r['auc_before']:.3f} -> {r['auc_after']:.3f}, false alarms after {r['false_alarm_after']:.3f}.")
    r = get("badsad", "corners", "spectral")
    if r and r["tpr"] is not None:
        out.append(f"- Spectral signatures (ratio estimated), BadSAD/corners: TPR {r['tpr']:.3f} against FPR {r['fpr']:.3f}.")
    return "\n".join(out)


REPAIRS = ("fine_tuning", "bn_recalibration", "fine_pruning", "preprocess", "reverse_trigger", "reverse_trigger_distinct",
           "strip")


def strongest_defense(table: str = "mnist_defenses", method: str = "badsad") -> tuple[str, float]:
    """(name, mean DER) of the defense with the highest mean DER against ``method`` in a shipped defense grid,
    both triggers together: the one the capstone's attack must get past."""
    rows = [r for r in results_table(table) if r["method"] == method and r["defense"] in REPAIRS]
    m = mean_by(rows, by="defense", columns=("der",))
    name = max(m, key=lambda k: m[k]["der"])
    return name, m[name]["der"]


def capstone(lesson: Lesson, defense: str, trigger="corners", strength: float | None = None, poison_ratio: float = 0.1,
             weights=None, method: str = "badsad") -> dict:
    """Lesson 04's capstone: train the attack you designed on the lesson's split (cached like every lesson model) and
    measure it against ``defense`` with the code of the lesson's table.

    ``trigger``: a trigger's name or a ``triggers.custom_trigger(mask, pattern)``; ``strength``, ``poison_ratio``,
    ``weights`` (concentration, alignment, separation) and ``method``: the training change. The grade: the clean
    models' and yours' AUC, the ASR@95 before and after the defense, its DER and false alarms after, and two
    verdicts: ``stealthy`` (your model's clean AUC at most 2 points below the clean model's, the victim's own check)
    and ``past_the_defense`` (stealthy, and ASR@95 still >= .5 after the defense)."""
    from . import defenses
    from .triggers import Trigger

    custom = trigger if isinstance(trigger, Trigger) else None
    model, trig, mu, _ = backdoored_detector(lesson, method, strength=strength, poison_ratio=poison_ratio,
                                             trigger_name="corners" if custom else trigger, weights=weights,
                                             trigger=custom)
    spec = lesson.spec(method, trigger="corners" if custom else trigger, strength=mu, poison_ratio=poison_ratio,
                       weights=weights)
    clean_auc = detection_metrics(clean_detector(lesson), lesson.split)["auc"]
    r = defenses.run_defense(defense, defenses.scenario_for(spec, lesson.split, model, trigger=trig)).to_dict()
    stealthy = r["auc_before"] >= clean_auc - 0.02
    what = f"{method}, {'your trigger' if custom else trig.name} at mu {mu:g}, rho {poison_ratio:g}" + (
        "" if spec.weights is None else ", weights " + "/".join(f"{w:g}" for w in spec.weights))
    return {"design": what, "defense": defense, "auc_clean_model": clean_auc, "auc_backdoored": r["auc_before"],
            "asr_before": r["asr_before"], "asr_after": r["asr_after"], "der": r["der"],
            "false_alarm_after": r["false_alarm_after"], "stealthy": stealthy,
            "past_the_defense": bool(stealthy and r["asr_after"] is not None and r["asr_after"] >= 0.5)}


def format_capstone(grade: dict) -> str:
    """The capstone's grade as a few lines."""
    g = grade
    return "\n".join([
        f"design: {g['design']}; defense: {g['defense']}",
        f"clean AUC {g['auc_backdoored']:.3f} (the clean model's {g['auc_clean_model']:.3f}): "
        f"{'passes' if g['stealthy'] else 'fails'} the victim's check (at most 2 points below)",
        f"ASR@95 {g['asr_before']:.1%} -> {g['asr_after']:.1%} after {g['defense']}; DER {g['der']:.2f} "
        f"(lower: the defense did less); false alarms after {g['false_alarm_after']:.1%}",
        "past the defense: " + ("yes (stealthy, and half or more of the triggered anomalies still pass)"
                                if g["past_the_defense"] else "not yet")])
