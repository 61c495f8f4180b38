"""Copies of the demo scene shaped like real captures (tests, benchmarks/bench_real_captures.py).

The demo scene is a pinhole rendering. Each builder here re-images it through the lens a phone or
COLMAP would report (OpenCV radial-tangential or fisheye distortion), at odd and mixed image sizes,
and writes it in nerfstudio's or COLMAP's format (text or binary), optionally with downscaled image
folders or a point cloud on the object's surface. nerfstudio then undistorts and crops these images
when it loads them, which changes the cameras' sizes and intrinsics exactly as on a real capture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from distilled_gs_ns.data import DEMO_SCENE
from distilled_gs_ns.data.downscale import downscale_images
from distilled_gs_ns.export.frames import Similarity

Lens = Literal["pinhole", "opencv", "fisheye"]
OPENCV_COEFFS = {"k1": -0.3, "k2": 0.08, "p1": 0.002, "p2": -0.0015}
FISHEYE_COEFFS = {"k1": 0.05, "k2": -0.02, "k3": 0.01, "k4": -0.005}


@dataclass(frozen=True)
class Crop:
    """An image window of the pinhole frame: its size and where the principal point falls in it."""

    width: int
    height: int
    cx: float
    cy: float


ODD_CROPS = (Crop(97, 93, 48.5, 46.5), Crop(91, 99, 47.0, 50.5))
"""Two odd sizes, alternating between frames: a capture whose images differ in size."""


def _demo() -> dict:
    return json.loads((DEMO_SCENE / "transforms.json").read_text())


def _rgba(name: str) -> np.ndarray:
    return np.asarray(Image.open(DEMO_SCENE / name).convert("RGBA"))


def _opencv_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """nerfstudio intrinsics (pixel centres at +0.5) as OpenCV's (centres at integers)."""
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])


def distort(image: np.ndarray, source_k: np.ndarray, lens: Lens, crop: Crop, focal: float) -> np.ndarray:
    """What a camera with `lens` and `crop` (same pose, focal length `focal`) sees of a pinhole image.

    For every output pixel, the lens model gives its ideal (undistorted) ray; the pinhole image is
    sampled there. Outside the pinhole image the output is transparent.
    """
    k = _opencv_matrix(focal, focal, crop.cx, crop.cy)
    grid = np.stack(np.meshgrid(np.arange(crop.width), np.arange(crop.height)), axis=-1).reshape(-1, 1, 2)
    grid = grid.astype(np.float64)
    if lens == "opencv":
        c = OPENCV_COEFFS
        rays = cv2.undistortPoints(grid, k, np.array([c["k1"], c["k2"], c["p1"], c["p2"]]))
    elif lens == "fisheye":
        c = FISHEYE_COEFFS
        rays = cv2.fisheye.undistortPoints(grid, k, np.array([c["k1"], c["k2"], c["k3"], c["k4"]]))
    else:
        rays = (grid - k[:2, 2]) / focal
    rays = rays.reshape(crop.height, crop.width, 2)
    map_x = (rays[..., 0] * source_k[0, 0] + source_k[0, 2]).astype(np.float32)
    map_y = (rays[..., 1] * source_k[1, 1] + source_k[1, 2]).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


TILTED_WORLD = Similarity(Rotation.from_euler("xyz", [70.0, -35.0, 120.0], degrees=True).as_matrix(), np.array([12.0, -7.0, 30.0]), 40.0)
"""An SfM-like world frame: up axis far from any axis, 40x the demo's units, far from the origin
(nerfstudio's dataparser orients, centres and scales this back strongly)."""


def _in_world(c2w: np.ndarray, world: Optional[Similarity]) -> np.ndarray:
    """An OpenGL camera-to-world pose expressed in `world` (x' = s R x + t): axes turned, centre moved."""
    out = np.array(c2w, dtype=np.float64)
    if world is None:
        return out
    out[:3, :3] = world.rotation @ c2w[:3, :3]
    out[:3, 3] = world.points(c2w[None, :3, 3])[0]
    return out


