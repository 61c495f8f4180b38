"""End to end through the real CLI: ns-train each teacher on the demo scene, then ns-export and ns-eval."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from plyfile import PlyData

from tests.cli import NUM_RANDOM, TEACHER_METHODS, TRAIN_STEPS, TrainedRun, run_cli

pytestmark = pytest.mark.cli

# ns-export gaussian-splat drops Gaussians whose opacity is below 1/255 (logit -5.5373).
EXPORT_MIN_OPACITY_LOGIT = math.log((1 / 255) / (1 - 1 / 255))


@pytest.fixture(scope="module")
def evaluations(teacher_runs: Dict[str, TrainedRun], untrained_run: TrainedRun, runs_dir: Path):
    results = {method: run.evaluate(runs_dir / f"{method}-eval.json") for method, run in teacher_runs.items()}
    results["untrained"] = untrained_run.evaluate(runs_dir / "untrained-eval.json")
    return results


@pytest.mark.parametrize("method", TEACHER_METHODS)
def test_training_improves_quality_well_beyond_untrained(method: str, evaluations) -> None:
    untrained, trained = evaluations["untrained"], evaluations[method]
    assert {"psnr", "ssim"} <= trained.keys()
    assert trained["psnr"] > untrained["psnr"] + 4.0, (untrained, trained)
    assert trained["ssim"] > untrained["ssim"] + 0.1, (untrained, trained)


@pytest.mark.parametrize("method", TEACHER_METHODS)
def test_densification_and_pruning_change_the_gaussian_count(method: str, teacher_runs) -> None:
    run = teacher_runs[method]
    first, last = run.load_gaussians(run.checkpoints[0]), run.load_gaussians()
    assert len(run.checkpoints) >= 2
    assert first["means"].shape[0] != NUM_RANDOM
    assert last["means"].shape[0] != first["means"].shape[0]
    assert all(torch.isfinite(v).all() for v in last.values())


@pytest.mark.parametrize("method", TEACHER_METHODS)
def test_export_writes_a_standard_3dgs_ply(method: str, teacher_runs, tmp_path: Path) -> None:
    run = teacher_runs[method]
    run_cli(["ns-export", "gaussian-splat", "--load-config", str(run.config), "--output-dir", str(tmp_path)])
    vertex = PlyData.read(str(tmp_path / "splat.ply"))["vertex"]
    names = set(vertex.data.dtype.names)
    expected = {"x", "y", "z", "opacity", "f_dc_0", "f_dc_1", "f_dc_2"}
    expected |= {f"scale_{i}" for i in range(3)} | {f"rot_{i}" for i in range(4)}
    expected |= {f"f_rest_{i}" for i in range(45)}
    assert expected <= names
    gaussians = run.load_gaussians()
    kept = (gaussians["opacities"].squeeze(-1) >= EXPORT_MIN_OPACITY_LOGIT).sum().item()
    assert len(vertex.data) == kept
    assert np.isfinite(np.stack([vertex[n] for n in ("x", "y", "z", "opacity")])).all()


def test_eval_writes_metrics_json(evaluations) -> None:
    for method in TEACHER_METHODS:
        results = evaluations[method]
        assert 0.0 < results["ssim"] <= 1.0
        assert results["psnr"] > 0.0
        assert results["gaussian_count"] > 0


def test_perturbed_teacher_perturbs_on_its_schedule_within_a_short_run(teacher_runs) -> None:
    """The schedule is relative to max_num_iterations: a 400-step run still perturbs, from step 200."""
    log = teacher_runs["distilled-3dgs-teacher-perturbed"].log
    events = [(int(s), int(n)) for s, n in re.findall(r"perturbation at step (\d+): (\d+) of \d+ Gaussians", log)]
    assert [s for s, _ in events] == list(range(TRAIN_STEPS // 2, round(TRAIN_STEPS * 25 / 30) + 1, round(TRAIN_STEPS / 30)))
    assert sum(n for _, n in events) > 0
    assert "perturbation at step" not in teacher_runs["distilled-3dgs-teacher"].log
