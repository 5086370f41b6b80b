"""Where a result came from: the machine (CPU, cores, OS, Python, torch, device), the code's commit and a
hash of the library's source."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> str:
    import torch

    from .device import get_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = get_device()
    if device.type == "cuda":
        device = f"{device} ({torch.cuda.get_device_name(device)})"
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, device {device}")


def commit() -> str:
    """The code's commit: ``BADSAD_COMMIT`` if set (a copy of a commit run elsewhere, e.g. sent to a GPU machine
    with no .git or a stale one), else git's HEAD, else "unknown"."""
    return os.environ.get("BADSAD_COMMIT", "") or _git("rev-parse", "HEAD") or "unknown"


def source_hash() -> str:
    """SHA-1 of the library's source files (hex): changes with any edit of ``badsad_lib``."""
    import hashlib

    digest = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def made_by(source: str) -> dict:
    """What computed a result: the host, the machine, the library's version and ``source`` (its source hash),
    so results from nodes with different installs can be told apart."""
    import socket

    from . import __version__

    return {"host": socket.gethostname(), "machine": machine(), "library": __version__, "source": source}
