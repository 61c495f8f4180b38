"""The teachers train from nerfstudio's blender-data and colmap dataparsers (a text model with points on the
object's surface), not only nerfstudio-data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_cli, short_schedule
from distilled_gs_ns.data.captures import Crop, colmap_capture
from tests.scene_formats import to_blender

pytestmark = pytest.mark.cli
STEPS = 80
COLMAP_POINTS = 2000


def train_and_eval(method: str, data: Path, out: Path, parser_args: list) -> dict:
    run_cli(
        [
            "ns-train", method, "--output-dir", str(out), "--experiment-name", "x", "--timestamp", "run",
            *short_schedule(STEPS), "--pipeline.model.warmup-length", str(10 * STEPS), *parser_args, "--data", str(data),
        ]
    )
    config = out / "x" / method / "run" / "config.yml"
    run_cli(["ns-eval", "--load-config", str(config), "--output-path", str(out / "eval.json")])
    return json.loads((out / "eval.json").read_text())["results"]


def test_blender_data(tmp_path: Path) -> None:
    data = to_blender(tmp_path / "blender")
    results = train_and_eval("distilled-3dgs-teacher-dropout", data, tmp_path / "out", ["blender-data"])
    assert results["psnr"] > 13.0  # untrained is about 9 dB on this scene
    assert results["gaussian_count"] > 0


def test_colmap_data_seeds_from_the_point_cloud(tmp_path: Path) -> None:
    pinhole = (Crop(100, 100, 50.0, 50.0),)
    data = colmap_capture(tmp_path / "colmap", lens="pinhole", crops=pinhole, ext=".txt", num_points=COLMAP_POINTS)
    results = train_and_eval(
        "distilled-3dgs-teacher-perturbed", data, tmp_path / "out", ["colmap", "--downscale-factor", "1"]
    )
    assert results["psnr"] > 12.0
    # No densification before warm-up ends: the model still holds exactly the COLMAP points.
    assert results["gaussian_count"] == COLMAP_POINTS
