"""Claims on grid cells: which process is computing a cell, so that no two compute it at once.

A claim is a small JSON file ``<cell>.claim`` naming its owner: host, boot id, PID, the process's
start time (Linux: clock ticks since boot, from ``/proc``), when it was claimed, and a random token.
It is written in full to a temporary file and then hard-linked into place, so no process ever reads
an empty or half-written claim. On one machine every check-and-take and every release happens under
an ``flock`` on ``.claims.lock`` in the cells' folder, so of several contending processes exactly one
holds a cell, and only its owner (the same token) releases it.

A claim is stale, and is taken over, when its owner is on this host and is gone: no process with its
PID, a process with its PID that started at another time (a reused PID, as after a container restart),
or a machine booted since. A claim from another host (a cluster sharing the folder) cannot be checked
that way: its owner touches it every ``HEARTBEAT`` seconds while it computes (``heartbeat``), and it
is stale once untouched for ``EXPIRY`` seconds. A file that is not a claim (garbage, empty) is stale.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the hard link alone keeps claims whole
    fcntl = None

MUTEX = ".claims.lock"
HEARTBEAT = 60.0   # seconds between an owner's touches of its claim
EXPIRY = 600.0     # seconds after which another host's untouched claim is stale


def _boot_id() -> str:
    with suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def start_time(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (field 22 of /proc/PID/stat); "" where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = text.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces; field 3 onwards
    return fields[19] if len(fields) > 19 else ""


def me() -> dict:
    """This process as a claim owner (a fresh token each time)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "started": start_time(pid),
            "claimed_at": round(time.time(), 3), "token": uuid.uuid4().hex}


def alive(owner: dict, age: float = 0.0) -> bool:
    """Whether the process ``owner`` names still runs; for another host's claim, whether it was touched in
    the last ``EXPIRY`` seconds (``age``: seconds since the claim file last changed)."""
    if owner["host"] != socket.gethostname():
        return age < EXPIRY
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return False  # this machine has restarted since
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    started = start_time(owner["pid"])
    return not (owner.get("started") and started and started != owner["started"])


def read_owner(lock: Path) -> dict | None:
    """The owner a claim file names; None when it is not a readable claim (garbage, empty, gone)."""
    try:
        text = lock.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        parts = text.split()  # the older "host pid time" claim
        if len(parts) >= 2 and parts[1].isdigit():
            return {"host": parts[0], "pid": int(parts[1]), "token": None}
        return None
    if not (isinstance(owner, dict) and isinstance(owner.get("host"), str) and type(owner.get("pid")) is int
            and owner["pid"] > 0 and isinstance(owner.get("token"), str)):
        return None
    return owner


def describe(owner: dict) -> str:
    """One line: who holds a claim and since when."""
    since = owner.get("claimed_at")
    when = time.strftime(" since %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else ""
    return f"process {owner['pid']} on {owner['host']}{when}"


@contextmanager
def _mutex(folder: Path):
    if fcntl is None:
        yield
        return
    fd = os.open(folder / MUTEX, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def claim(lock: Path) -> str | None:
    """Take the claim file ``lock``; returns this claim's token, or None while a live owner holds it."""
    lock = Path(lock)
    with _mutex(lock.parent):
        if os.path.lexists(lock):
            owner = read_owner(lock)
            if owner is not None and alive(owner, _age(lock)):
                return None
            lock.unlink(missing_ok=True)  # its owner is gone, or it is not a claim
        owner = me()
        tmp = lock.with_name(f".{lock.name}.{owner['token']}.tmp")
        tmp.write_text(json.dumps(owner) + "\n")
        try:
            os.link(tmp, lock)  # all or nothing: the claim appears complete
        except FileExistsError:
            return None  # another process (without the flock: another host) linked first
        except OSError:  # no hard links on this file system (some FUSE and network mounts): create exclusively
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(owner) + "\n")
        finally:
            tmp.unlink(missing_ok=True)
        return owner["token"]


def _age(lock: Path) -> float:
    try:
        return time.time() - os.stat(lock).st_mtime
    except OSError:
        return float("inf")


@contextmanager
def heartbeat(lock: Path, token: str, interval: float = HEARTBEAT):
    """While the block runs, touch claim ``lock`` every ``interval`` seconds (as long as ``token`` owns it),
    so that other hosts sharing the folder see its owner is at work."""
    import threading

    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            owner = read_owner(Path(lock))
            if owner is None or owner.get("token") != token:
                return
            with suppress(OSError):
                os.utime(lock)
    thread = threading.Thread(target=beat, daemon=True, name="claim-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def release(lock: Path, token: str) -> bool:
    """Remove claim ``lock`` if ``token`` still owns it; True if it did. Another owner's claim is left alone."""
    lock = Path(lock)
    with _mutex(lock.parent):
        owner = read_owner(lock)
        if owner is None or owner.get("token") != token:
            return False
        lock.unlink(missing_ok=True)
        return True
