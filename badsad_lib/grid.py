"""The experiment grid: one independent, resumable job per ``RunSpec``.

Each cell writes its result atomically to ``OUT/cells/<spec.key>.json``, recording what made it
(``made_by``: host, machine, library version and source hash); a rerun skips cells whose file exists
and was made by the same code, so an interrupted run loses nothing and a cell from another version
of the library is computed again, never mixed in (a worker running other code is refused). A cell is
claimed (``<key>.claim``, naming its owner: ``badsad_lib.claims``) while it runs, so two runs on one
folder never compute the same cell twice: the second says which process it waits for, waits for its
result, and takes the cell over only if that process has died (a reused PID is not taken for the
owner). Every cell runs on one thread whatever ``jobs`` is, so results do not depend on how the grid
was run. Clean models are cached in ``OUT/models/<clean spec key>.pt``, keyed by the whole clean
specification (split, detector, settings), never reused across settings, and trained once for all
the cells that share it (claimed while it trains; the others wait for it). Trained backdoored models
are kept there too (``<spec.model_key>.pt``), so a defended cell reuses the model of the same run
without defenses. Each kept model records the specification and the code it was trained with and
is reused only for exactly that run and code (``badsad_lib.cache``): a model copied to another
run's name, or one from before identities were recorded, is retrained. ``reevaluate_grid`` is the one
exception: it measures the cells again with this code from the kept models of their exact runs, whatever
code trained them (each cell records it as ``trained_by``), and trains nothing.

Any ``concurrent.futures.Executor`` can run the cells: a Dask client's ``get_executor()`` spreads
them over a cluster (threaded workers give the same numbers: a fit seeds nothing process-wide). The
output folder is made absolute, and the driver keeps each cell's result from its future and writes
it, so a worker that does not share the folder loses nothing. ``jobs`` > 1 uses local processes
(spawned when CUDA is there, so every worker can use the GPU).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path

from tqdm.auto import tqdm

from . import claims
from .io import clean_stale_temps, ensure_output_dir, write_json
from .registry import dataset_info
from .spec import RunSpec

CLAIMED_ELSEWHERE = "claimed elsewhere"


def make_specs(datasets, classes, seeds, methods, strengths=(None,), poison_ratios=(0.1,), triggers=("corners",),
               **common) -> list[RunSpec]:
    """The cross product (datasets x classes x seeds x methods x triggers x strengths x poison ratios),
    each validated; duplicates (the same run spelled twice) appear once, in first-seen order.
    ``classes`` None: every class of each dataset."""
    specs = [RunSpec(d, k, s, m, trigger=t, strength=mu, poison_ratio=rho, **common) for d in datasets
             for k, s, m, t, mu, rho in itertools.product(
                 range(dataset_info(d).n_classes) if classes is None else classes, seeds, methods, triggers,
                 strengths, poison_ratios)]
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


def _claim_file(path: Path) -> Path:
    return path.with_suffix(".claim")


@lru_cache(maxsize=1)
def code() -> str:
    """12 hex digits of the library's source hash: what a cell's result and kept models were made by."""
    from .provenance import source_hash

    return source_hash()[:12]


def finished_cell(path: Path) -> dict | None:
    """The result at ``path`` if it is there, whole (``CellResult.from_dict``) and made by this code; None
    otherwise (missing, unreadable, not a result, or from another version of the library: such a cell is
    computed again, never mixed into this code's tables)."""
    from .result import CellResult

    try:
        result = CellResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
    if not isinstance(result.made_by, dict) or result.made_by.get("source") != code() or \
            result.key != path.stem:
        return None
    return result.to_dict()


def _model_identity(spec: RunSpec) -> str:
    """What a model kept under ``OUT/models`` was trained for: the whole specification of its run."""
    from .cache import identity

    return identity(run=spec.canonical(), code=code())


def run_cell(spec: RunSpec, out: str) -> dict | str:
    """Run one cell (one thread) and write ``OUT/cells/<key>.json``; returns its metrics, or
    ``CLAIMED_ELSEWHERE`` when another live process is computing it."""
    from .experiments import run

    path = cell_path(out, spec)
    done = finished_cell(path)
    if done is not None:
        return done
    for sub in ("cells", "models"):  # a worker that does not see the driver's folder works in its own copy
        (Path(out) / sub).mkdir(parents=True, exist_ok=True)
    token = claims.claim(_claim_file(path))
    if token is None:
        return CLAIMED_ELSEWHERE
    try:
        with one_thread(), claims.heartbeat(_claim_file(path), token):
            from .cache import load_trained_for, save_trained_for

            runs = {"clean": spec.clean(), "backdoored": spec.replace(defenses=()) if spec.attacked else None}
            models = {role: Path(out) / "models" / f"{r.model_key}.pt" for role, r in runs.items() if r is not None}
            loaded = {role: load_trained_for(path, _model_identity(runs[role])) for role, path in models.items()}
            clean_seconds = 0.0
            if loaded["clean"] is None:
                loaded["clean"], clean_seconds = _shared_clean_model(spec, models["clean"], _model_identity(runs["clean"]))
            result = run(spec, clean_model=loaded["clean"], backdoored_model=loaded.get("backdoored"))
            if "backdoored" in models and loaded["backdoored"] is None:
                save_trained_for(result.backdoored, models["backdoored"], _model_identity(runs["backdoored"]))
            from .provenance import made_by

            metrics = result.cell.replace(made_by=made_by(code()), seconds=result.cell.seconds + clean_seconds).to_dict()
        write_json(path, metrics)
        return metrics
    finally:
        claims.release(_claim_file(path), token)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _shared_clean_model(spec: RunSpec, path: Path, wanted: str, poll: float = 1.0):
    """(clean model of ``spec``'s run, seconds this cell spent training it): trained once for all the cells that
    share it (a claim on ``<model>.claim`` while it trains); a cell that finds it claimed waits for the file
    instead of training a copy, and trains it itself if the claimant dies first."""
    from .cache import load_trained_for, save_trained_for
    from .experiments import split_of, train_clean_model

    lock, seen = path.with_suffix(".claim"), _mtime(path)
    while True:
        token = claims.claim(lock)
        if token is not None:
            try:
                with claims.heartbeat(lock, token):
                    model = load_trained_for(path, wanted) if _mtime(path) != seen else None  # written meanwhile
                    if model is not None:
                        return model, 0.0
                    start = time.perf_counter()
                    model = train_clean_model(spec.clean(), split_of(spec))
                    save_trained_for(model, path, wanted)
                    return model, time.perf_counter() - start
            finally:
                claims.release(lock, token)
        time.sleep(poll)
        if _mtime(path) != seen:
            model = load_trained_for(path, wanted)
            if model is not None:
                return model, 0.0
            seen = _mtime(path)


def _wait_for(spec: RunSpec, out, poll: float = 5.0) -> dict:
    """The result of a cell another process claimed; computed here if that process dies first."""
    path, said = cell_path(out, spec), None
    while finished_cell(path) is None:
        result = run_cell(spec, out)
        if result != CLAIMED_ELSEWHERE:
            return result
        owner = claims.read_owner(_claim_file(path))
        if owner is not None and owner.get("token") != said:
            tqdm.write(f"waiting for cell {spec.key}: {claims.describe(owner)} is computing it", file=sys.stderr)
            said = owner.get("token")
        time.sleep(poll)
    return finished_cell(path)


def _worker_start(parent: int) -> None:
    """A grid worker: one thread; gone quietly on Ctrl-C (the parent says what happened, and a killed cell's
    claim is stale at once); gone within a second when its parent dies (no orphan is left idling)."""
    import signal
    import threading

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` local worker processes, one thread each: forked on the CPU (fast), spawned when CUDA is there
    (a forked child cannot use CUDA once the parent has touched it)."""
    import multiprocessing

    import torch

    context = multiprocessing.get_context("spawn") if torch.cuda.is_available() else None
    return ProcessPoolExecutor(max_workers=jobs, initializer=_worker_start, initargs=(os.getpid(),),
                               mp_context=context)


def _interrupted(pool: ProcessPoolExecutor) -> bool:
    """True if a worker of ``pool`` left on Ctrl-C (``_worker_start`` exits with 130 on SIGINT)."""
    return any(getattr(p, "exitcode", None) == 130 for p in list((getattr(pool, "_processes", None) or {}).values()))


@contextmanager
def _sigint_ignored(seconds: float):
    """Ignore SIGINT for at least ``seconds`` (main thread only), then restore the handler before."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    start, before = time.monotonic(), signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
        time.sleep(max(0.0, seconds - (time.monotonic() - start)))
    finally:
        signal.signal(signal.SIGINT, before)


def _completed_pairs(executor, futures, own: bool):
    """(future, result) as each of ``futures`` finishes; a pool broken by a worker's Ctrl-C is the interrupt."""
    for fut in as_completed(futures):
        try:
            yield fut, fut.result()
        except BrokenProcessPool:
            if own:  # a worker that saw the group's Ctrl-C before this process did broke the pool
                if not _interrupted(executor):  # this process's own Ctrl-C may still be on its way (it arrives in
                    time.sleep(1.0)             # the wait), or the worker's exit code 130 not yet recorded
                if _interrupted(executor):
                    raise KeyboardInterrupt from None
            raise


def _completed(executor, futures, own: bool):
    """The results of ``futures`` as each finishes (see ``_completed_pairs``)."""
    return (result for _, result in _completed_pairs(executor, futures, own))


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once (Ctrl-C): queued cells are dropped and running ones killed; finished cells are kept."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with suppress(OSError, AttributeError):
            process.terminate()


def default_stack() -> int:
    """``--stack``'s default: 16 models at once where CUDA is there, 1 (no stacking) on the CPU, where
    stacked kernels gain little (``benchmarks/bench_stack.py``: about 1.1x the models per second)."""
    import torch

    return 16 if torch.cuda.is_available() else 1


def _stack_group(run: RunSpec) -> tuple:
    """Runs whose models can share a stack agree on this: dataset, settings, detector and split (so their
    training sets have one size), and the shape of the method's data and forward pass."""
    from .registry import CLEAN, method_info

    shape = ("clean",) if run.method == CLEAN else (lambda i: (i.views_in_data, i.contrast_in_data,
                                                               i.views_per_batch, i.trigger))(method_info(run.method))
    return (run.dataset, json.dumps(run.settings.to_dict(), sort_keys=True), run.detector, run.normal_class, run.labeled_ratio, run.pollution_ratio, run.known_anomaly_class, shape)


def models_to_stack(specs: list[RunSpec], out, stack: int) -> list[list[tuple[RunSpec, str]]]:
    """The models the cells ``specs`` need and ``out/models`` does not hold yet (each clean run once, each
    attack's backdoored model), as stacks of at most ``stack`` runs that ``_stack_group`` lets share one:
    each stack is [(run, model path), ...]."""
    from .cache import load_trained_for

    needed: dict[str, RunSpec] = {}
    for spec in specs:
        for run in (spec.clean(), spec.replace(defenses=()) if spec.attacked else None):
            path = str(Path(out) / "models" / f"{run.model_key}.pt") if run is not None else None
            if run is None or path in needed or load_trained_for(path, _model_identity(run)) is not None:
                continue
            needed[path] = run
    groups: dict[tuple, list] = {}
    for path, run in needed.items():
        groups.setdefault(_stack_group(run), []).append((run, path))
    return [members[i:i + stack] for members in groups.values() for i in range(0, len(members), stack)]


def train_stack(members: list[tuple[RunSpec, str]]) -> int:
    """Train one stack's models together (``experiments.train_stacked``, one thread) and keep each under its
    path, as a cell would keep it; a model another live process has claimed is left to it. Returns how
    many were trained."""
    from .cache import save_trained_for
    from .experiments import train_stacked

    locks = [(run, Path(path), claims.claim(Path(path).with_suffix(".claim"))) for run, path in members]
    mine = [(run, path, token) for run, path, token in locks if token is not None]
    try:
        if mine:
            with one_thread():
                models = train_stacked([run for run, _, _ in mine])
            for (run, path, _), model in zip(mine, models):
                save_trained_for(model, path, _model_identity(run))
        return len(mine)
    finally:
        for _, path, token in mine:
            claims.release(path.with_suffix(".claim"), token)


def _kept_models(spec: RunSpec, out) -> tuple[dict, str]:
    """The models a cell of ``spec`` was measured on, as kept under ``out/models`` by any version of the library:
    ({"clean": model, "backdoored": model or absent}, the source hash that trained them, "+"-joined if two).
    ValueError naming the file when one is missing, unreadable, or trained for another run."""
    from .deepsad import DeepSAD
    from .errors import CheckpointError

    runs = {"clean": spec.clean(), "backdoored": spec.replace(defenses=()) if spec.attacked else None}
    models, codes = {}, []
    for role, run in runs.items():
        if run is None:
            continue
        path = Path(out) / "models" / f"{run.model_key}.pt"
        if not path.is_file():
            raise ValueError(f"no kept {role} model for cell {spec.key}: {path} is missing")
        try:
            model = DeepSAD.load(path)
            identity = json.loads(model.trained_for_ or "null")
        except (CheckpointError, OSError, ValueError) as err:
            raise ValueError(f"the kept {role} model {path} cannot be used: {err}") from None
        if not isinstance(identity, dict) or identity.get("run") != run.canonical():
            raise ValueError(f"the kept {role} model {path} was not trained for cell {spec.key}'s run "
                             f"(it records {str(model.trained_for_)[:80]!r})")
        models[role], codes = model, codes + [str(identity.get("code"))]
    return models, "+".join(dict.fromkeys(codes))


def reevaluate_cell(spec: RunSpec, out: str) -> dict:
    """Measure ``spec``'s cell again with this code from its kept models (``_kept_models``), training nothing, and
    write ``OUT/cells/<key>.json``: made by this code, ``trained_by`` the code that trained the models, ``seconds``
    the measuring alone (and the defenses, which train on the kept model as they would in a cell)."""
    from .experiments import run
    from .provenance import made_by

    models, trained_by = _kept_models(spec, out)
    with one_thread():
        result = run(spec, clean_model=models["clean"], backdoored_model=models.get("backdoored"))
    metrics = result.cell.replace(made_by=made_by(code()), trained_by=trained_by).to_dict()
    write_json(cell_path(out, spec), metrics)
    return metrics


def reevaluate_grid(specs: list[RunSpec], out, executor: Executor | None = None, jobs: int = 1,
                    progress: bool = True) -> list[dict]:
    """Every cell of ``specs`` measured again from the models kept under ``out/models`` (``reevaluate_cell``):
    a new metric costs the measuring, not a grid. Every model is checked before anything runs; ValueError
    listing the missing ones (train them with ``run_grid``, which keeps them). Returns the results, in order."""
    from .summaries import write_tables

    out = Path(out).resolve()
    specs = list({s.key: s for s in specs}.values())
    problems = []
    for spec in specs:
        try:
            _kept_models(spec, out)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError(f"{len(problems)} of {len(specs)} cells cannot be re-evaluated from {out / 'models'}: "
                         + "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
                         + ". Run the grid without re-evaluating to train them (it keeps every model there).")
    (out / "cells").mkdir(exist_ok=True)
    clean_stale_temps(out / "cells")
    own = executor is None and min(jobs, len(specs)) > 1
    if own:
        executor = worker_pool(min(jobs, len(specs)))
    done = {}
    try:
        with tqdm(total=len(specs), desc="re-evaluated cells", disable=not progress) as bar:
            if executor is None:
                for spec in specs:
                    done[spec.key] = reevaluate_cell(spec, str(out))
                    bar.update()
            else:
                futures = {executor.submit(reevaluate_cell, s, str(out)): s for s in specs}
                for fut, result in _completed_pairs(executor, futures, own):
                    done[futures[fut].key] = result
                    write_json(cell_path(out, futures[fut]), result)  # a worker elsewhere wrote its own copy
                    bar.update()
    except KeyboardInterrupt:
        if own:
            with _sigint_ignored(0.5):
                stop_workers(executor)
            own = False
        raise
    finally:
        if own:
            executor.shutdown()
    results = [done[s.key] for s in specs]
    write_tables(results, out)
    return results


def run_grid(specs: list[RunSpec], out, executor: Executor | None = None, jobs: int = 1,
             progress: bool = True, stack: int | None = None) -> list[dict]:
    """Run the cells not yet finished under ``out``; returns every cell's result, in order.

    ``stack`` K > 1 (default ``default_stack()``: on CUDA only) first trains the models those cells need K at
    a time (``models_to_stack``, ``train_stack``: one job per stack) and keeps them under ``out/models``,
    where the cells then find them; every cell records ``trainer`` and ``stack``. A cell's ``seconds`` then
    count its measuring, not the stack's training (the table's wall time counts both)."""
    from .summaries import write_tables

    out = ensure_output_dir(out).resolve()  # absolute: a worker elsewhere must not write into its own folder
    for sub in ("cells", "models"):
        (out / sub).mkdir(exist_ok=True)
        clean_stale_temps(out / sub)
    specs = list({s.key: s for s in specs}.values())
    todo = [s for s in specs if finished_cell(cell_path(out, s)) is None]
    own = executor is None and min(jobs, len(todo)) > 1
    if own:
        executor = worker_pool(min(jobs, len(todo)))  # never more workers than cells
    stack = default_stack() if stack is None else stack
    if not isinstance(stack, int) or isinstance(stack, bool) or stack < 1:
        raise ValueError(f"stack must be a whole number of models >= 1 (1: no stacking), got {stack!r}")
    waiting, done = [], {}

    def finished(spec: RunSpec, result: dict) -> None:
        """The driver keeps each cell's result as its worker returned it, and writes it here unless the
        worker already did (so a worker on another machine, without this folder, loses nothing)."""
        made_by = result.get("made_by", {}).get("source")
        if made_by != code():
            raise ValueError(f"cell {spec.key} was computed by library source {made_by}, but this driver runs "
                             f"{code()}: install the same version of the course on every worker")
        done[spec.key] = result
        if finished_cell(cell_path(out, spec)) is None:
            write_json(cell_path(out, spec), result)
        bar.update()
    bar = None
    try:
        if stack > 1 and todo:
            stacks = models_to_stack(todo, out, stack)
            with tqdm(total=len(stacks), desc=f"model stacks (K <= {stack})", disable=not progress) as stack_bar:
                for _ in (map(train_stack, stacks) if executor is None else
                          _completed(executor, [executor.submit(train_stack, m) for m in stacks], own)):
                    stack_bar.update()
        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="grid cells", disable=not progress)
        if executor is None:
            for spec in todo:
                result = run_cell(spec, str(out))
                if result == CLAIMED_ELSEWHERE:
                    waiting.append(spec)
                else:
                    finished(spec, result)
        else:
            futures: dict[Future, RunSpec] = {executor.submit(run_cell, s, str(out)): s for s in todo}
            for fut, result in _completed_pairs(executor, futures, own):
                if result == CLAIMED_ELSEWHERE:
                    waiting.append(futures[fut])
                else:
                    finished(futures[fut], result)
        for spec in waiting:
            finished(spec, _wait_for(spec, out))
    except KeyboardInterrupt:
        if own:
            with _sigint_ignored(0.5):  # the group's Ctrl-C may reach this process now: one line, no traceback
                stop_workers(executor)
            own = False
        raise
    finally:
        if bar is not None:
            bar.close()
        if own:
            executor.shutdown()
    results = [done[s.key] if s.key in done else finished_cell(cell_path(out, s)) for s in specs]
    write_tables(results, out)
    return results
