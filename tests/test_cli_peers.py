"""The student's same-budget peers through the real CLI: 3DGS-MCMC at a cap, and prune-and-fine-tune
of the standard teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
from plyfile import PlyData

from distilled_gs_ns.metrics.render_speed import render_fps
from tests.cli import TrainedRun, run_cli, train

pytestmark = pytest.mark.cli
CAP = 2100


def test_mcmc_trains_to_its_cap_and_never_beyond(tmp_path: Path) -> None:
    run = train(
        "distilled-3dgs-mcmc", tmp_path, "mcmc", steps=300,
        extra=["--pipeline.model.max-gaussians", str(CAP), "--pipeline.model.num-random", "2000"],
    )
    counts = [run.load_gaussians(ckpt)["means"].shape[0] for ckpt in run.checkpoints]
    assert len(counts) == 3 and max(counts) <= CAP
    assert counts[-1] == CAP  # 2000 seeds + 5% at the first refinement, then held at the cap
    results = run.evaluate(tmp_path / "eval.json")
    assert results["gaussian_count"] == CAP
    assert results["psnr"] > 15.0
    assert 0 < render_fps(run.config) < float("inf")  # the demo's render-speed column, on a real run
    ply = tmp_path / "export"
    run_cli(["ns-export", "gaussian-splat", "--load-config", str(run.config), "--output-dir", str(ply)])
    assert 0 < PlyData.read(str(ply / "splat.ply"))["vertex"].count <= CAP


def test_mcmc_seeds_beyond_the_cap_are_subsampled(tmp_path: Path) -> None:
    run = train(
        "distilled-3dgs-mcmc", tmp_path, "mcmc", steps=1,
        extra=["--pipeline.model.max-gaussians", "500", "--pipeline.model.num-random", "2000"],
    )
    assert run.load_gaussians()["means"].shape[0] == 500


def test_prune_finetune_ends_at_exactly_the_budget(teacher_runs: Dict[str, TrainedRun], untrained_run: TrainedRun, tmp_path: Path) -> None:
    teacher = teacher_runs["distilled-3dgs-teacher"]
    teacher_count = teacher.load_gaussians()["means"].shape[0]
    budget = round(0.12 * teacher_count)
    run = train(
        "distilled-3dgs-prune-finetune", tmp_path, "prune", steps=100,
        extra=["--pipeline.teachers", str(teacher.config)],
    )  # the tests' schedule asks for densification: the method keeps it off
    assert f"student starts from the {budget} most important teacher Gaussians" in run.log
    assert [run.load_gaussians(ckpt)["means"].shape[0] for ckpt in run.checkpoints] == [budget]
    results = run.evaluate(tmp_path / "eval.json")
    assert results["gaussian_count"] == budget
    assert results["psnr"] > untrained_run.evaluate(tmp_path / "untrained.json")["psnr"] + 5
