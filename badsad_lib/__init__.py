"""BadSAD course library: DeepSAD, the BadSAD backdoor, and defenses against it.

The names below are imported on first use (PEP 562), so ``import badsad_lib`` and the command line's
argument checks do not pay for torch and scikit-learn until a model is needed.
"""
from importlib import import_module

_HOME = {"DatasetInfo": "registry", "dataset_names": "registry", "register_dataset": "registry", "DatasetNotFoundError": "errors", "CheckpointError": "errors",
         "ImageData": "data", "OneClassSplit": "data", "load_dataset": "data", "make_split": "data",
         "DeepSAD": "deepsad", "DeepSVDD": "deepsad", "Detector": "detector", "get_device": "device",
         "DIGITS": "settings", "PAPER": "settings", "QUICK": "settings", "TrainingSettings": "settings",
         "resolve_quick": "settings", "RunSpec": "spec"}

__all__ = sorted(_HOME)
__version__ = "0.2.0"


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'badsad_lib' has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
