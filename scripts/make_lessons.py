#!/usr/bin/env python3
"""Generate the learner notebooks in lessons/ from the solved ones in solutions/ (the one source of truth).

In a solution notebook:
- the code cell tagged ``setup`` (the first one) is rewritten from ``SETUP_CELL`` below, in both
  folders, so every notebook starts with the same set-up; the course's git URL in it comes from
  one place, ``[tool.badsad] git-url`` in pyproject.toml;
- code between ``# BEGIN SOLUTION: <what to do>`` and ``# END SOLUTION`` becomes
  ``raise NotImplementedError("Exercise: <what to do>")`` at the same indentation; the code around
  the block stays in the lesson (the partial code that teaches);
- a cell tagged ``check`` calls a ``check_*`` helper on the exercise. Checks never raise: an
  unsolved exercise is reported and the lesson continues with the library's version, so "Run
  all" works top to bottom in JupyterLab and in Colab (which ignores cell tags);
- a markdown cell tagged ``answer`` is replaced by a prompt to answer the question yourself.
Outputs and execution counts are stripped from both folders.

    python scripts/make_lessons.py          # (re)write lessons/ and strip solutions/
    python scripts/make_lessons.py --check  # exit 1 if lessons/ is not what solutions/ generates
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
# The first code cell of every notebook. It must run before the library can be imported, so it is
# the one cell that does its own work: on Colab it finds the course (a folder, an uploaded zip, or
# a git clone) and puts it on sys.path, which takes effect in the running kernel (an editable pip
# install would need a restart). Everywhere else the course is installed (README) and this is a no-op.
SETUP_CELL = """\
# Set-up. QUICK = True trains in minutes on a CPU; QUICK = False uses the paper's settings (times above).
QUICK = True
import glob, importlib.util, os, sys
if "google.colab" in sys.modules and importlib.util.find_spec("badsad_lib") is None:
    import subprocess, zipfile  # Colab: find the course and import it in this kernel, no restart needed
    SOURCE, GIT_URL = os.environ.get("BADSAD_SOURCE", "/content/badsad"), os.environ.get("BADSAD_GIT_URL", "{git_url}")
    def course_folder():
        found = glob.glob(f"{{SOURCE}}/badsad_lib/__init__.py") + glob.glob(f"{{SOURCE}}/*/badsad_lib/__init__.py")
        return os.path.dirname(os.path.dirname(found[0])) if found else None
    def holds_course(archive):  # the library at the zip's top or one folder down, as course_folder() looks
        return zipfile.is_zipfile(archive) and any(n.endswith("badsad_lib/__init__.py") and n.count("/") <= 2
                                                   for n in zipfile.ZipFile(archive).namelist())
    zips = [] if course_folder() else sorted(filter(holds_course, glob.glob(f"{{os.path.dirname(SOURCE)}}/*.zip")), key=os.path.getmtime)
    if zips:  # exactly one zip is unpacked: the newest that holds the course
        print(f"Unpacking {{zips[-1]}}" + (f" (the newest of {{len(zips)}} course zips)" if len(zips) > 1 else ""))
        zipfile.ZipFile(zips[-1]).extractall(SOURCE)
    if not course_folder() and GIT_URL and subprocess.run(["git", "clone", "-q", "--depth=1", "--", GIT_URL, SOURCE]).returncode:
        raise SystemExit(f"git clone of BADSAD_GIT_URL={{GIT_URL!r}} failed (message above); check the URL.")
    if not course_folder():
        raise SystemExit(f"Course not found: upload its zip to {{os.path.dirname(SOURCE)}}, or put its folder at {{SOURCE}}, or set BADSAD_GIT_URL.")
    sys.path.insert(0, course_folder())
elif importlib.util.find_spec("badsad_lib") is None and os.path.isdir("../badsad_lib"):
    sys.path.insert(0, os.path.abspath(".."))  # the course folder, opened without installing it
from badsad_lib import course
course.setup(QUICK)"""


def git_url() -> str:
    """The course's git URL: the one place it is set is ``[tool.badsad] git-url`` in pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("badsad", {}).get("git-url", "")


def setup_source() -> str:
    return SETUP_CELL.format(git_url=git_url())
BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?::\s*(?P<what>.*))?$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
ANSWER_PROMPT = "*Your answer:* write it here first, then open the answers below and compare."


def folded_answers(source: str) -> str:
    """The self-check answers of a solution cell, folded away under the learner's prompt (the solution notebook
    also holds every code answer, so the lesson keeps the prose answers itself)."""
    body = source.strip()
    body = body[len("**Answers.**"):].strip() if body.startswith("**Answers.**") else body
    return f"{ANSWER_PROMPT}\n\n<details>\n<summary>Answers (open after writing yours)</summary>\n\n{body}\n\n</details>"


TIMES = ROOT / "badsad_lib" / "results" / "notebook_times.json"
SPEED = ROOT / "badsad_lib" / "results" / "speed.json"
READING = {"01": 45, "02": 40, "03": 50, "04": 50}  # minutes of reading and exercises: an estimate, not a measurement


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


