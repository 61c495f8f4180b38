"""Bad input through the real CLI: one clear sentence, no traceback, nothing already written lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distilled_gs_ns.data import DEMO_SCENE
from tests.cli import TrainedRun, run_cli, short_schedule, train

pytestmark = pytest.mark.cli


def assert_clean_error(proc, *fragments: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "error:" in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> TrainedRun:
    """A 20-step run of its own, so tests may break its files."""
    return train("distilled-3dgs-teacher", tmp_path_factory.mktemp("errors"), "small", steps=20, extra=["--steps-per-save", "10"])


def test_missing_data_path(tmp_path: Path) -> None:
    proc = run_cli(
        ["ns-train", "distilled-3dgs-teacher", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out"), *short_schedule(5)],
        check=False,
    )
    assert_clean_error(proc, "does not exist")


def test_data_folder_without_transforms(tmp_path: Path) -> None:
    proc = run_cli(
        ["ns-train", "distilled-3dgs-teacher", "--data", str(tmp_path), "--output-dir", str(tmp_path / "out"), *short_schedule(5)],
        check=False,
    )
    assert_clean_error(proc, "transforms.json")


def test_load_dir_without_checkpoints(tmp_path: Path) -> None:
    proc = run_cli(
        [
            "ns-train", "distilled-3dgs-teacher", "--data", str(DEMO_SCENE), "--output-dir", str(tmp_path),
            "--load-dir", str(tmp_path / "gone"), *short_schedule(5),
        ],
        check=False,
    )
    assert_clean_error(proc, "no checkpoint found")


@pytest.mark.parametrize("command", ["ns-eval", "ns-export"])
def test_config_pointing_at_deleted_checkpoints(small_run: TrainedRun, tmp_path: Path, command: str) -> None:
    models = small_run.run_dir / "nerfstudio_models"
    hidden = tmp_path / "hidden"
    shutil.move(str(models), str(hidden))
    try:
        args = ["--load-config", str(small_run.config)]
        args += ["--output-path", str(tmp_path / "m.json")] if command == "ns-eval" else ["--output-dir", str(tmp_path)]
        extra = ["gaussian-splat"] if command == "ns-export" else []
        proc = run_cli([command, *extra, *args], check=False)
        assert_clean_error(proc, "no checkpoint found", "nerfstudio_models")
    finally:
        shutil.move(str(hidden), str(models))


def test_nan_producing_optimizer_setting_is_refused_before_training(tmp_path: Path) -> None:
    """Adam with eps=0 divides 0 by 0 for Gaussians no view has seen yet."""
    proc = run_cli(
        [
            "ns-train", "distilled-3dgs-teacher", "--data", str(DEMO_SCENE), "--output-dir", str(tmp_path),
            *short_schedule(20), "--optimizers.means.optimizer.eps", "0",
        ],
        check=False,
    )
    assert_clean_error(proc, "optimizers.means.optimizer.eps must be > 0")
    assert not list(tmp_path.rglob("*.ckpt"))


def test_bad_setting_on_resume_leaves_the_source_run_intact(small_run: TrainedRun, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in small_run.run_dir.rglob("*") if p.is_file()}
    proc = run_cli(
        [
            "ns-train", "distilled-3dgs-teacher", "--data", str(DEMO_SCENE), "--output-dir", str(tmp_path),
            "--load-dir", str(small_run.run_dir / "nerfstudio_models"),
            *short_schedule(20), "--optimizers.opacities.optimizer.lr", "nan",
        ],
        check=False,
    )
    assert_clean_error(proc, "optimizers.opacities.optimizer.lr")
    after = {p: p.read_bytes() for p in small_run.run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert not list(tmp_path.rglob("*.ckpt"))


def test_non_finite_config_value_is_refused(tmp_path: Path) -> None:
    proc = run_cli(
        [
            "ns-train", "distilled-3dgs-teacher", "--data", str(DEMO_SCENE), "--output-dir", str(tmp_path),
            *short_schedule(5), "--pipeline.model.ssim-lambda", "nan",
        ],
        check=False,
    )
    assert_clean_error(proc, "ssim_lambda")
