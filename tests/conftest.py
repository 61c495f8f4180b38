"""Shared fixtures: real `ns-train` runs of each teacher on the shipped demo scene (CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from tests.cli import TEACHER_METHODS, TrainedRun, cli_threads, train


SHARED_RUNS_GROUP = {"test_cli_student": "teacher_runs", "test_cli_teachers": "teacher_runs"}
"""Modules whose tests share the session's teacher runs: one xdist worker trains them once."""


def pytest_collection_modifyitems(config, items):
    import torch

    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
        if "cli" in item.keywords:
            # Under `pytest -n N --dist loadgroup` (scripts/test.sh), a module's CLI tests stay on one
            # worker so that its module-scoped training runs happen once; unit tests spread freely.
            module = item.module.__name__.rsplit(".", 1)[-1]
            item.add_marker(pytest.mark.xdist_group(SHARED_RUNS_GROUP.get(module, module)))


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
    """Each teacher method trained for a few hundred steps through the real CLI."""
    return {method: train(method, runs_dir, method) for method in TEACHER_METHODS}
