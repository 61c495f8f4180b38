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

from distilled_gs_ns.data import DEMO_SCENE
from tests.cli import NUM_RANDOM, TEACHER_METHODS, TRAIN_STEPS, TrainedRun, run_cli, short_schedule

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
    assert len(run.checkpoints) == 4
    assert first["means"].shape[0] == NUM_RANDOM  # step 100: refinement starts after the warm-up
    assert last["means"].shape[0] != NUM_RANDOM
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


def test_resume_from_load_dir_trains_past_the_next_densification(teacher_runs, tmp_path: Path) -> None:
    """Stop at step 200, resume with --load-dir: densification at 250 and 300 must run on the loaded model."""
    source = teacher_runs["distilled-3dgs-teacher"]
    loaded = source.load_gaussians(source.run_dir / "nerfstudio_models" / "step-000000200.ckpt")
    proc = run_cli(
        [
            "ns-train", "distilled-3dgs-teacher", "--data", str(DEMO_SCENE), "--output-dir", str(tmp_path),
            "--experiment-name", "resumed", "--timestamp", "run", *short_schedule(120),
            "--load-dir", str(source.run_dir / "nerfstudio_models"), "--load-step", "200",
        ]
    )
    assert "Done loading Nerfstudio checkpoint" in proc.stdout + proc.stderr
    resumed = TrainedRun("distilled-3dgs-teacher", tmp_path / "resumed" / "distilled-3dgs-teacher" / "run")
    assert [c.name for c in resumed.checkpoints] == [f"step-{s:09d}.ckpt" for s in (300, 320)]
    counts = [resumed.load_gaussians(c)["means"].shape[0] for c in resumed.checkpoints]
    assert counts[-1] != loaded["means"].shape[0] or counts[0] != counts[-1]
    final = resumed.load_gaussians()
    assert torch.load(resumed.checkpoints[-1], map_location="cpu", weights_only=False)["step"] == 320
    assert all(torch.isfinite(v).all() for v in final.values())


def test_viewer_render_path_on_a_trained_model(teacher_runs) -> None:
    """What ns-viewer does: eval_setup, then get_outputs_for_camera in eval mode, at any resolution."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, step = eval_setup(teacher_runs["distilled-3dgs-teacher-dropout"].config, test_mode="inference")
    assert step == TRAIN_STEPS - 1
    camera = pipeline.datamanager.train_dataset.cameras[0:1]
    camera.rescale_output_resolution(0.64)
    out = pipeline.model.get_outputs_for_camera(camera)
    h, w = int(camera.height), int(camera.width)
    assert out["rgb"].shape == (h, w, 3) and out["depth"].shape == (h, w, 1)
    assert out["accumulation"].shape == (h, w, 1) and out["background"].shape == (h, w, 3)
    assert 0.2 < float(out["accumulation"].mean()) < 0.95  # the object covers part of the view
    again = pipeline.model.get_outputs_for_camera(camera)
    assert torch.equal(out["rgb"], again["rgb"])  # no dropout outside training


def test_ns_viewer_loads_the_checkpoint_and_serves(teacher_runs, tmp_path: Path) -> None:
    """The real ns-viewer: loads a teacher checkpoint (torch >= 2.6 safe loading) and answers HTTP."""
    import socket
    import subprocess
    import time
    import urllib.request

    from tests.cli import BIN

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "viewer.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [str(BIN / "ns-viewer"), "--load-config", str(teacher_runs["distilled-3dgs-teacher"].config),
             "--viewer.websocket-port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            status = None
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None and status is None:
                time.sleep(2)
                try:
                    status = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status
                except OSError:
                    pass
            assert status == 200, log.read_text()[-3000:]
            assert "Done loading checkpoint" in log.read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
