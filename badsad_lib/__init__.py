"""BadSAD course library: DeepSAD, the BadSAD clean-label backdoor, and defenses."""
from .data import DATASETS, DatasetNotFoundError, OneClassSplit, load_dataset, make_split
from .deepsad import CheckpointError, DeepSAD
from .device import get_device, is_quick, seed_everything

__all__ = ["DATASETS", "CheckpointError", "DatasetNotFoundError", "DeepSAD", "OneClassSplit", "get_device",
           "is_quick", "load_dataset", "make_split", "seed_everything"]
__version__ = "0.1.0"
