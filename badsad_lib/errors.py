"""The errors the library raises for expected failures; the command line turns each into one sentence.

Kept apart from the modules that raise them (data, deepsad, io) so that catching them imports no torch.
"""
from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk and was not (or could not be) downloaded."""


class DatasetCorruptError(ValueError):
    """A dataset file is on disk but is not what its name says (garbage, truncated, inconsistent or unsafe)."""


class CheckpointError(ValueError):
    """A file is not a readable, complete and finite DeepSAD checkpoint."""


class OutputError(ValueError):
    """An output path that cannot be written: a file where a folder is needed, no permission, a full disk."""
