"""BadSAD course library: DeepSAD, the BadSAD backdoor, and defenses against it."""
from .data import DATASETS, DatasetNotFoundError, OneClassSplit, load_dataset, make_split
from .deepsad import CheckpointError, DeepSAD, DeepSVDD
from .detector import Detector
from .device import get_device
from .settings import DIGITS, PAPER, QUICK, TrainingSettings, resolve_quick
from .spec import RunSpec

__all__ = ["DATASETS", "DIGITS", "PAPER", "QUICK", "CheckpointError", "DatasetNotFoundError", "DeepSAD", "DeepSVDD",
           "Detector", "OneClassSplit", "RunSpec", "TrainingSettings", "get_device", "load_dataset", "make_split",
           "resolve_quick"]
__version__ = "0.2.0"
