"""Output folders and atomic writes: a result or checkpoint is either complete on disk or absent.

A file is written to a hidden temporary file next to its target and renamed over it. Temporary
files left by a process killed at the wrong moment are removed by the next run that writes to the
same folder (``clean_stale_temps``). Files get the permissions the umask allows, like ``open()``.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import OutputError

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` if needed and prove it writable, before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {path} is an existing file; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=TEMP_SUFFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise OutputError(f"output folder {path}: a parent of it is a file, not a folder") from None
    except NotADirectoryError:
        raise OutputError(f"output folder {path}: a parent of it is a file, not a folder") from None
    except PermissionError:
        raise OutputError(f"output folder {path} is not writable; choose another folder with --out") from None
    except OSError as err:
        raise OutputError(f"output folder {path} cannot be used ({err.strerror or err})") from None
    return path


def clean_stale_temps(folder: str | os.PathLike, older_than: float = 60.0) -> int:
    """Remove this module's temporary files in ``folder`` older than ``older_than`` seconds; returns how many.

    A write takes milliseconds, so a temporary file a minute old belongs to a process that died.
    """
    folder, removed = Path(folder), 0
    if not folder.is_dir():
        return 0
    now = time.time()
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN and infinity are refused)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return write_text(path, text)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
    return _atomic_write(path, write)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically (tensors, numbers, strings, lists and dicts only)."""
    import torch

    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    return _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
