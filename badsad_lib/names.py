"""The names a user chooses from: datasets, attack methods (with their attacker tiers), triggers, defenses.

Plain tuples with no torch behind them, so the command line can offer and check them before it imports
anything heavy; the modules that implement each (data, attack, triggers, defenses) re-export them.
"""
from __future__ import annotations

DATASETS = ("digits", "mnist", "fmnist", "cifar10")
METHODS = ("naive", "alignment", "concentration", "badsad", "outlier_exposure", "data_only", "label_preserving")
TIERS = {"naive": "1 data", "data_only": "1+ data + views", "alignment": "2 objective",
         "concentration": "2 objective", "badsad": "3 objective + views", "label_preserving": "3 objective + views",
         "outlier_exposure": "3 objective + views (control)"}
TRIGGERS = ("corners", "patch", "blend", "noise")
DEFENSES = ("spectral", "clustering", "strip", "fine_tuning", "bn_recalibration", "fine_pruning", "preprocess",
            "reverse_trigger", "reverse_trigger_distinct")
