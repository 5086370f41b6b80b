import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_and_pyproject_name_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]
                 + project["optional-dependencies"]["lab"]}
    conda_names = set()
    in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
        elif in_deps and re.match(r"\s+- ", line):
            name = _name(line.split("- ", 1)[1].split("#")[0])
            if name not in ("python", "pip"):
                conda_names.add(CONDA_TO_PIP.get(name, name))
    assert conda_names == pip_names
    deps = (ROOT / "environment.yml").read_text().split("dependencies:", 1)[1]
    for line in deps.splitlines():  # every dependency says what it is for
        if re.match(r"\s+- [a-z]", line) and not re.match(r"\s+- (python|pip)\b", line):
            assert "#" in line, line


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme, f"README does not show CI's test command: {ci}"
