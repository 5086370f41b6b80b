"""Output folders and atomic writes: a result or checkpoint is either complete on disk or absent.

A file is serialised in memory, written to a hidden temporary file next to its target, flushed to
disk and renamed over it; a full disk or any other OS error is one ``OutputError`` naming the file. Temporary
files left by a process killed at the wrong moment are removed by the next run that writes to the
same folder (``clean_stale_temps``). Files get the permissions the umask allows, like ``open()``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from .errors import OutputError

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_output_dir(path: str | os.PathLike, role: str = "output folder",
                      remedy: str = "choose another folder with --out") -> Path:
    """Create folder ``path`` if needed and prove it writable, before any work is done; ``role`` and
    ``remedy`` word the error (e.g. "model cache" and "set BADSAD_CACHE to a writable folder")."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{role} {path} is an existing file; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=TEMP_SUFFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{role} {path}: a parent of it is a file, not a folder") from None
    except PermissionError:
        raise OutputError(f"{role} {path} is not writable; {remedy}") from None
    except OSError as err:
        raise OutputError(f"{role} {path} cannot be used ({err.strerror or err}); {remedy}") from None
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


def _atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file renamed over it; any OS error (a full disk, a
    read-only folder, a folder under that name) becomes one ``OutputError`` naming ``path``, and nothing is left."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        reason = err.strerror or str(err)
        hint = "; free some space or choose another --out" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise OutputError(f"could not write {path}: {reason}{hint}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN and infinity are refused)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return write_text(path, text)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return _atomic_write(path, text.encode())


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically (tensors, numbers, strings, lists and dicts only)."""
    import torch

    buffer = BytesIO()  # serialised in memory: a full disk is then an OSError of the write, not torch's RuntimeError
    torch.save(obj, buffer)
    return _atomic_write(path, buffer.getvalue())


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    buffer = BytesIO()
    fig.savefig(buffer, dpi=dpi, bbox_inches="tight", format="png")
    return _atomic_write(path, buffer.getvalue())
