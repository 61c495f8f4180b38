"""Every method trains on captures shaped like real ones, through the real CLI.

Lens distortion makes nerfstudio's datamanager undistort and crop each image when it loads it, and
change that camera's size and intrinsics to match; images of one capture differ in size; COLMAP
models come as text or binary with a point cloud on the surface (or none); `--downscale-factor`
reads images_N folders. CI runs one distorted capture through teachers -> student -> eval ->
export and through momentum-gs, the other capture types through one teacher each;
benchmarks/bench_real_captures.py runs the whole matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import torch
from plyfile import PlyData

from distilled_gs_ns.configs.demo import ShortMomentumRun
from distilled_gs_ns.distillation.pseudo_labels import check_labels_match_views, fusion_weights, render_pseudo_labels
from distilled_gs_ns.pipelines.teachers import load_teachers
from distilled_gs_ns.errors import UserInputError
from tests.cli import TEACHER_METHODS, TrainedRun, run_cli, short_schedule
from distilled_gs_ns.data.captures import Crop, colmap_capture, nerfstudio_capture

pytestmark = pytest.mark.cli
STEPS = 40
STRIDE = 3  # 34 of the demo's views: 29 train, 5 held out
SMALL = ["--pipeline.model.num-random", "2000"]


def train_on(method: str, data: Path, out: Path, steps: int = STEPS, extra: Sequence[str] = (), parser: Sequence[str] = ()) -> TrainedRun:
    proc = run_cli(
        [
            "ns-train", method, "--output-dir", str(out), "--experiment-name", "x", "--timestamp", "run",
            *short_schedule(steps), *SMALL, *extra, *parser, "--data", str(data),
        ]
    )
    return TrainedRun(method, out / "x" / method / "run", proc.stdout + proc.stderr)


def served_views(data: Path, parser: str = "nerfstudio"):
    """The training datamanager of `data` in-process: raw (dataparser) cameras, served cameras, images."""
    from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser_config = NerfstudioDataParserConfig(data=data) if parser == "nerfstudio" else ColmapDataParserConfig(data=data)
    datamanager = FullImageDatamanagerConfig(dataparser=parser_config, cache_images="gpu").setup(device="cpu")
    images = [view["image"] for view in datamanager.cached_train]
    return datamanager.train_dataparser_outputs.cameras, datamanager.train_dataset.cameras, images


# ---------------------------------------------------------------- one distorted capture, every method


@pytest.fixture(scope="module")
def distorted(tmp_path_factory) -> Path:
    """OpenCV lens (k1, k2, p1, p2), two odd image sizes alternating between frames, no point cloud."""
    return nerfstudio_capture(tmp_path_factory.mktemp("captures") / "opencv", lens="opencv", stride=STRIDE)


@pytest.fixture(scope="module")
def distorted_teachers(distorted: Path, tmp_path_factory) -> Dict[str, TrainedRun]:
    out = tmp_path_factory.mktemp("distorted_runs")
    return {method: train_on(method, distorted, out) for method in TEACHER_METHODS}


def test_undistortion_changes_the_served_cameras(distorted: Path) -> None:
    """The premise of the fixes: served cameras differ from the dataparser's in size and intrinsics,
    and each served camera matches its image."""
    raw, served, images = served_views(distorted)
    assert len({tuple(im.shape[:2]) for im in images}) == 2  # mixed sizes survive undistortion
    for index, image in enumerate(images):
        assert (int(served.height[index]), int(served.width[index])) == tuple(image.shape[:2])
    assert bool((served.width < raw.width).all()) and bool((served.height < raw.height).all())
    assert not torch.allclose(served.fx, raw.fx)


def test_labels_are_rendered_for_the_served_cameras_and_checked(distorted: Path, distorted_teachers) -> None:
    """Labels for the served cameras line up with the ground truth; labels for the dataparser's
    (distorted) cameras, the old bug, are refused with one clear sentence."""
    raw, served, images = served_views(distorted)
    teachers = load_teachers([distorted_teachers["distilled-3dgs-teacher"].config], raw, "cpu")
    weights = fusion_weights(1, None)
    labels = render_pseudo_labels([t.model for t in teachers], served, weights)
    check_labels_match_views(labels, served, images)
    assert [tuple(label.shape[:2]) for label in labels.images] == [tuple(im.shape[:2]) for im in images]
    wrong = render_pseudo_labels([t.model for t in teachers], raw, weights)
    with pytest.raises(UserInputError, match="pseudo-label 0 is .* px but its training image is"):
        check_labels_match_views(wrong, served, images)


def test_student_trains_evaluates_and_exports_on_a_distorted_capture(
    distorted: Path, distorted_teachers: Dict[str, TrainedRun], tmp_path: Path
) -> None:
    for run in distorted_teachers.values():
        assert run.checkpoints, run.method
    teachers: List[str] = [str(run.config) for run in distorted_teachers.values()]
    # Every resolution of the schedule (1/4, 1/2, full) meets labels downscaled like the ground truth
    # (the teachers' labels are off by default: switched on here so that path runs on distorted views).
    schedule = ["--pipeline.model.num-downscales", "2", "--pipeline.model.resolution-schedule", "12"]
    student = train_on("distilled-3dgs-student", distorted, tmp_path, steps=3 * STEPS,
                       extra=[*schedule, "--pipeline.teachers", *teachers, "--pipeline.model.kd-weight", "1"])
    assert "pseudo-labels: 29 views cached" in student.log
    results = student.evaluate(tmp_path / "eval.json")
    assert results["psnr"] > 12.5  # 2 steps give 10.4 dB here, 120 steps 13.7 dB
    run_cli(["ns-export", "gaussian-splat", "--load-config", str(student.config), "--output-dir", str(tmp_path / "ply")])
    vertices = PlyData.read(str(tmp_path / "ply" / "splat.ply"))["vertex"].count
    assert 0 < vertices <= results["gaussian_count"]


def test_momentum_gs_trains_evaluates_and_exports_on_a_distorted_capture(distorted: Path, tmp_path: Path) -> None:
    """Cameras of two sizes: assignment, coverage and export directions use each camera's own."""
    flags = ShortMomentumRun(80, num_random=2000, steps_per_block=20, refine_every=20).flags()
    flags += ["--pipeline.model.export-refine-steps", "50"]
    proc = run_cli(["ns-train", "momentum-gs", "--output-dir", str(tmp_path), "--experiment-name", "x",
                    "--timestamp", "run", *flags, "--data", str(distorted)])
    run = TrainedRun("momentum-gs", tmp_path / "x" / "momentum-gs" / "run", proc.stdout + proc.stderr)
    blocks = json.loads((run.run_dir / "blocks.json").read_text())
    assert blocks["steps_per_block_trained"] == [20] * 4
    results = run.evaluate(tmp_path / "eval.json")
    assert results["psnr"] > 10.0
    run_cli(["ns-export", "gaussian-splat", "--load-config", str(run.config), "--output-dir", str(tmp_path / "ply")])
    assert PlyData.read(str(tmp_path / "ply" / "splat.ply"))["vertex"].count > 0


