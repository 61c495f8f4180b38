"""`distilled-gs export` on a trained teacher: formats readers take, quality kept, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from distilled_gs_ns.data import DEMO_SCENE
from tests.cli import TrainedRun, run_cli
from tests.splat_decoders import decode_compressed_ply, decode_spz

pytestmark = pytest.mark.cli

MAX_LOSS_DB = {"ply": 0.0, "spz": 0.15, "compressed-ply": 0.3}
"""Held-out PSNR a file may lose against the model's uncompressed Gaussians (issue bar)."""


@pytest.fixture(scope="module")
def teacher(teacher_runs: Dict[str, TrainedRun]) -> TrainedRun:
    return teacher_runs["distilled-3dgs-teacher"]


def export(run: TrainedRun, fmt: str, output: Path, *extra: str, check: bool = True):
    return run_cli(["distilled-gs", "export", "--load-config", str(run.config), "--format", fmt,
                    "--output", str(output), *extra], check=check)  # fmt: skip


def test_ply_export_is_the_file_ns_export_writes(teacher: TrainedRun, tmp_path: Path) -> None:
    run_cli(["ns-export", "gaussian-splat", "--load-config", str(teacher.config), "--output-dir", str(tmp_path / "ns")])
    proc = export(teacher, "ply", tmp_path / "ours.ply")
    assert "Gaussians at SH degree 3" in proc.stdout
    assert (tmp_path / "ours.ply").read_bytes() == (tmp_path / "ns" / "splat.ply").read_bytes()


def test_compressed_files_decode_with_independent_readers(teacher: TrainedRun, tmp_path: Path) -> None:
    from plyfile import PlyData

    export(teacher, "ply", tmp_path / "splat.ply")
    count = PlyData.read(str(tmp_path / "splat.ply"))["vertex"].count
    export(teacher, "spz", tmp_path / "splat.spz")
    header, stored = decode_spz((tmp_path / "splat.spz").read_bytes())
    assert (header["num_points"], header["sh_degree"], header["version"]) == (count, 3, 3)
    export(teacher, "compressed-ply", tmp_path / "splat.compressed.ply", "--sh-degree", "1")
    decoded = decode_compressed_ply((tmp_path / "splat.compressed.ply").read_bytes())
    assert decoded["means"].shape == (count, 3) and decoded["sh_rest"].shape == (count, 3, 3)
    assert np.isfinite(decoded["means"]).all() and np.isfinite(stored["means"]).all()
    sizes = {p.name: p.stat().st_size / count for p in tmp_path.iterdir()}
    assert sizes["splat.spz"] < sizes["splat.ply"] / 4
    assert sizes["splat.compressed.ply"] < sizes["splat.ply"] / 8


def test_decoded_files_keep_the_held_out_quality(teacher: TrainedRun) -> None:
    from distilled_gs_ns.export.formats import FORMATS
    from distilled_gs_ns.export.splat_data import from_model
    from distilled_gs_ns.export.writer import load_splat_model
    from distilled_gs_ns.metrics.file_quality import heldout_metrics

    pipeline = load_splat_model(teacher.config)
    data = from_model(pipeline.model)
    reference = heldout_metrics(pipeline, data.render_gaussians())["psnr"]
    assert reference == pytest.approx(heldout_metrics(pipeline)["psnr"], abs=0.01)  # the PLY is the model
    losses = {}
    for name, fmt in FORMATS.items():
        decoded = fmt.decode(fmt.encode(data))
        losses[name] = reference - heldout_metrics(pipeline, decoded.render_gaussians())["psnr"]
    assert losses["ply"] == pytest.approx(0.0, abs=1e-4)
    for name, loss in losses.items():
        assert loss <= MAX_LOSS_DB[name] + 1e-4, losses
    assert abs(losses["compressed-ply"]) > 1e-3, "a lossy format with the same renders: is the decoded file rendered at all?"


def test_bad_requests_get_one_line_each(teacher: TrainedRun, tmp_path: Path) -> None:
    missing = export(TrainedRun("x", tmp_path / "nowhere"), "spz", tmp_path / "a.spz", check=False)
    assert missing.returncode != 0 and "error: no run at" in missing.stderr and "Traceback" not in missing.stderr
    degree = export(teacher, "spz", tmp_path / "b.spz", "--sh-degree", "4", check=False)
    assert degree.returncode != 0 and "--sh-degree must be 0-3" in degree.stderr and "Traceback" not in degree.stderr
    assert not (tmp_path / "b.spz").exists()
    unknown = export(teacher, "splat", tmp_path / "c.splat", check=False)
    assert unknown.returncode != 0 and "splat" in unknown.stderr and "Traceback" not in unknown.stderr


def test_splatfacto_runs_export_too(teacher: TrainedRun, tmp_path: Path) -> None:
    """nerfstudio's own splatfacto (which trains only on CUDA): a run folder built from its method
    config and the teacher's Gaussians, with numpy scalars in the checkpoint as nerfstudio saves them."""
    import copy

    import torch
    from nerfstudio.configs.method_configs import all_methods

    config = copy.deepcopy(all_methods["splatfacto"])
    config.pipeline.datamanager.data = DEMO_SCENE
    config.output_dir, config.experiment_name, config.timestamp = tmp_path, "scene", "run"
    config.save_config()
    state = torch.load(teacher.checkpoints[-1], map_location="cpu", weights_only=False)
    gaussians = {k: v for k, v in state["pipeline"].items() if k.startswith("_model.gauss_params.")}
    checkpoints = config.get_checkpoint_dir()
    checkpoints.mkdir(parents=True)
    torch.save({"step": 400, "pipeline": gaussians, "schedulers": {"means": {"lr": np.float64(1.6e-6)}}},
               checkpoints / "step-000000400.ckpt")  # fmt: skip
    run = TrainedRun("splatfacto", config.get_base_dir())
    # ns-export itself cannot load this run offline: splatfacto fetches LPIPS weights when it is built.
    export(run, "ply", tmp_path / "splatfacto.ply")
    export(teacher, "ply", tmp_path / "teacher.ply")
    assert (tmp_path / "splatfacto.ply").read_bytes() == (tmp_path / "teacher.ply").read_bytes()
    export(run, "spz", tmp_path / "splatfacto.spz")
    assert decode_spz((tmp_path / "splatfacto.spz").read_bytes())[0]["num_points"] > 0


def test_a_megabyte_budget_too_small_for_one_gaussian_is_refused(teacher: TrainedRun, tmp_path: Path) -> None:
    """(A student sized in megabytes is trained in tests/test_cli_distill.py, through distill.)"""
    too_small = run_cli(["ns-train", "distilled-3dgs-student", "--data", str(DEMO_SCENE), "--output-dir", str(tmp_path),
                         "--pipeline.teachers", str(teacher.config), "--pipeline.model.max-megabytes", "0.00001",
                         "--pipeline.model.export-format", "spz", "--machine.device-type", "cpu"], check=False)  # fmt: skip
    assert too_small.returncode != 0 and "too small for even one Gaussian in spz" in too_small.stderr + too_small.stdout