def measured_times(lesson: str) -> tuple[str, str]:
    """(quick, full): the compute a "Run all" of ``lesson`` took on MNIST, from ``notebook_times.json``
    (full mode, where not measured, estimated per model from the benchmark's ``speed.json``)."""
    import json

    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    out = []
    for mode in ("quick", "full"):
        found = {k: v for k, v in times.items() if k.startswith(f"lessons/{lesson}") and f" {mode} mnist" in k}
        if found:
            v = next(iter(found.values()))
            cache = "cold cache" if v["cache"] == "cold" else "cache warmed by the earlier lessons"
            out.append(f"{_minutes(v['seconds'])} ({cache}; {v['machine'].split(',')[0]}, "
                       f"{v['machine'].split(',')[1].strip()})")
        elif mode == "full" and SPEED.exists():
            figures = json.loads(SPEED.read_text())["figures"]
            per_model = 150 * (figures["autoencoder epoch, paper settings (s)"]
                               + figures["DeepSAD epoch, paper settings (s)"])
            out.append(f"not measured end to end; about {_minutes(per_model)} for each model the cache does not "
                       f"hold (estimated from the benchmark's seconds per epoch, `speed.json`)")
        else:
            out.append("not measured end to end yet")
    return out[0], out[1]


def time_line(lesson: str) -> str:
    """The lesson header's **Time:** line."""
    quick, full = measured_times(lesson)
    return (f"**Time:** compute for \"Run all\" on MNIST, quick mode: {quick}; full mode (the paper's settings): "
            f"{full}. On a GPU: not measured (no GPU was available when these were measured). Reading and "
            f"exercises: about {READING[lesson]} minutes. Measured by `scripts/time_notebooks.py`; the figures live in "
            f"`badsad_lib/results/notebook_times.json`.")


def course_times(text: str) -> str:
    """COURSE.md with its block of measured lesson times re-rendered."""
    rows = ["| lesson | compute for \"Run all\", quick mode | full mode | reading and exercises |", "|---|---|---|---|"]
    for lesson in sorted(READING):
        quick, full = measured_times(lesson)
        rows.append(f"| {lesson} | {quick} | {full} | about {READING[lesson]} min |")
    return re.sub(r"(<!-- begin times -->\n).*?(<!-- end times -->)", lambda m: m.group(1) + "\n".join(rows) + "\n"
                  + m.group(2), text, flags=re.S)


def strip(nb):
    """Remove outputs, execution counts and per-run metadata, and write the set-up cell, in place."""
    lesson = nb.metadata.get("badsad", {}).get("lesson")
    for cell in nb.cells:
        if cell.cell_type == "code" and "setup" in cell.metadata.get("tags", []):
            cell.source = setup_source()
        if cell.cell_type == "markdown" and lesson and "**Time:**" in cell.source:
            cell.source = re.sub(r"\*\*Time:\*\*[^\n]*", lambda m: time_line(lesson), cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
    nb.metadata.pop("widgets", None)
    return nb


def exercise_source(source: str) -> str:
    """Replace every solution block of a code cell by a NotImplementedError."""
    out, inside = [], False
    for line in source.split("\n"):
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise ValueError(f"nested # BEGIN SOLUTION in:\n{source}")
            inside = True
            what = (begin.group("what") or "complete this function").strip().replace('"', "'")
            out.append(f'{begin.group("indent")}raise NotImplementedError("Exercise: {what}")')
        elif END.match(line):
            if not inside:
                raise ValueError(f"# END SOLUTION without BEGIN in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"# BEGIN SOLUTION without END in:\n{source}")
    return "\n".join(out)


def lesson_from(solution):
    nb = strip(copy.deepcopy(solution))
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if cell.cell_type == "code":
            cell.source = exercise_source(cell.source)
        elif "answer" in tags:
            cell.source = folded_answers(cell.source)
        if tags:
            cell.metadata["tags"] = tags
    return nb


def render(nb) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify; write nothing")
    args = parser.parse_args(argv)
    problems = []
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        stripped, lesson = render(strip(copy.deepcopy(solution))), render(lesson_from(solution))
        target = ROOT / "lessons" / path.name
        for file, text in ((path, stripped), (target, lesson)):
            current = file.read_text() if file.exists() else None
            if current == text:
                continue
            if args.check:
                problems.append(f"{file.relative_to(ROOT)} is out of date (run python scripts/make_lessons.py)")
            else:
                file.write_text(text)
                print(f"wrote {file.relative_to(ROOT)}")
    course = ROOT / "COURSE.md"
    text = course.read_text()
    if course_times(text) != text:
        if args.check:
            problems.append("COURSE.md's lesson times are out of date (run python scripts/make_lessons.py)")
        else:
            course.write_text(course_times(text))
            print("wrote COURSE.md")
    for name in sorted({p.name for p in (ROOT / "lessons").glob("*.ipynb")} -
                       {p.name for p in (ROOT / "solutions").glob("*.ipynb")}):
        problems.append(f"lessons/{name} has no solution notebook")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