def _frames(lens: Lens, crops: Sequence[Crop], stride: int) -> List[Tuple[str, np.ndarray, Crop, np.ndarray]]:
    """(file name, image, crop, camera-to-world) of every `stride`-th demo frame re-imaged through `lens`."""
    meta = _demo()
    source_k = _opencv_matrix(meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"])
    frames = []
    for index, frame in enumerate(meta["frames"][::stride]):
        crop = crops[index % len(crops)]
        image = distort(_rgba(frame["file_path"]), source_k, lens, crop, meta["fl_x"])
        frames.append((Path(frame["file_path"]).name, image, crop, np.asarray(frame["transform_matrix"])))
    return frames


def nerfstudio_capture(
    dst: Path,
    lens: Lens = "opencv",
    crops: Sequence[Crop] = ODD_CROPS,
    downscales: Sequence[int] = (),
    stride: int = 1,
    num_points: Optional[int] = None,
    world: Optional[Similarity] = None,
    applied_transform: Optional[np.ndarray] = None,
) -> Path:
    """A nerfstudio-data capture (transforms.json with per-frame sizes) of every `stride`-th demo
    frame, held-out views as in the demo.

    `num_points` surface points are written as its point cloud (sparse_pc.ply; default none).
    `world` expresses poses and points in another frame (as SfM's arbitrary one); `applied_transform`
    (3x4) stores them as ns-process-data does after a COLMAP run: turned by it, and the transform
    recorded in transforms.json (nerfstudio's "original data coordinates" are then `world`'s)."""
    meta = _demo()
    stored = Similarity.identity() if applied_transform is None else Similarity(
        np.asarray(applied_transform)[:, :3], np.asarray(applied_transform)[:, 3], 1.0
    )
    images = dst / "images"
    images.mkdir(parents=True)
    model = {"pinhole": "OPENCV", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}[lens]
    out: Dict = {"camera_model": model, "fl_x": meta["fl_x"], "fl_y": meta["fl_y"]}
    out.update({"opencv": OPENCV_COEFFS, "fisheye": FISHEYE_COEFFS}.get(lens, {}))
    frames = []
    for name, image, crop, c2w in _frames(lens, crops, stride):
        Image.fromarray(image).save(images / name)
        c2w = _in_world(_in_world(c2w, world), stored)
        frames.append(
            {"file_path": f"images/{name}", "transform_matrix": c2w.tolist(), "w": crop.width, "h": crop.height,
             "cx": crop.cx, "cy": crop.cy}
        )
    if applied_transform is not None:
        out["applied_transform"] = np.asarray(applied_transform).tolist()
    if num_points:
        xyz, rgb = surface_points(num_points)
        if world is not None:
            xyz = world.points(xyz)
        write_point_cloud(dst / "sparse_pc.ply", stored.points(xyz), rgb)
        out["ply_file_path"] = "sparse_pc.ply"
    kept = {frame["file_path"] for frame in frames}
    for split in ("train", "val", "test"):
        out[f"{split}_filenames"] = [name for name in meta.get(f"{split}_filenames", meta["val_filenames"]) if name in kept]
    out["frames"] = frames
    (dst / "transforms.json").write_text(json.dumps(out, indent=1))
    for factor in downscales:
        downscale_images(dst, factor)
    return dst


def write_point_cloud(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """A point cloud PLY as ns-process-data writes it (float x, y, z; uchar red, green, blue)."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = rgb[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def surface_points(count: int, resolution: int = 48, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Points on the demo object's surface, as an SfM point cloud would have them (no SfM run).

    Visual hull of the demo's alpha masks: grid points that project onto the object in every view,
    kept where a grid neighbour does not (the hull's boundary); colour = mean over the views.
    Returns xyz [count, 3] (scene coordinates) and rgb uint8 [count, 3].
    """
    meta = _demo()
    k = np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1.0]])
    axis = np.linspace(-1.5, 1.5, resolution)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = np.ones(len(grid), dtype=bool)
    colour = np.zeros((len(grid), 3))
    for frame in meta["frames"]:
        image = _rgba(frame["file_path"]).astype(np.float64) / 255.0
        w2c = np.linalg.inv(np.asarray(frame["transform_matrix"]))
        cam = grid @ w2c[:3, :3].T + w2c[:3, 3]
        cam[:, 1:] *= -1  # OpenGL -> OpenCV axes
        pix = cam @ k.T
        u = np.clip((pix[:, 0] / pix[:, 2]).astype(int), 0, image.shape[1] - 1)
        v = np.clip((pix[:, 1] / pix[:, 2]).astype(int), 0, image.shape[0] - 1)
        inside &= image[v, u, 3] > 0.5
        colour += image[v, u, :3]
    hull = inside.reshape((resolution,) * 3)
    interior = hull.copy()
    for dim in range(3):
        interior &= np.roll(hull, 1, axis=dim) & np.roll(hull, -1, axis=dim)
    surface = (hull & ~interior).reshape(-1)
    ids = np.flatnonzero(surface)
    ids = np.random.default_rng(seed).choice(ids, size=min(count, len(ids)), replace=False)
    rgb = np.clip(colour[ids] / len(meta["frames"]) * 255.0, 0, 255).astype(np.uint8)
    return grid[ids], rgb


