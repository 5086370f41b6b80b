"""What one run measured, in one schema: ``CellResult``.

``experiments.run`` builds it; a grid cell's JSON file, ``badsad attack``'s ``metrics.json`` and the
grid's results are its ``to_dict()``; every CSV row of a grid or a shipped table is its ``to_row()``
(and ``defense_rows()``, one row per defense). A dict read back from disk becomes a result again only
through ``from_dict``, which checks every field's presence and type.

Metrics keyed by a percentile q ("90", "95", "99": tau_q is the q-th percentile of the held-out
normals' scores) are dicts of floats; ``asr_by_strength`` maps a test-time strength mu ("0", "0.25",
..., "1") to the ASR at tau_95.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from .registry import CLEAN

STRENGTH_COLUMNS = ("asr_mu0", "asr_mu0.25", "asr_mu0.5", "asr_mu0.75", "asr_mu1")
ATTACK_COLUMNS = ("dataset", "normal_class", "seed", "detector", "method", "tier", "trigger", "strength",
                  "poison_ratio", "labeled_ratio", "settings", "weights", "auc_clean_model", "auc_backdoored", "asr_90", "asr_95",
                  "asr_99", "conditional_asr_95", "miss_rate_95", "clean_model_asr_95", "trigger_exposure",
                  *STRENGTH_COLUMNS, "best_strength", "best_strength_asr_95", "triggered_normal_pass_95",
                  "clean_model_triggered_normal_pass_95", "seconds", "key")
CLEAN_COLUMNS = ("dataset", "normal_class", "seed", "detector", "method", "labeled_ratio", "known_anomaly_class", "settings",
                 "epochs", "ae_epochs", "lr", "auc", "miss_rate_95", "seconds", "key")
DEFENSE_COLUMNS = ("auc_before", "auc_after", "asr_before", "asr_after", "der", "tpr", "fpr", "false_alarm_after")
DEFENSE_DETAILS = ("mask_share", "held_out_pass_rate", "flagged", "detection_auroc", "flagged_share")  # flagged: 1/0


@dataclass(frozen=True)
class CellResult:
    """One run's measurements. Fields marked "attack" are None for a clean run, "clean" ones for an attack."""
    key: str                          # RunSpec.key
    spec: dict                        # RunSpec.canonical()
    dataset: str
    normal_class: int
    seed: int
    method: str                       # "clean" or an attack method
    detector: str
    settings_name: str
    labeled_ratio: float
    known_anomaly_class: int | None
    device: str
    threads: int
    trigger: str
    strength: float
    threshold: dict                   # q -> tau_q of the model the run is about (attack: the backdoored one)
    miss_rate: dict                   # q -> share of untriggered test anomalies under tau_q, same model
    clean_model: dict                 # the trigger on the clean model: asr, conditional_asr, miss_rate, asr_by_strength
    seconds: float                    # training and measuring, clean model and defenses included
    auc: float | None = None          # clean: the clean model's test AUC
    counts: dict | None = None        # clean: the split's counts (OneClassSplit.counts)
    final_loss: float | None = None   # clean: the last epoch's mean loss
    tier: str | None = None           # attack: the attacker's tier
    poison_ratio: float | None = None
    n_poisoned: int | None = None     # attack: poisoned dataset images
    n_synthetic_triggered: int | None = None  # attack: triggered synthetic views written into the training set
    trigger_exposure: float | None = None
    auc_clean_model: float | None = None
    auc_backdoored: float | None = None
    asr: dict | None = None           # attack: q -> triggered test anomalies under tau_q
    conditional_asr: dict | None = None
    asr_by_strength: dict | None = None
    triggered_normal_pass: dict | None = None  # attack: q -> clean test normals with the trigger under tau_q
    normal_pass_by_strength: dict | None = None  # attack: mu -> the same at tau_95, trigger at strength mu
    best_strength: float | None = None  # attack: the test strength mu of the curve where the ASR@95 peaks
    best_strength_asr_95: float | None = None
    weights: dict | None = None       # attack: the latent-space terms' weights
    trainer: str = "single"           # how the cell's model was trained: "single", or "stacked" with others
    stack: int = 1                    # how many models were trained at once with it (badsad_lib.stacked)
    made_by: dict | None = None       # grid cells: provenance.made_by (host, machine, library source)
    trained_by: str | None = None     # re-evaluated cells: the library source that trained the kept models
    defenses: list | None = field(default=None)  # the spec's defenses, each a DefenseResult.to_dict()

    @property
    def attacked(self) -> bool:
        return self.method != CLEAN

    def to_dict(self) -> dict:
        """JSON-ready: the fields of this run's kind, and made_by / defenses when set."""
        optional = ATTACK_ONLY if self.attacked else CLEAN_ONLY
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in REQUIRED or f.name in optional or getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d) -> "CellResult":
        """A result from ``to_dict()``'s output; ValueError naming the first missing, unknown or ill-typed field."""
        if not isinstance(d, dict):
            raise ValueError(f"a result must be a mapping, found {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"a result has unknown field(s) {', '.join(unknown)}")
        kind = ATTACK_ONLY if d.get("method", CLEAN) != CLEAN else CLEAN_ONLY
        missing = [n for n in (*REQUIRED, *kind) if n not in d]
        if missing:
            raise ValueError(f"a result lacks {', '.join(missing)}")
        for name, value in d.items():
            _check_field(name, value)
        return cls(**d)

    def replace(self, **changes) -> "CellResult":
        return replace(self, **changes)

    def to_row(self) -> dict:
        """One CSV row: ATTACK_COLUMNS for an attack, CLEAN_COLUMNS for a clean run."""
        if not self.attacked:
            s = self.spec["settings"]
            return {"dataset": self.dataset, "normal_class": self.normal_class, "seed": self.seed,
                    "detector": self.detector, "method": self.method, "labeled_ratio": self.labeled_ratio,
                    "known_anomaly_class": self.known_anomaly_class, "settings": self.settings_name,
                    "epochs": s["epochs"], "ae_epochs": s["ae_epochs"], "lr": s["lr"], "auc": self.auc,
                    "miss_rate_95": self.miss_rate["95"], "seconds": self.seconds, "key": self.key}
        by_mu = self.asr_by_strength or {}
        return {"dataset": self.dataset, "normal_class": self.normal_class, "seed": self.seed,
                "detector": self.detector, "method": self.method, "tier": self.tier, "trigger": self.trigger,
                "strength": self.strength, "poison_ratio": self.poison_ratio, "labeled_ratio": self.labeled_ratio,
                "settings": self.settings_name, "weights": self.weights_text(), "auc_clean_model": self.auc_clean_model,
                "auc_backdoored": self.auc_backdoored, **{f"asr_{q}": self.asr[q] for q in ("90", "95", "99")},
                "conditional_asr_95": self.conditional_asr["95"], "miss_rate_95": self.miss_rate["95"],
                "clean_model_asr_95": self.clean_model["asr"]["95"], "trigger_exposure": self.trigger_exposure,
                **{col: by_mu.get(col[len("asr_mu"):]) for col in STRENGTH_COLUMNS},
                "best_strength": self.best_strength, "best_strength_asr_95": self.best_strength_asr_95,
                "triggered_normal_pass_95": self.triggered_normal_pass["95"],
                "clean_model_triggered_normal_pass_95": self.clean_model["triggered_normal_pass"]["95"],
                "seconds": self.seconds, "key": self.key}

    def weights_text(self) -> str:
        """The terms' weights as "concentration/alignment/separation" ("1/1/1"); empty for a method without them."""
        from .registry import method_info

        if not self.attacked or not method_info(self.method).needs_objective or not self.weights:
            return ""
        return "/".join(f"{self.weights[k]:g}" for k in ("concentration", "alignment", "separation"))

    def defense_rows(self) -> list[dict]:
        """One row per defense run on this cell's model (the backdoored one; a clean run's clean one)."""
        rows = []
        for d in self.defenses or []:
            details = d.get("details", {})
            rows.append({"dataset": self.dataset, "normal_class": self.normal_class, "seed": self.seed,
                         "method": self.method, "trigger": self.trigger, "defense": d["defense"],
                         **{c: d[c] for c in DEFENSE_COLUMNS},
                         **{c: int(v) if isinstance(v := details.get(c), bool) else v for c in DEFENSE_DETAILS},
                         "seconds": d["seconds"], "key": self.key})
        return rows


REQUIRED = ("key", "spec", "dataset", "normal_class", "seed", "method", "detector", "settings_name", "labeled_ratio",
            "known_anomaly_class", "device", "threads", "trigger", "strength", "threshold", "miss_rate",
            "clean_model", "seconds")
CLEAN_ONLY = ("auc", "counts", "final_loss")
ATTACK_ONLY = ("tier", "poison_ratio", "n_poisoned", "n_synthetic_triggered", "trigger_exposure", "auc_clean_model",
               "auc_backdoored", "asr", "conditional_asr", "asr_by_strength", "triggered_normal_pass",
               "normal_pass_by_strength", "best_strength", "best_strength_asr_95", "weights")

_TEXT = ("key", "dataset", "method", "detector", "settings_name", "device", "trigger", "tier", "trainer", "trained_by")
_WHOLE = ("normal_class", "seed", "threads", "n_poisoned", "n_synthetic_triggered", "stack")
_NUMBER = ("labeled_ratio", "strength", "seconds", "auc", "poison_ratio", "trigger_exposure", "auc_clean_model",
           "auc_backdoored", "best_strength", "best_strength_asr_95")
_BY_Q = ("threshold", "miss_rate", "asr", "conditional_asr", "asr_by_strength", "triggered_normal_pass",
         "normal_pass_by_strength")
_MAPS = ("spec", "clean_model", "counts", "weights", "made_by")


def _check_field(name: str, value) -> None:
    def bad(expected):
        raise ValueError(f"a result's {name!r} must be {expected}, found {value!r:.80}")
    if value is None:
        if name in REQUIRED and name != "known_anomaly_class":
            bad("set")
        return
    if name in _TEXT and not isinstance(value, str):
        bad("text")
    if name in (*_WHOLE, "known_anomaly_class") and (isinstance(value, bool) or not isinstance(value, int)):
        bad("a whole number")
    if name in (*_NUMBER, "final_loss") and not _is_number(value):
        bad("a number")
    if name in _BY_Q and not (isinstance(value, dict) and all(
            isinstance(k, str) and (v is None or _is_number(v)) for k, v in value.items())):
        bad("a mapping of text to numbers")
    if name in _MAPS and not isinstance(value, dict):
        bad("a mapping")
    if name == "defenses" and not (isinstance(value, list) and all(isinstance(d, dict) for d in value)):
        bad("a list of mappings")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