# ---------------------------------------------------------------- other capture types, one teacher each


def test_fisheye_capture_keeps_sizes_but_moves_intrinsics_and_trains(tmp_path: Path) -> None:
    data = nerfstudio_capture(tmp_path / "fisheye", lens="fisheye", stride=STRIDE)
    raw, served, images = served_views(data)
    assert torch.equal(served.width, raw.width) and torch.equal(served.height, raw.height)
    assert not torch.allclose(served.fx, raw.fx)
    run = train_on("distilled-3dgs-teacher", data, tmp_path / "out")
    # Labels rendered for the dataparser's fisheye intrinsics have the right size but the wrong
    # geometry: only the intrinsics check can catch them.
    teachers = load_teachers([run.config], raw, "cpu")
    wrong = render_pseudo_labels([t.model for t in teachers], raw, fusion_weights(1, None))
    with pytest.raises(UserInputError, match="rendered with intrinsics"):
        check_labels_match_views(wrong, served, images)
    assert run.evaluate(tmp_path / "eval.json")["psnr"] > 12.0


def test_binary_colmap_model_with_distortion_seeds_from_its_surface_points(tmp_path: Path) -> None:
    data = colmap_capture(tmp_path / "colmap", lens="opencv", ext=".bin", num_points=1500, stride=STRIDE)
    run = train_on("distilled-3dgs-teacher-dropout", data, tmp_path / "out", parser=["colmap"],
                   extra=["--pipeline.model.warmup-length", str(10 * STEPS)])
    results = run.evaluate(tmp_path / "eval.json")
    assert results["psnr"] > 12.0
    assert results["gaussian_count"] == 1500  # no densification yet: exactly the COLMAP points


def test_colmap_model_without_a_point_cloud_starts_from_random_seeds(tmp_path: Path) -> None:
    data = colmap_capture(tmp_path / "colmap", lens="pinhole", crops=(Crop(100, 100, 50.0, 50.0),), ext=".txt",
                          num_points=None, stride=STRIDE)
    run = train_on("distilled-3dgs-teacher-perturbed", data, tmp_path / "out", parser=["colmap"],
                   extra=["--pipeline.model.warmup-length", str(10 * STEPS)])
    assert run.evaluate(tmp_path / "eval.json")["gaussian_count"] == 2000  # num-random seeds, untouched
    # A student re-parses its teachers' data with their saved config (which still asks for points).
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    cameras = ColmapDataParserConfig(data=data, load_3D_points=False).setup().get_dataparser_outputs("train").cameras
    (teacher,) = load_teachers([run.config], cameras, "cpu")
    assert teacher.model.num_points == 2000


def test_downscale_factor_reads_the_images_n_folder(tmp_path: Path) -> None:
    data = nerfstudio_capture(tmp_path / "scene", lens="opencv", downscales=(2,), stride=STRIDE)
    run = train_on("distilled-3dgs-teacher", data, tmp_path / "out", parser=["nerfstudio-data", "--downscale-factor", "2"])
    assert run.evaluate(tmp_path / "eval.json")["psnr"] > 12.0


def test_missing_downscaled_folder_is_one_clear_error_not_a_prompt(tmp_path: Path) -> None:
    data = colmap_capture(tmp_path / "colmap", lens="pinhole", crops=(Crop(100, 100, 50.0, 50.0),), ext=".txt",
                          num_points=200, stride=8)
    proc = run_cli(
        ["ns-train", "distilled-3dgs-teacher", "--output-dir", str(tmp_path / "out"), *short_schedule(1),
         "colmap", "--downscale-factor", "2", "--data", str(data)],
        check=False,
    )
    assert proc.returncode != 0
    assert "images_2, which does not exist" in proc.stderr + proc.stdout
    assert "Would you like to downscale" not in proc.stdout
