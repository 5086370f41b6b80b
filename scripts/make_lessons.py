#!/usr/bin/env python3
"""Generate the learner notebooks in lessons/ from the solved ones in solutions/ (the one source of truth).

In a solution notebook:
- code between ``# BEGIN SOLUTION: <what to do>`` and ``# END SOLUTION`` becomes
  ``raise NotImplementedError("Exercise: <what to do>")`` at the same indentation;
- a cell tagged ``check`` (it calls a ``check_*`` helper on the exercise) is tagged
  ``raises-exception`` in the lesson, so nbval accepts the NotImplementedError there;
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
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?::\s*(?P<what>.*))?$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
ANSWER_PROMPT = "*Your answer:* write it here, then compare with the solution notebook."


def strip(nb):
    """Remove outputs, execution counts and per-run metadata, in place."""
    for cell in nb.cells:
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
            if "check" in tags and "raises-exception" not in tags:
                tags.append("raises-exception")
        elif "answer" in tags:
            cell.source = ANSWER_PROMPT
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
    for name in sorted({p.name for p in (ROOT / "lessons").glob("*.ipynb")} -
                       {p.name for p in (ROOT / "solutions").glob("*.ipynb")}):
        problems.append(f"lessons/{name} has no solution notebook")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
