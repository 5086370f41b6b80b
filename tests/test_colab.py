"""A fresh Colab runtime, reproduced: a Python environment that has the dependencies but not this
package, with a ``google.colab`` module present. Each lesson's first cell, run as is in an IPython
shell there, must find the course (folder, uploaded zip or git URL), import the library in the same
kernel and report quick mode; with no course anywhere it must say in one sentence what to do."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
RUNNER = """
import sys, json
import google.colab  # the fake Colab module: the first cell must see it in sys.modules
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
result = shell.run_cell(open(sys.argv[1]).read())
error = result.error_in_exec or result.error_before_exec
print(json.dumps({"ok": error is None, "error": repr(error),
                  "badsad_lib": getattr(sys.modules.get("badsad_lib"), "__file__", None)}))
"""


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    """A venv without pip or this package; the dependencies come from the test's own site-packages,
    added through a .pth file (whose own .pth files, the editable install among them, are not run)."""
    base = tmp_path_factory.mktemp("colab")
    env = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    fake = base / "fake" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text('"""Stands in for Colab\'s module in tests."""\n')
    (base / "runner.py").write_text(RUNNER)
    probe = subprocess.run([python, "-c", "import torch, sklearn, ipywidgets\nimport badsad_lib"], capture_output=True,
                           text=True, cwd=base)
    assert "No module named 'badsad_lib'" in probe.stderr, probe.stderr  # dependencies yes, package no
    return {"python": python, "base": base, "fake": base / "fake"}


def _course_copy(target: Path) -> Path:
    """The course's files (no virtual environment, no caches), as an uploaded copy would hold them."""
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "runs", ".pytest_cache")
    shutil.copytree(ROOT, target, ignore=ignore)
    return target


def _first_cell(lesson: Path, tmp: Path) -> Path:
    nb = json.loads(lesson.read_text())
    source = next(c for c in nb["cells"] if c["cell_type"] == "code")["source"]
    path = tmp / f"{lesson.stem}_cell.py"
    path.write_text("".join(source))
    return path


def _run(env, cell: Path, cwd: Path, **variables):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BADSAD_SOURCE", "BADSAD_GIT_URL", "PYTHON"))}
    environ.update(PYTHONPATH=str(env["fake"]), BADSAD_CACHE=str(cwd / "cache"), **variables)
    done = subprocess.run([env["python"], env["base"] / "runner.py", cell], capture_output=True, text=True, cwd=cwd,
                          env=environ, timeout=300)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report, done.stdout


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_each_first_cell_imports_the_course_from_a_folder_and_reports_quick_mode(fresh_env, tmp_path, lesson):
    source = _course_copy(tmp_path / "content" / "badsad")
    report, out = _run(fresh_env, _first_cell(lesson, tmp_path), tmp_path / "content",
                       BADSAD_SOURCE=str(source), BADSAD_QUICK="")
    assert report["ok"], out
    assert report["badsad_lib"].startswith(str(source)) and "Mode: quick" in out


def test_the_first_cell_unpacks_an_uploaded_zip(fresh_env, tmp_path):
    course = _course_copy(tmp_path / "staging" / "badsad-main")
    content = tmp_path / "content"
    content.mkdir()
    with zipfile.ZipFile(content / "badsad-main.zip", "w") as archive:
        for path in course.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(course.parent))
    with zipfile.ZipFile(content / "a-holiday.zip", "w") as other:  # sorts first; holds no course
        other.writestr("photo.txt", "not the course")
    report, out = _run(fresh_env, _first_cell(LESSONS[0], tmp_path), content,
                       BADSAD_SOURCE=str(content / "badsad"), BADSAD_QUICK="")
    assert report["ok"], out
    assert report["badsad_lib"].startswith(str(content / "badsad" / "badsad-main")) and "Mode: quick" in out


def _zip_of(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for path in folder.rglob("*"):
            if path.is_file():
                z.write(path, path.relative_to(folder.parent))
    return archive


def test_of_several_zips_the_first_cell_unpacks_only_the_newest_course(fresh_env, tmp_path):
    """A stray zip whose library sits too deep, and an older course zip, are not merged into the course."""
    content = tmp_path / "content"
    content.mkdir()
    with zipfile.ZipFile(content / "a-stray.zip", "w") as stray:  # sorts first; its badsad_lib is three folders down
        stray.writestr("x/y/badsad_lib/__init__.py", "raise SystemExit('the stray zip was imported')")
        stray.writestr("x/stray.txt", "not the course")
    old = _course_copy(tmp_path / "staging" / "badsad-old")
    (old / "OLD_MARKER").write_text("old")
    _zip_of(old, content / "b-old.zip")
    os.utime(content / "b-old.zip", (1e9, 1e9))
    new = _course_copy(tmp_path / "staging2" / "badsad-main")
    _zip_of(new, content / "c-new.zip")
    report, out = _run(fresh_env, _first_cell(LESSONS[0], tmp_path), content,
                       BADSAD_SOURCE=str(content / "badsad"), BADSAD_QUICK="")
    assert report["ok"], out
    assert report["badsad_lib"].startswith(str(content / "badsad" / "badsad-main"))
    assert sorted(p.name for p in (content / "badsad").iterdir()) == ["badsad-main"]
    assert "c-new.zip (the newest of 2 course zips)" in out


def test_a_git_url_that_looks_like_an_option_is_not_one(fresh_env, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    marker = tmp_path / "ran"
    report, out = _run(fresh_env, _first_cell(LESSONS[1], tmp_path), content, BADSAD_SOURCE=str(content / "badsad"),
                       BADSAD_GIT_URL=f"--upload-pack=touch {marker};", BADSAD_QUICK="")
    assert not report["ok"] and "git clone of BADSAD_GIT_URL" in report["error"]
    assert not marker.exists()


def test_the_first_cell_clones_the_git_url(fresh_env, tmp_path):
    origin = _course_copy(tmp_path / "origin")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "course"]):
        subprocess.run(["git", *args], cwd=origin, check=True)
    content = tmp_path / "content"
    content.mkdir()
    report, out = _run(fresh_env, _first_cell(LESSONS[1], tmp_path), content, BADSAD_SOURCE=str(content / "badsad"),
                       BADSAD_GIT_URL=origin.as_uri(), BADSAD_QUICK="")
    assert report["ok"], out
    assert report["badsad_lib"].startswith(str(content / "badsad"))


def test_with_no_course_anywhere_the_first_cell_says_what_to_do(fresh_env, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    report, out = _run(fresh_env, _first_cell(LESSONS[2], tmp_path), content, BADSAD_SOURCE=str(content / "badsad"),
                       BADSAD_GIT_URL="")
    assert not report["ok"] and "SystemExit" in report["error"]
    assert "Course not found: upload its zip" in report["error"]