def colmap_capture(
    dst: Path,
    lens: Lens = "opencv",
    crops: Sequence[Crop] = ODD_CROPS,
    ext: Literal[".txt", ".bin"] = ".bin",
    num_points: Optional[int] = 2000,
    stride: int = 1,
    world: Optional[Similarity] = None,
) -> Path:
    """images/ + colmap/sparse/0/{cameras,images,points3D}{ext}, one COLMAP camera per image size,
    of every `stride`-th demo frame (the colmap dataparser holds out every 8th image).

    `num_points` surface points seed the model; None writes an empty points3D (no point cloud).
    `world` expresses poses and points in another frame, as SfM's arbitrary one (e.g. TILTED_WORLD).
    """
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    meta = _demo()
    sparse = dst / "colmap" / "sparse" / "0"
    sparse.mkdir(parents=True)
    (dst / "images").mkdir()
    model = {"pinhole": "PINHOLE", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}[lens]
    coeffs = {"opencv": list(OPENCV_COEFFS.values()), "fisheye": list(FISHEYE_COEFFS.values())}.get(lens, [])
    cameras, images = {}, {}
    for index, (name, image, crop, c2w) in enumerate(_frames(lens, crops, stride), start=1):
        Image.fromarray(image).save(dst / "images" / name)
        camera_id = crops.index(crop) + 1
        params = [meta["fl_x"], meta["fl_y"], crop.cx, crop.cy, *coeffs]
        cameras[camera_id] = colmap.Camera(camera_id, model, crop.width, crop.height, np.array(params))
        c2w = _in_world(c2w, world)
        c2w[:3, 1:3] *= -1  # OpenGL -> OpenCV camera axes
        w2c = np.linalg.inv(c2w)
        qx, qy, qz, qw = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        images[index] = colmap.Image(
            index, np.array([qw, qx, qy, qz]), w2c[:3, 3], camera_id, name, np.zeros((0, 2)), np.zeros(0, dtype=int)
        )
    points = {}
    if num_points:
        xyz, rgb = surface_points(num_points)
        if world is not None:
            xyz = world.points(xyz)
        for index, (p, c) in enumerate(zip(xyz, rgb), start=1):
            points[index] = colmap.Point3D(index, p, c, 0.5, np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    colmap.write_model(cameras, images, points, str(sparse), ext=ext)
    return dst
