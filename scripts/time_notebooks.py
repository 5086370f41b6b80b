#!/usr/bin/env python3
"""Measure how long the notebooks take, as a learner runs them, and record it in
``badsad_lib/results/notebook_times.json`` (``scripts/make_lessons.py`` writes the figures into
each lesson's header and the course map in COURSE.md).

Each notebook runs top to bottom with nbclient ("Run all"), in the mode asked for, with the model
cache either empty ("cold": the lesson trains its own models) or as the earlier lessons left it
("warm"). Run it on an otherwise idle machine:

    BADSAD_DATA=$PWD/../shared/data python scripts/time_notebooks.py --mode quick lessons/*.ipynb
    BADSAD_DATA=$PWD/../shared/data python scripts/time_notebooks.py --mode full lessons/01_deepsad_basics.ipynb
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from badsad_lib.io import write_json  # noqa: E402
from badsad_lib.kernel_client import SlicedKernelManager  # noqa: E402
from badsad_lib.provenance import _git, machine  # noqa: E402
from badsad_lib.tables import RESULTS  # noqa: E402

TIMES = RESULTS / "notebook_times.json"


def run(path: Path, env: dict) -> float:
    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=3600, kernel_name="python3", kernel_manager_class=SlicedKernelManager,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--cache", default=None, help="model cache to use (default: a new, empty one, shared in order)")
    args = parser.parse_args(argv)
    dataset = "mnist" if os.environ.get("BADSAD_DATA") else "digits"
    cache = args.cache or tempfile.mkdtemp(prefix="badsad-times-")
    entries = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    for path in args.notebooks:
        path = path.resolve()
        cold = not any(Path(cache).glob("*.pt"))
        seconds = run(path, {"BADSAD_QUICK": "1" if args.mode == "quick" else "0", "BADSAD_CACHE": cache})
        key = f"{path.parent.name}/{path.name} {args.mode} {dataset}"
        entries[key] = {"seconds": round(seconds, 1), "cache": "cold" if cold else "warm (earlier lessons' models)",
                        "machine": machine(), "commit": _git("rev-parse", "HEAD") or "unknown",
                        "made": time.strftime("%Y-%m-%d")}
        print(f"{key}: {seconds:.0f} s ({entries[key]['cache']})", flush=True)
        write_json(TIMES, dict(sorted(entries.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
