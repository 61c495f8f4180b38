"""Splat files in the capture's frame: the mapping into nerfstudio's dataparser frame and back.

The frame is checked against nerfstudio itself, not against our own export: the capture's 3D points
(COLMAP points3D, a nerfstudio-data point cloud) mapped by the import must land where nerfstudio's
dataparser puts them as seed points. The SH rotation is checked by rendering: a splat whose colour
is all view-dependent (SH bands 1-3 only), moved into another frame, must render the same images from
the matching cameras.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.utils import colmap_parsing_utils as colmap
from scipy.spatial.transform import Rotation

from distilled_gs_ns.data.captures import TILTED_WORLD, Crop, colmap_capture, nerfstudio_capture, surface_points
from distilled_gs_ns.export.frames import Similarity, rotate_quaternions
from distilled_gs_ns.export.splat_data import SplatData
from distilled_gs_ns.pipelines.splat_file_teacher import coverage, splat_model

ONE_SIZE = (Crop(100, 100, 50.0, 50.0),)
OPENCV_TO_ADJACENT = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])
"""An ns-process-data-like applied_transform (a proper rotation between the stored and original frames)."""


def _extent(points: np.ndarray) -> float:
    return float(np.ptp(points, axis=0).max())


def test_colmap_points_land_on_the_dataparser_seed_points(tmp_path: Path) -> None:
    data = colmap_capture(tmp_path / "c", lens="pinhole", crops=ONE_SIZE, num_points=400, stride=4, world=TILTED_WORLD)
    outputs = ColmapDataParserConfig(data=data).setup().get_dataparser_outputs("train")
    assert float(outputs.dataparser_scale) < 0.05  # the capture is scaled down strongly, not left alone
    points = np.array([p.xyz for p in colmap.read_points3D_binary(data / "colmap/sparse/0/points3D.bin").values()])
    seeds = outputs.metadata["points3D_xyz"].numpy()
    mapped = Similarity.from_dataparser(outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale)).points(points)
    assert np.abs(mapped - seeds).max() <= 1e-5 * _extent(seeds)
    assert np.abs(points - seeds).max() > _extent(seeds)  # the two frames differ by far more than the tolerance


@pytest.mark.parametrize("applied", [None, OPENCV_TO_ADJACENT], ids=["plain", "applied_transform"])
def test_nerfstudio_point_cloud_lands_on_the_dataparser_seed_points(tmp_path: Path, applied) -> None:
    data = nerfstudio_capture(tmp_path / "n", lens="pinhole", crops=ONE_SIZE, stride=4, num_points=400,
                              world=TILTED_WORLD, applied_transform=applied)  # fmt: skip
    outputs = NerfstudioDataParserConfig(data=data, load_3D_points=True).setup().get_dataparser_outputs("train")
    xyz, _ = surface_points(400)
    original = TILTED_WORLD.points(xyz)  # the capture's own frame: before ns-process-data's applied_transform
    seeds = outputs.metadata["points3D_xyz"].numpy()
    mapped = Similarity.from_dataparser(outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale)).points(original)
    assert np.abs(mapped - seeds).max() <= 1e-5 * _extent(seeds)


def test_inverse_undoes_the_mapping() -> None:
    points = np.random.default_rng(0).normal(size=(50, 3))
    back = TILTED_WORLD.inverse().points(TILTED_WORLD.points(points))
    assert np.abs(back - points).max() < 1e-4


def test_quaternions_turn_with_the_frame() -> None:
    quats = Rotation.random(20, random_state=1).as_quat()[:, [3, 0, 1, 2]]
    turned = rotate_quaternions(quats, TILTED_WORLD.rotation)
    expected = TILTED_WORLD.rotation @ Rotation.from_quat(quats[:, [1, 2, 3, 0]]).as_matrix()
    assert np.abs(Rotation.from_quat(turned[:, [1, 2, 3, 0]]).as_matrix() - expected).max() < 1e-5


# ------------------------------------------------------------------- rendering in two frames


def _view_dependent_splat(n: int = 400, seed: int = 0) -> SplatData:
    """Anisotropic, rotated Gaussians whose colour is SH bands 1-3 only (DC 0: grey plus the bands)."""
    rng = np.random.default_rng(seed)
    return SplatData(
        means=(rng.normal(size=(n, 3)) * 0.4).astype(np.float32),
        log_scales=np.log(rng.uniform(0.02, 0.12, size=(n, 3))).astype(np.float32),
        quats=Rotation.random(n, random_state=seed).as_quat()[:, [3, 0, 1, 2]].astype(np.float32),
        opacity_logits=rng.uniform(0.0, 2.0, size=n).astype(np.float32),
        sh_dc=np.zeros((n, 3), np.float32),
        sh_rest=(rng.normal(size=(n, 15, 3)) * 0.4).astype(np.float32),
    )


def _orbit(count: int = 4, size: int = 48) -> Cameras:
    poses = []
    for angle in np.linspace(0, 2 * np.pi, count, endpoint=False):
        eye = np.array([3.0 * np.cos(angle), 3.0 * np.sin(angle), 1.0])
        back = eye / np.linalg.norm(eye)  # OpenGL: the camera looks down -z, so +z points away from the target
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        up = np.cross(back, right)
        poses.append(np.stack([right, up, back, eye], axis=1))
    c2w = torch.tensor(np.stack(poses), dtype=torch.float32)
    return Cameras(camera_to_worlds=c2w, fx=50.0, fy=50.0, cx=size / 2, cy=size / 2, width=size, height=size)


def _in_frame(cameras: Cameras, sim: Similarity) -> Cameras:
    c2w = cameras.camera_to_worlds.numpy().astype(np.float64)
    moved = c2w.copy()
    moved[:, :, :3] = sim.rotation @ c2w[:, :, :3]
    moved[:, :, 3] = sim.points(c2w[:, :, 3])
    return Cameras(camera_to_worlds=torch.tensor(moved, dtype=torch.float32), fx=cameras.fx, fy=cameras.fy,
                   cx=cameras.cx, cy=cameras.cy, width=cameras.width, height=cameras.height)  # fmt: skip


@torch.no_grad()
def _renders(data: SplatData, cameras: Cameras) -> torch.Tensor:
    model = splat_model(data, "black", "cpu")
    return torch.stack([model.get_outputs(cameras[i : i + 1])["rgb"] for i in range(len(cameras))])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def test_view_dependent_colour_renders_the_same_in_a_rotated_frame() -> None:
    data, cameras = _view_dependent_splat(), _orbit()
    sim = Similarity(Rotation.from_euler("xyz", [35.0, -60.0, 150.0], degrees=True).as_matrix(), np.array([2.0, -1.0, 4.0]), 2.5)
    before = _renders(data, cameras)
    after = _renders(sim.splat(data), _in_frame(cameras, sim))
    assert before.std() > 0.05  # the bands make real colour variation
    error = float((before - after).abs().max())
    assert _psnr(before, after) > 60.0 and error < 2e-3, error
    # The same move with bands 1-3 left as they are turns the highlights with the frame: clearly visible.
    unrotated = replace(sim.splat(data), sh_rest=data.sh_rest)
    assert _psnr(before, _renders(unrotated, _in_frame(cameras, sim))) < 30.0


def test_coverage_counts_gaussians_inside_some_view() -> None:
    cameras = _orbit()
    inside = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32) * 0.3
    assert coverage(inside, cameras) > 0.95
    assert coverage(inside + np.float32(50.0), cameras) == 0.0
