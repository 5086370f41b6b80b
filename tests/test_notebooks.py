"""The notebooks: lessons are generated from solutions, committed without outputs, exercises stubbed."""
import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
spec = importlib.util.spec_from_file_location("make_lessons", ROOT / "scripts" / "make_lessons.py")
make_lessons = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_lessons)


def test_there_are_four_lessons_each_with_a_solution():
    assert [p.name[:2] for p in SOLUTIONS] == ["01", "02", "03", "04"]
    assert sorted(p.name for p in (ROOT / "lessons").glob("*.ipynb")) == [p.name for p in SOLUTIONS]


def test_lessons_are_in_sync_with_solutions():
    assert make_lessons.main(["--check"]) == 0, "run python scripts/make_lessons.py"


@pytest.mark.parametrize("path", SOLUTIONS + sorted((ROOT / "lessons").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_each_lesson_has_three_exercises_checks_and_answers(path):
    solution = nbformat.read(path, as_version=4)
    lesson = make_lessons.lesson_from(solution)
    stubs = [c for c in lesson.cells if c.cell_type == "code" and "NotImplementedError(\"Exercise:" in c.source]
    checks = [c for c in lesson.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert len(stubs) >= 3 and len(checks) >= 3
    assert all("check_" in c.source for c in checks)
    assert any("answer" in c.metadata.get("tags", []) for c in solution.cells)
    assert make_lessons.ANSWER_PROMPT in [c.source for c in lesson.cells]
    assert "google.colab" in lesson.cells[1].source and "course.start" in lesson.cells[1].source


def test_exercise_source_replaces_only_the_solution_block():
    src = "def f(x):\n    # BEGIN SOLUTION: double x\n    return 2 * x\n    # END SOLUTION\nprint(f)"
    assert make_lessons.exercise_source(src) == \
        'def f(x):\n    raise NotImplementedError("Exercise: double x")\nprint(f)'
    with pytest.raises(ValueError, match="without END"):
        make_lessons.exercise_source("# BEGIN SOLUTION\nx = 1")
