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
def test_each_lesson_has_three_exercises_whose_checks_hand_on_the_learners_function(path):
    solution = nbformat.read(path, as_version=4)
    lesson = make_lessons.lesson_from(solution)
    stubs = [c for c in lesson.cells if c.cell_type == "code" and "NotImplementedError(\"Exercise:" in c.source]
    checks = [c for c in lesson.cells if "check" in c.metadata.get("tags", [])]
    assert len(stubs) >= 3 and len(checks) >= 3
    for stub, check in zip(stubs, checks):
        name = stub.source.split("def ", 1)[1].split("(", 1)[0]
        assert check.source == f"{name} = check_{check.source.split('check_', 1)[1]}", check.source
        body = [line for line in stub.source.splitlines()[1:] if line.strip() and "NotImplementedError" not in line]
        assert body, f"{path.name}: the stub of {name} should keep partial code that teaches"
    assert any("answer" in c.metadata.get("tags", []) for c in solution.cells)
    answers = [c for c in lesson.cells if c.source.startswith(make_lessons.ANSWER_PROMPT)]
    solved = [c for c in solution.cells if "answer" in c.metadata.get("tags", [])]
    assert len(answers) == len(solved) and all("<details>" in c.source and "</details>" in c.source for c in answers)
    assert solved[0].source.split("\n", 1)[1].strip() in answers[0].source  # the prose answers, folded in the lesson


@pytest.mark.parametrize("path", SOLUTIONS + sorted((ROOT / "lessons").glob("*.ipynb")), ids=lambda p: p.name)
def test_run_all_relies_on_no_cell_tag_and_starts_with_the_set_up_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert not any("raises-exception" in c.metadata.get("tags", []) for c in nb.cells)  # Colab ignores tags
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source == make_lessons.setup_source() and "QUICK = True" in first.source
    assert "course.start(" in next(c for c in nb.cells[2:] if c.cell_type == "code").source


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("digits-cache")


@pytest.mark.parametrize("path", sorted((ROOT / "lessons").glob("*.ipynb")), ids=lambda p: p.name)
def test_an_unsolved_lesson_runs_top_to_bottom_on_digits(path, digits_cache):
    """"Run all" with nothing solved and no tags (nbclient), on the embedded digits; nbval runs the
    same notebooks on MNIST when BADSAD_DATA is set."""
    import os

    from nbclient import NotebookClient

    from badsad_lib.kernel_client import SlicedKernelManager

    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.pop(k, None) for k in ("BADSAD_DATA", "BADSAD_CACHE")}
    os.environ["BADSAD_CACHE"] = str(digits_cache)  # shared by the four lessons, as a learner's cache is
    try:
        # 120 s a cell (digits' cells take seconds); the sliced kernel manager polls for replies 1 s at a time,
        # so a missed wake-up (kernel_client's docstring) costs a second, not the whole timeout
        NotebookClient(nb, timeout=120, kernel_name="python3", kernel_manager_class=SlicedKernelManager,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert "Falling back to scikit-learn's 8x8 digits" in text
    assert text.count("Not done yet") >= 3 and "Correct" not in text
    assert f"Lesson {path.name[:2]}: 0 of" in text  # the progress cell at the end sums it up


def test_exercise_source_replaces_only_the_solution_block():
    src = "def f(x):\n    # BEGIN SOLUTION: double x\n    return 2 * x\n    # END SOLUTION\nprint(f)"
    assert make_lessons.exercise_source(src) == \
        'def f(x):\n    raise NotImplementedError("Exercise: double x")\nprint(f)'
    with pytest.raises(ValueError, match="without END"):
        make_lessons.exercise_source("# BEGIN SOLUTION\nx = 1")
