"""Suite-wide pytest hooks: the wall time of each notebook (sum of its cells under nbval) in the closing summary."""
from collections import defaultdict

_NOTEBOOK_SECONDS: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _NOTEBOOK_SECONDS[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _NOTEBOOK_SECONDS:
        return
    terminalreporter.section("notebook times (setup + cells + teardown)")
    for path, seconds in sorted(_NOTEBOOK_SECONDS.items()):
        terminalreporter.write_line(f"{seconds:7.1f} s  {path}")
    terminalreporter.write_line(f"{sum(_NOTEBOOK_SECONDS.values()):7.1f} s  all notebooks")


def pytest_collection_modifyitems(items):
    """nbval waits only 5 s for a cell's last outputs once the kernel has replied; a busy machine (a
    grid running beside the tests) can take longer to flush a training cell's progress messages."""
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 60
