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


def _imports_of(path: Path) -> set[str]:
    """The badsad_lib modules a module imports, at its top or inside functions (lazy imports count too)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("badsad_lib."):
            found.add(node.module.split(".")[1])
    return found - {path.stem}


def test_no_import_cycle_in_the_library():
    """Each module's work has one owner: no chain of imports, lazy ones included, leads back to where it began."""
    graph = {p.stem: _imports_of(p) for p in (ROOT / "badsad_lib").glob("*.py")}

    def cycle_from(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return path + [nxt]
            if nxt not in path and nxt in graph:
                found = cycle_from(start, nxt, path + [nxt])
                if found:
                    return found
        return None
    cycles = [c for c in (cycle_from(m, m, [m]) for m in sorted(graph)) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_constraints_pin_every_direct_dependency_within_its_bounds():
    """constraints.txt (what CI installs) pins each package pyproject names, at a version its bound allows."""
    pins = dict(line.strip().lower().split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name = _name(requirement)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        floor = re.search(r">=\s*([\d.]+)", requirement)
        if floor:
            version = tuple(int(p) for p in re.findall(r"\d+", pins[name])[:3])
            wanted = tuple(int(p) for p in floor.group(1).split("."))
            assert version[:len(wanted)] >= wanted, f"{name}=={pins[name]} is below {requirement}"
