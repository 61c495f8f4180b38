"""Shared fixtures: real `ns-train` runs of each teacher on the shipped demo scene (CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from tests.cli import TEACHER_METHODS, TrainedRun, cli_threads, train


SESSION_RUNS = {"teacher_runs", "untrained_run"}
"""The session's training runs: tests that use them share one xdist worker, which trains them once."""


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    import torch

    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
        # Under `pytest -n N --dist loadgroup` (scripts/test.sh), a module's CLI tests stay on one
        # worker so that its module-scoped training runs happen once; unit tests spread freely.
        if SESSION_RUNS & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("session_runs"))
        elif "cli" in item.keywords:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__.rsplit(".", 1)[-1]))
    # Longest chains first, so no worker starts the session's runs while the others run out of work:
    # the session runs, then the other CLI modules, then the unit tests that fill the gaps.
    items.sort(key=lambda item: 0 if SESSION_RUNS & set(item.fixturenames) else 1 if "cli" in item.keywords else 2)


def pytest_configure(config) -> None:
    """Each xdist worker (and the ns-* commands it starts, see tests/cli.py) gets its share of the cores."""
    import torch

    torch.set_num_threads(cli_threads())


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def untrained_run(runs_dir: Path) -> TrainedRun:
    """The standard teacher after a single step: the baseline "untrained" quality."""
    return train("distilled-3dgs-teacher", runs_dir, "untrained", steps=1)


@pytest.fixture(scope="session")
def teacher_runs(runs_dir: Path) -> Dict[str, TrainedRun]:
    """Each teacher method trained for a few hundred steps through the real CLI. The tests' schedule
    never stops densifying, so the dropout teacher drops Gaussians from the first step at a constant
    20% (DropGaussian's every-step dropout, the options for it), to run its dropout through ns-train."""
    extra = {"distilled-3dgs-teacher-dropout": ["--pipeline.model.dropout-while-densifying", "True",
                                                "--pipeline.model.dropout-final-rate", "None"]}  # fmt: skip
    return {method: train(method, runs_dir, method, extra=extra.get(method, ())) for method in TEACHER_METHODS}
