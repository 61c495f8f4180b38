"""Synthetic wide scene for block-wise training tests: objects spread over a ground plane, seen by
cameras flying a two-lane serpentine at a low height and looking down-forward, so that every camera
sees only part of the scene (the situation block partitions are for).

The world is z-up with the ground at z = 0. Views are rendered with the project's PyTorch
rasteriser and written in nerfstudio format (transforms.json, RGB PNGs on white, sparse_pc.ply).

    python -m distilled_gs_ns.data.wide_scene --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import torch
from PIL import Image
from plyfile import PlyData, PlyElement
from torch import Tensor

from distilled_gs_ns.rendering.cameras import world_to_camera
from distilled_gs_ns.rendering import rasterize

GAUSSIANS_PER_OBJECT = 300
OBJECT_SPACING = 4.0  # metres between object columns along x
ROW_OFFSET = 2.5  # object rows at y = +-ROW_OFFSET
LANE_OFFSET = 1.2  # camera lanes at y = +-LANE_OFFSET
CAMERA_HEIGHT = 3.5
CAMERA_PITCH_DEG = 40.0  # below the horizon
HOLD_OUT_EVERY = 8
PALETTE = torch.tensor(
    [
        [0.85, 0.15, 0.15],
        [0.15, 0.35, 0.85],
        [0.95, 0.80, 0.10],
        [0.10, 0.65, 0.25],
        [0.75, 0.20, 0.75],
        [0.10, 0.75, 0.80],
        [0.95, 0.50, 0.10],
        [0.45, 0.25, 0.10],
    ]
)


@dataclass
class Gaussians:
    """Activated Gaussian attributes, as the rasteriser takes them with sh_degree=None."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz
    scales: Tensor  # [N, 3]
    opacities: Tensor  # [N]
    colors: Tensor  # [N, 3] RGB in [0, 1]


@dataclass
class WideScene:
    """Everything a view needs, plus the object centres (the ground truth of what each view shows)."""

    gaussians: Gaussians
    object_centres: Tensor  # [K, 3]
    camera_to_worlds: Tensor  # [V, 3, 4] OpenGL axes (nerfstudio)
    K: Tensor  # [3, 3] shared pixel intrinsics
    image_size: Tuple[int, int]  # (height, width)


def _unit_sphere(num: int, g: torch.Generator) -> Tensor:
    x = torch.randn(num, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True)


def _sphere(num: int, g: torch.Generator) -> Tensor:
    return _unit_sphere(num, g) * 0.7 + torch.tensor([0.0, 0.0, 0.7])


def _box(num: int, g: torch.Generator) -> Tensor:
    p = torch.rand(num, 3, generator=g) * 2 - 1
    face = torch.randint(0, 3, (num,), generator=g)
    side = torch.randint(0, 2, (num,), generator=g).float() * 2 - 1
    p[torch.arange(num), face] = side
    return p * 0.6 + torch.tensor([0.0, 0.0, 0.6])


def _tower(num: int, g: torch.Generator) -> Tensor:
    angle = torch.rand(num, generator=g) * 2 * math.pi
    z = torch.rand(num, generator=g) * 2.0
    return torch.stack([0.35 * angle.cos(), 0.35 * angle.sin(), z], dim=-1)


def _cone(num: int, g: torch.Generator) -> Tensor:
    angle = torch.rand(num, generator=g) * 2 * math.pi
    height = 1.6 * (1 - torch.rand(num, generator=g).sqrt())  # uniform over the lateral surface
    radius = 0.7 * (1 - height / 1.6)
    return torch.stack([radius * angle.cos(), radius * angle.sin(), height], dim=-1)


def _ring(num: int, g: torch.Generator) -> Tensor:
    """Upright torus (an arch through which the ground shows)."""
    major, minor = torch.rand(num, generator=g) * 2 * math.pi, torch.rand(num, generator=g) * 2 * math.pi
    r = 0.6 + 0.18 * minor.cos()
    return torch.stack([r * major.cos(), 0.18 * minor.sin(), 0.8 + r * major.sin()], dim=-1)


def _stack(num: int, g: torch.Generator) -> Tensor:
    """Two stacked spheres."""
    lower = _unit_sphere(num, g) * 0.5 + torch.tensor([0.0, 0.0, 0.5])
    upper = _unit_sphere(num, g) * 0.3 + torch.tensor([0.0, 0.0, 1.3])
    return torch.where((torch.arange(num) % 3 == 0)[:, None], upper, lower)


