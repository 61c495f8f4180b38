"""Shared fixtures: real `ns-train` runs of each teacher on the shipped demo scene (CPU)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

from tests.cli import TEACHER_METHODS, TrainedRun, train


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


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
