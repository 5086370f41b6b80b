"""Trained models kept on disk, served only for the run they were trained for.

A cached checkpoint records its identity (``DeepSAD.trained_for_``: the run's specification key,
and for the lessons' cache the library's source hash and the learner's functions); a load
compares it with the identity the caller asks for. File names can be computed by anyone who
shares the folder, so the name alone proves nothing: a model copied to another run's name, a
checkpoint from older code, a folder, pipe or unreadable file under that name is not served. Each
refusal is one line on stderr, and the caller trains instead; nothing is ever deleted here (a
regular file is later replaced atomically by the retrained model).
"""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path


def identity(**parts) -> str:
    """The identity string of a cached model: its parts as canonical JSON (sorted keys)."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def load_trained_for(path: Path, wanted: str, device=None):
    """The model cached at ``path`` if it was trained for ``wanted``; else None (with a one-line warning,
    unless there is simply nothing there)."""
    from .deepsad import DeepSAD
    from .errors import CheckpointError

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        warn(f"cannot read the cached model {path} ({err}); training instead")
        return None
    if not stat.S_ISREG(mode):
        warn(f"the cached model {path} is not a regular file; training instead")
        return None
    try:
        model = DeepSAD.load(path, device=device)
    except (CheckpointError, OSError) as err:
        warn(f"ignoring the cached model {path}: {err}; training instead")
        return None
    if model.trained_for_ != wanted:
        warn(f"ignoring the cached model {path}: it was trained for another run "
             f"({_short(model.trained_for_)}, not {_short(wanted)}); training instead")
        return None
    return model


def save_trained_for(model, path: Path, wanted: str) -> bool:
    """Record ``wanted`` in ``model`` and write it to ``path`` (atomically); False, with a warning, if the
    cache cannot take it (a folder under that name, a read-only or full disk): the model is still used."""
    from .errors import OutputError

    model.trained_for_ = wanted
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
        return True
    except (OSError, OutputError) as err:
        warn(f"could not keep the model in the cache ({err}); it is used without being cached")
        return False


def _short(text: str | None, width: int = 70) -> str:
    if text is None:
        return "no recorded run"
    return text if len(text) <= width else text[:width - 3] + "..."
