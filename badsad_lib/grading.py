"""Scoring a filled-in lesson: ``badsad grade NOTEBOOK`` runs it top to bottom in a fresh kernel (quick
mode, nbclient) and reads the verdicts its checks recorded (``checks.progress``, the lesson's last cell).
``badsad nbgrader --out DIR`` writes the lessons as an nbgrader course instead, the same checks as its tests.

The score is the number of exercises whose check said "Correct": the same checks the learner sees, run
on the learner's own functions, never the solution's. A cell that raises does not stop the run (a
learner's broken cell must not hide the exercises after it); such cells are listed with the score.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"  # the course's solved lessons (a clone, not a wheel)


def _nbclient():
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as err:
        raise ValueError(f"running a lesson needs nbclient and nbformat ({err.name} is missing): "
                         f"pip install nbclient nbformat, or the course's dev extra") from err
    return nbformat, NotebookClient


def execute_quick(nb, folder, timeout: int, allow_errors: bool, **env) -> None:
    """Run notebook ``nb`` (an nbformat node, changed in place) top to bottom in a fresh python3 kernel started in
    ``folder``, in quick mode (BADSAD_QUICK=1) with ``env`` set for the kernel; each cell at most ``timeout`` s.
    Without ``allow_errors`` a cell that raises stops the run (nbclient's CellExecutionError)."""
    _, NotebookClient = _nbclient()
    from .kernel_client import SlicedKernelManager  # nbclient's waits in short polls (a missed wake-up costs 1 s)

    saved = {k: os.environ.get(k) for k in ("BADSAD_QUICK", *env)}
    os.environ.update(BADSAD_QUICK="1", **env)  # the kernel inherits them
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                       kernel_manager_class=SlicedKernelManager,
                       resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def grade_notebook(path, timeout: int = 1200) -> dict:
    """Run the notebook at ``path`` (quick mode; each cell at most ``timeout`` seconds) and return
    ``checks.progress``'s summary (lesson, done, exercises, verdicts) plus ``errors``: [(cell number, error
    name), ...] for the cells that raised. ValueError if the notebook is not a lesson with a progress cell."""
    nbformat, _ = _nbclient()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is not a notebook file (a lesson such as lessons/01_deepsad_basics.ipynb)")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several kinds for a file that is not a notebook
        raise ValueError(f"{path} is not a readable notebook ({type(err).__name__}: {err})") from err
    if not any(c.cell_type == "code" and "progress(" in c.source for c in nb.cells):
        raise ValueError(f"{path} has no progress cell (checks.progress): only the course's lessons can be graded")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "progress.json"
        execute_quick(nb, path.resolve().parent, timeout, allow_errors=True, BADSAD_PROGRESS=str(report))
        errors = [(i, o.get("ename", "error")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        if not report.exists():
            raise ValueError(f"{path}: the progress cell did not run (errors in cells "
                             f"{', '.join(str(i) for i, _ in errors) or 'none'}), so there is no score")
        summary = json.loads(report.read_text())
    return {**summary, "notebook": str(path), "errors": errors}


def format_grade(summary: dict) -> str:
    """The grade as a few lines: the score, each exercise's verdict, the cells that raised."""
    lines = [f"{summary['notebook']}: {summary['done']} of {summary['exercises']} exercises done "
             f"(lesson {summary['lesson']})"]
    lines += [f"  {verdict:16s} {name}" for name, verdict in summary["verdicts"].items()]
    if summary["errors"]:
        lines.append("  cells that raised: " + ", ".join(f"{i} ({name})" for i, name in summary["errors"]))
    return "\n".join(lines)


NBGRADER_BEGIN, NBGRADER_END = "### BEGIN SOLUTION", "### END SOLUTION"


def _nbgrader_meta(grade_id: str, solution: bool = False, grade: bool = False, points: int = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3, "solution": solution}
    return {**meta, "points": points} if grade else meta


def nbgrader_notebook(solution):
    """Solution notebook ``solution`` as an nbgrader source notebook: each exercise's code cell is an
    autograded-answer cell whose ``# BEGIN SOLUTION: <what to do>`` ... ``# END SOLUTION`` block becomes the hint
    as a comment and nbgrader's ``### BEGIN SOLUTION`` ... ``### END SOLUTION``; after each check cell a locked test
    cell worth 1 point asserts that the check's verdict is "done" (``checks.verdict``), so nbgrader scores
    exactly what ``badsad grade`` scores; every other cell is locked. ValueError if the checks and
    ``checks.EXERCISES`` disagree."""
    import re

    from .checks import EXERCISES

    nbformat, _ = _nbclient()
    path = Path(solution)
    nb = nbformat.read(path, as_version=4)
    lesson = path.stem[:2]
    if lesson not in EXERCISES:
        raise ValueError(f"{path} is not one of the course's lessons (01 to 04)")
    begin = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?::\s*(?P<what>.*))?$")
    cells, answers, checks = [], 0, 0
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("nbgrader", None)
        if cell.cell_type == "code" and "# BEGIN SOLUTION" in cell.source:
            answers += 1
            lines = []
            for line in cell.source.splitlines():
                m = begin.match(line)
                if m:
                    lines += [f"{m['indent']}# {m['what']}"] if m["what"] else []
                    lines.append(m["indent"] + NBGRADER_BEGIN)
                elif line.strip() == "# END SOLUTION":
                    lines.append(line[:len(line) - len(line.lstrip())] + NBGRADER_END)
                else:
                    lines.append(line)
            cell.source = "\n".join(lines)
            cell.metadata["nbgrader"] = _nbgrader_meta(f"lesson{lesson}-answer{answers}", solution=True)
            cells.append(cell)
            continue
        cell.metadata["nbgrader"] = _nbgrader_meta(f"lesson{lesson}-cell{i}")
        cells.append(cell)
        if cell.cell_type == "code" and re.search(r"^\w+ = check_\w+\(\w+\)\s*$", cell.source, re.M):
            if checks >= len(EXERCISES[lesson]):
                raise ValueError(f"{path} has more check cells than lesson {lesson}'s exercises")
            exercise = EXERCISES[lesson][checks]
            checks += 1
            test = nbformat.v4.new_code_cell(
                f"# autograded: {exercise} (1 point; the verdict of the check above)\n"
                "from badsad_lib.checks import verdict\n"
                f"assert verdict({exercise!r}) == \"done\", verdict({exercise!r})")
            test.metadata["nbgrader"] = _nbgrader_meta(f"lesson{lesson}-test{checks}", grade=True, points=1)
            cells.append(test)
    if answers != checks or checks != len(EXERCISES[lesson]):
        raise ValueError(f"{path}: {answers} answer cells and {checks} check cells, but lesson {lesson} has "
                         f"{len(EXERCISES[lesson])} exercises")
    nb.cells = cells
    return nb


# nbgrader runs each cell for at most 30 s by default; a lesson's training cells take minutes on a laptop's CPU
NBGRADER_CONFIG = """c = get_config()  # noqa: F821 (nbgrader's config loader defines it)
c.ExecutePreprocessor.timeout = 1200  # seconds per cell: the lessons train real models
"""


def export_nbgrader(out, notebooks=None) -> list[Path]:
    """Write each solution notebook (default: the course's) as ``out/source/lessonNN/<name>.ipynb``, an nbgrader
    course's source folder (``nbgrader_notebook``), and ``out/nbgrader_config.py`` with a per-cell timeout that
    fits the lessons' training (unless one is there); returns the notebooks' paths. Then, in ``out``: ``nbgrader
    generate_assignment lessonNN`` makes the learners' copies, ``nbgrader autograde lessonNN`` scores theirs."""
    from .io import ensure_output_dir, write_text

    nbformat, _ = _nbclient()
    notebooks = sorted(SOLUTIONS.glob("*.ipynb")) if notebooks is None else [Path(n) for n in notebooks]
    out = ensure_output_dir(out)
    if not (out / "nbgrader_config.py").exists():  # an instructor's own config is kept
        write_text(out / "nbgrader_config.py", NBGRADER_CONFIG)
    written = []
    for notebook in notebooks:
        nb = nbgrader_notebook(notebook)
        written.append(write_text(out / "source" / f"lesson{notebook.stem[:2]}" / notebook.name,
                                  nbformat.writes(nb) + "\n"))
    return written