SHAPES: Tuple[Callable[[int, torch.Generator], Tensor], ...] = (_sphere, _box, _tower, _cone, _ring, _stack)


def _object_centres(num_objects: int, g: torch.Generator) -> Tensor:
    """Two rows along x, alternating sides, with a little jitter; on the ground (z = 0)."""
    cols = math.ceil(num_objects / 2)
    index = torch.arange(num_objects)
    x = (index // 2 - (cols - 1) / 2) * OBJECT_SPACING
    y = torch.where(index % 2 == 0, -ROW_OFFSET, ROW_OFFSET)
    jitter = (torch.rand(num_objects, 2, generator=g) * 2 - 1) * 0.4
    return torch.stack([x + jitter[:, 0], y + jitter[:, 1], torch.zeros(num_objects)], dim=-1)


def _objects(centres: Tensor, g: torch.Generator) -> Gaussians:
    means, colors = [], []
    for k, centre in enumerate(centres):
        points = SHAPES[k % len(SHAPES)](GAUSSIANS_PER_OBJECT, g)
        shade = 0.7 + 0.3 * torch.rand(GAUSSIANS_PER_OBJECT, 1, generator=g)  # texture for photometric losses
        means.append(points + centre)
        colors.append(PALETTE[k % len(PALETTE)] * shade)
    n = len(centres) * GAUSSIANS_PER_OBJECT
    return Gaussians(
        means=torch.cat(means),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone(),
        scales=torch.full((n, 3), 0.09),
        opacities=torch.full((n,), 0.9),
        colors=torch.cat(colors),
    )


def _ground(centres: Tensor, spacing: float = 0.5) -> Gaussians:
    """Flat Gaussians on z = 0 around the objects, in a 1 m checkerboard of two greens."""
    lo = centres[:, :2].min(0).values - torch.tensor([12.0, 8.0])
    hi = centres[:, :2].max(0).values + torch.tensor([12.0, 8.0])
    xs = torch.arange(float(lo[0]), float(hi[0]), spacing) + spacing / 2
    ys = torch.arange(float(lo[1]), float(hi[1]), spacing) + spacing / 2
    gx, gy = torch.meshgrid(xs, ys, indexing="ij")
    xy = torch.stack([gx.flatten(), gy.flatten()], dim=-1)
    checker = (xy.floor().sum(-1) % 2)[:, None]
    colors = torch.tensor([0.45, 0.60, 0.35]) * (1 - checker) + torch.tensor([0.62, 0.72, 0.50]) * checker
    n = xy.shape[0]
    return Gaussians(
        means=torch.cat([xy, torch.zeros(n, 1)], dim=-1),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone(),
        scales=(torch.tensor([0.6, 0.6, 0.04]) * spacing).expand(n, 3).clone(),
        opacities=torch.full((n,), 0.95),
        colors=colors,
    )


def _look_down_forward(position: Tensor, heading: float) -> Tensor:
    """[3, 4] camera-to-world (OpenGL: columns right, up, back, centre) facing `heading`, pitched down."""
    pitch = math.radians(CAMERA_PITCH_DEG)
    forward = torch.tensor([math.cos(heading) * math.cos(pitch), math.sin(heading) * math.cos(pitch), -math.sin(pitch)])
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    return torch.stack([right, up, -forward, position], dim=-1)


def _serpentine(centres: Tensor, num_views: int) -> Tensor:
    """[V, 3, 4]: lane y = -LANE_OFFSET heading +x, then lane y = +LANE_OFFSET heading back (-x).

    Each lane starts behind the first objects it faces and stops just before the last ones, so the
    first and last views of a lane see only the objects nearest to them.
    """
    x_lo, x_hi = float(centres[:, 0].min()), float(centres[:, 0].max())
    out_views = (num_views + 1) // 2
    poses = []
    for lane, count in ((0, out_views), (1, num_views - out_views)):
        xs = (
            torch.linspace(x_lo - 5.0, x_hi - 2.0, count)
            if lane == 0
            else torch.linspace(x_hi + 5.0, x_lo + 2.0, count)
        )
        y = -LANE_OFFSET if lane == 0 else LANE_OFFSET
        for x in xs.tolist():
            poses.append(_look_down_forward(torch.tensor([x, y, CAMERA_HEIGHT]), 0.0 if lane == 0 else math.pi))
    return torch.stack(poses)


def build_wide_scene(
    num_objects: int = 6, num_views: int = 48, image_size: Tuple[int, int] = (64, 96), seed: int = 0
) -> WideScene:
    """The scene in memory (deterministic for a seed); image_size is (height, width)."""
    if num_objects < 2 or num_views < 2:
        raise ValueError(f"need at least 2 objects and 2 views, got {num_objects} and {num_views}")
    g = torch.Generator().manual_seed(seed)
    centres = _object_centres(num_objects, g)
    objects, ground = _objects(centres, g), _ground(centres)
    gaussians = Gaussians(*(torch.cat([getattr(objects, f.name), getattr(ground, f.name)]) for f in fields(Gaussians)))
    height, width = image_size
    focal = 0.7 * width  # ~71 degrees horizontal field of view
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return WideScene(gaussians, centres, _serpentine(centres, num_views), K, (height, width))


@torch.no_grad()
def render_views(scene: WideScene, chunk: int = 8) -> Tensor:
    """[V, H, W, 3] RGB in [0, 1], composited on white."""
    height, width = scene.image_size
    g = scene.gaussians
    images = []
    for start in range(0, scene.camera_to_worlds.shape[0], chunk):
        c2w = scene.camera_to_worlds[start : start + chunk]
        render, _, _ = rasterize(
            "torch",
            means=g.means,
            quats=g.quats,
            scales=g.scales,
            opacities=g.opacities,
            colors=g.colors,
            viewmats=world_to_camera(c2w),
            Ks=scene.K.expand(c2w.shape[0], 3, 3),
            width=width,
            height=height,
            sh_degree=None,
            backgrounds=torch.ones(c2w.shape[0], 3),
        )
        images.append(render.clamp(0.0, 1.0))
    return torch.cat(images)


def _write_ply(path: Path, points: Tensor, colors: Tensor) -> None:
    vertices = np.empty(
        points.shape[0], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for i, name in enumerate("xyz"):
        vertices[name] = points[:, i].numpy()
    rgb = (colors * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    for i, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, i]
    PlyData([PlyElement.describe(vertices, "vertex")]).write(str(path))


def make_wide_scene(
    out_dir: Path, num_objects: int = 6, num_views: int = 48, image_size: Tuple[int, int] = (64, 96), seed: int = 0
) -> Path:
    """Render the scene into `out_dir` in nerfstudio format; returns `out_dir`.

    Every 8th view (0, 8, ...) is held out for validation and testing, as in the demo scene. The
    seed point cloud is half the Gaussian centres with 2 cm noise, standing in for SfM points.
    """
    out_dir = Path(out_dir)
    scene = build_wide_scene(num_objects, num_views, image_size, seed)
    images = render_views(scene)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    frames, held_out = [], []
    for i, (image, c2w) in enumerate(zip(images, scene.camera_to_worlds, strict=True)):
        name = f"images/frame_{i:05d}.png"
        Image.fromarray((image * 255).round().to(torch.uint8).numpy()).save(out_dir / name)
        matrix = torch.cat([c2w, torch.tensor([[0.0, 0.0, 0.0, 1.0]])]).tolist()
        frames.append({"file_path": name, "transform_matrix": matrix})
        if i % HOLD_OUT_EVERY == 0:
            held_out.append(name)

    g = torch.Generator().manual_seed(seed + 1)
    gaussians = scene.gaussians
    keep = torch.randperm(gaussians.means.shape[0], generator=g)[: gaussians.means.shape[0] // 2]
    noisy = gaussians.means[keep] + 0.02 * torch.randn(keep.shape[0], 3, generator=g)
    _write_ply(out_dir / "sparse_pc.ply", noisy, gaussians.colors[keep])

    K = scene.K
    meta: Dict = {
        "camera_model": "OPENCV",
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "w": scene.image_size[1],
        "h": scene.image_size[0],
        "ply_file_path": "sparse_pc.ply",
        "frames": frames,
        "train_filenames": [f["file_path"] for f in frames if f["file_path"] not in held_out],
        "val_filenames": held_out,
        "test_filenames": held_out,
    }
    (out_dir / "transforms.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--num-objects", type=int, default=6)
    parser.add_argument("--num-views", type=int, default=48)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = make_wide_scene(args.out, args.num_objects, args.num_views, (args.height, args.width), args.seed)
    print(f"wrote {path / 'transforms.json'}")


if __name__ == "__main__":
    main()
