"""The experiment grid: one independent, resumable job per ``RunSpec``.

Each cell writes its result atomically to ``OUT/cells/<spec.key>.json``; a rerun skips cells whose
file exists, so an interrupted run loses nothing. A cell is claimed (``<key>.claim``, created
exclusively, holding the worker's host and pid) while it runs, so two runs on one folder never
compute the same cell twice: the second waits for the first's result, and takes a cell over only
if its claimant has died. Every cell runs on one thread whatever ``jobs`` is, so results do not
depend on how the grid was run. Clean models are cached in ``OUT/models/<clean spec key>.pt``,
keyed by the whole clean specification (split, detector, settings), never reused across settings.
Trained backdoored models are kept there too (``<spec.model_key>.pt``), so a defended cell reuses
the model of the same run without defenses. Each kept model records the specification it was
trained for and is reused only for exactly that run (``badsad_lib.cache``): a model copied to
another run's name, or one from before identities were recorded, is retrained. Any ``concurrent.futures.Executor`` can run the cells (a Dask or Ray executor spreads them over a
cluster); ``jobs`` > 1 uses local processes (spawned when CUDA is there, so every worker
can use the GPU).
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from .io import clean_stale_temps, ensure_output_dir, write_json
from .spec import RunSpec

CLAIMED_ELSEWHERE = "claimed elsewhere"


def make_specs(datasets, classes, seeds, methods, strengths=(None,), poison_ratios=(0.1,), triggers=("corners",),
               **common) -> list[RunSpec]:
    """The cross product (datasets x classes x seeds x methods x triggers x strengths x poison ratios),
    each validated; duplicates (the same run spelled twice) appear once, in first-seen order."""
    specs = [RunSpec(d, k, s, m, trigger=t, strength=mu, poison_ratio=rho, **common)
             for d, k, s, m, t, mu, rho in itertools.product(datasets, classes, seeds, methods, triggers, strengths,
                                                              poison_ratios)]
    return list({spec.key: spec for spec in specs}.values())


def cell_path(out, spec: RunSpec) -> Path:
    return Path(out) / "cells" / f"{spec.key}.json"


@contextmanager
def one_thread():
    """Run a cell on one thread (tiny networks: results and speed then do not depend on the core count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # another machine's claim: trust it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(path: Path) -> bool:
    """Claim the cell whose result goes to ``path``; False if a live process holds it."""
    lock = path.with_suffix(".claim")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()[:2]
                if _alive(host, int(pid)):
                    return False
            except (OSError, ValueError):
                pass  # unreadable or half-written claim: treat as stale
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n")
        return True
    return False


def release(path: Path) -> None:
    path.with_suffix(".claim").unlink(missing_ok=True)


def _model_identity(spec: RunSpec) -> str:
    """What a model kept under ``OUT/models`` was trained for: the whole specification of its run."""
    from .cache import identity

    return identity(run=spec.canonical())


def run_cell(spec: RunSpec, out: str) -> dict | str:
    """Run one cell (one thread) and write ``OUT/cells/<key>.json``; returns its metrics, or
    ``CLAIMED_ELSEWHERE`` when another live process is computing it."""
    from .experiments import run

    path = cell_path(out, spec)
    if path.exists():
        return json.loads(path.read_text())
    if not claim(path):
        return CLAIMED_ELSEWHERE
    try:
        with one_thread():
            from .cache import load_trained_for, save_trained_for

            runs = {"clean": spec.clean(), "backdoored": spec.replace(defenses=()) if spec.attacked else None}
            models = {role: Path(out) / "models" / f"{r.model_key}.pt" for role, r in runs.items() if r is not None}
            loaded = {role: load_trained_for(path, _model_identity(runs[role])) for role, path in models.items()}
            result = run(spec, clean_model=loaded["clean"], backdoored_model=loaded.get("backdoored"))
            for role, model in (("clean", result.clean), ("backdoored", result.backdoored)):
                if role in models and loaded[role] is None:
                    save_trained_for(model, models[role], _model_identity(runs[role]))
            metrics = result.metrics
            if spec.defenses:
                from .defenses import run_defenses, scenario_for

                scenario = scenario_for(spec, result.split, result.backdoored)
                metrics["defenses"] = run_defenses(spec.defenses, scenario)
                metrics["seconds"] += sum(d["seconds"] for d in metrics["defenses"])
        write_json(path, metrics)
        return metrics
    finally:
        release(path)


def _wait_for(spec: RunSpec, out, poll: float = 5.0) -> dict:
    """The result of a cell another process claimed; computed here if that process dies first."""
    path = cell_path(out, spec)
    while not path.exists():
        result = run_cell(spec, out)
        if result != CLAIMED_ELSEWHERE:
            return result
        time.sleep(poll)
    return json.loads(path.read_text())


def _one_thread_worker() -> None:
    import torch
    torch.set_num_threads(1)


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` local worker processes, one thread each: forked on the CPU (fast), spawned when CUDA is there
    (a forked child cannot use CUDA once the parent has touched it)."""
    import multiprocessing

    import torch

    context = multiprocessing.get_context("spawn") if torch.cuda.is_available() else None
    return ProcessPoolExecutor(max_workers=jobs, initializer=_one_thread_worker, mp_context=context)


def run_grid(specs: list[RunSpec], out, executor: Executor | None = None, jobs: int = 1,
             progress: bool = True) -> list[dict]:
    """Run the cells not yet finished under ``out``; returns every cell's result, in order."""
    from .tables import write_tables

    out = ensure_output_dir(out)
    for sub in ("cells", "models"):
        (out / sub).mkdir(exist_ok=True)
        clean_stale_temps(out / sub)
    specs = list({s.key: s for s in specs}.values())
    todo = [s for s in specs if not cell_path(out, s).exists()]
    own = executor is None and jobs > 1
    if own:
        executor = worker_pool(jobs)
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="grid cells", disable=not progress)
    waiting = []
    try:
        if executor is None:
            for spec in todo:
                if run_cell(spec, str(out)) == CLAIMED_ELSEWHERE:
                    waiting.append(spec)
                else:
                    bar.update()
        else:
            futures: dict[Future, RunSpec] = {executor.submit(run_cell, s, str(out)): s for s in todo}
            for fut in as_completed(futures):
                if fut.result() == CLAIMED_ELSEWHERE:
                    waiting.append(futures[fut])
                else:
                    bar.update()
        for spec in waiting:
            _wait_for(spec, out)
            bar.update()
    finally:
        bar.close()
        if own:
            executor.shutdown()
    results = [json.loads(cell_path(out, s).read_text()) for s in specs]
    write_tables(results, out)
    return results
