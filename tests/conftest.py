"""Shared test set-up: the smoke profile, GPU skipping, and a time limit per notebook."""

from __future__ import annotations

import os
from collections import defaultdict

import pytest

os.environ.setdefault("RECURSIONLAB_PROFILE", "smoke")
os.environ.setdefault("RECURSIONLAB_PROGRESS", "0")
# Tests run side by side (pytest-xdist) on 2 cores: one intra-op thread each avoids oversubscription, which
# slows tiny models down by an order of magnitude. Notebook kernels inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

NOTEBOOK_LIMIT_S = float(os.environ.get("RECURSIONLAB_NOTEBOOK_LIMIT_S", "60"))
_notebook_seconds: dict[str, float] = defaultdict(float)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one intra-op thread: the course's tiny models run far faster without a thread pool, and the
    setting holds even when a caller exported a larger OMP_NUM_THREADS. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def pytest_runtest_logreport(report):
    # nbval names each cell "<path>.ipynb::Cell N"; sum the cells' run times per notebook.
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb") and report.when in ("setup", "call"):
        _notebook_seconds[path] += report.duration


def _over_limit() -> dict[str, float]:
    return {nb: s for nb, s in _notebook_seconds.items() if s > NOTEBOOK_LIMIT_S}


def pytest_terminal_summary(terminalreporter):
    if not _notebook_seconds:
        return
    terminalreporter.section("notebook run times (smoke profile)")
    for nb, seconds in sorted(_notebook_seconds.items()):
        flag = "  OVER LIMIT" if seconds > NOTEBOOK_LIMIT_S else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {nb}{flag}")
    total = sum(_notebook_seconds.values())
    terminalreporter.write_line(f"{total:7.1f} s  total over {len(_notebook_seconds)} notebooks "
                                f"(limit {NOTEBOOK_LIMIT_S:.0f} s each)")
    for nb, seconds in _over_limit().items():
        terminalreporter.write_line(
            f"FAILED: {nb} took {seconds:.1f} s at smoke, over the {NOTEBOOK_LIMIT_S:.0f} s limit"
        )


def pytest_sessionfinish(session, exitstatus):
    if _over_limit() and exitstatus == 0:
        session.exitstatus = 1
