import os

import pytest

from badsad_lib.data import load_dataset, make_split
from badsad_lib.deepsad import DeepSAD
from badsad_lib.settings import DIGITS

requires_data = pytest.mark.skipif(not os.environ.get("BADSAD_DATA"),
                                   reason="BADSAD_DATA is not set (CI sets it to ../shared/data)")


def pytest_configure(config):
    """Under pytest-xdist (the suite's default, ``-n auto``), each worker gets an equal share of the cores:
    torch threads here, and OMP_NUM_THREADS for the notebook kernels nbval starts (they inherit it).
    Tiny networks slow down badly when threads outnumber cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _torch_threads_are_left_as_found():
    """A test that changes torch's thread count must put it back. One that did not (2 threads left in a
    worker while a notebook kernel used the other core) made every later training in that worker 15-40x
    slower: the two threads of each tiny operation wait on each other when one core is taken."""
    import torch

    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"this test left torch at {after} threads (it found {before}); restore them in a finally")


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_split(digits):
    return make_split(digits, normal_class=0, labeled_ratio=0.05, val_ratio=0.2, seed=0)


@pytest.fixture(scope="session")
def digits_model(digits_split):
    s = digits_split
    return DeepSAD("digits", DIGITS, seed=0, progress=False).fit(s.x_train, s.semi_targets, X_val=s.x_val)
