"""Copies of the demo scene in other dataparsers' formats (Blender, COLMAP text), for tests."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from distilled_gs_ns.data import DEMO_SCENE


def _demo() -> dict:
    return json.loads((DEMO_SCENE / "transforms.json").read_text())


def to_blender(dst: Path) -> Path:
    """transforms_{train,val,test}.json + PNGs, as the NeRF-synthetic release lays them out."""
    meta = _demo()
    held_out = set(meta["val_filenames"])
    angle_x = 2 * math.atan(meta["w"] / (2 * meta["fl_x"]))
    splits = {"train": [], "val": [], "test": []}
    for frame in meta["frames"]:
        name = Path(frame["file_path"]).stem
        for split in ("val", "test") if frame["file_path"] in held_out else ("train",):
            (dst / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(DEMO_SCENE / frame["file_path"], dst / split / f"{name}.png")
            splits[split].append({"file_path": f"./{split}/{name}", "transform_matrix": frame["transform_matrix"]})
    for split, frames in splits.items():
        (dst / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    return dst


def to_colmap(dst: Path, num_points: int = 2000, seed: int = 0) -> Path:
    """images/ + colmap/sparse/0/{cameras,images,points3D}.txt with a synthetic coloured point cloud."""
    meta = _demo()
    sparse = dst / "colmap" / "sparse" / "0"
    sparse.mkdir(parents=True)
    (dst / "images").mkdir()
    (sparse / "cameras.txt").write_text(
        f"1 PINHOLE {meta['w']} {meta['h']} {meta['fl_x']} {meta['fl_y']} {meta['cx']} {meta['cy']}\n"
    )
    lines = []
    for image_id, frame in enumerate(meta["frames"], start=1):
        name = Path(frame["file_path"]).name
        shutil.copy(DEMO_SCENE / frame["file_path"], dst / "images" / name)
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        c2w[:3, 1:3] *= -1  # OpenGL -> OpenCV camera axes
        w2c = np.linalg.inv(c2w)
        qx, qy, qz, qw = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        tx, ty, tz = w2c[:3, 3]
        lines.append(f"{image_id} {qw} {qx} {qy} {qz} {tx} {ty} {tz} 1 {name}\n\n")
    (sparse / "images.txt").write_text("".join(lines))
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-0.8, 0.8, size=(num_points, 3))
    rgb = rng.integers(0, 256, size=(num_points, 3))
    (sparse / "points3D.txt").write_text(
        "".join(f"{i + 1} {x} {y} {z} {r} {g} {b} 0.5\n" for i, ((x, y, z), (r, g, b)) in enumerate(zip(xyz, rgb)))
    )
    return dst
