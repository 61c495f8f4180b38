"""Mini-Splatting-style densification: capped 3DGS growth plus depth reinitialisation.

Densification piles Gaussians where gradients were large, often many overlapping ones on a few
surfaces. Mini-Splatting (Fang and Wang, 2024), whose densification the official Distilled-3DGS code
uses for its student, periodically throws the Gaussians away and places as many new ones on the
scene's surfaces: points back-projected from the depth the current model renders at the training
views, so they are spread like the pixels that see them. Its blur split (splitting Gaussians that
cover large screen areas) is what gsplat's screen-size split already does during `grow_scale2d`'s
window; the CPU rasteriser has no per-pixel "dominant Gaussian" output for the exact criterion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from distilled_gs_ns.distillation.renderer import SplatRenderer
from distilled_gs_ns.strategies.capped import CappedStrategy


@dataclass
class MiniSplattingStrategy(CappedStrategy):
    """Capped growth (CappedStrategy) whose model reinitialises its Gaussians from depth at `reinit_at`."""

    reinit_at: Tuple[int, ...] = ()
    """Steps of the depth reinitialisations (set by the model from the run's length)."""


@torch.no_grad()
def surface_points(
    model: SplatRenderer, cameras: Cameras, count: int, generator: torch.Generator, min_alpha: float = 0.5
) -> Tuple[Tensor, Tensor]:
    """`count` world points (and their rendered colours, [count, 3] each) drawn uniformly from the
    pixels of `cameras` that `model` covers (alpha > min_alpha), each back-projected to its expected
    depth. Fewer if fewer pixels are covered."""
    points, colours = [], []
    for index in range(cameras.shape[0]):
        camera = cameras[index : index + 1].to(model.device)
        render, alpha, _ = model.rasterize_view(model.gaussians_for_render(None), camera, render_mode="RGB+ED")
        covered = alpha[0, ..., 0] > min_alpha
        if not bool(covered.any()):
            continue
        v, u = covered.nonzero(as_tuple=True)
        depth = render[0, v, u, 3]
        fx, fy, cx, cy = (float(getattr(camera, name)) for name in ("fx", "fy", "cx", "cy"))
        # OpenCV camera coordinates of each pixel centre at its depth, then nerfstudio's OpenGL pose.
        local = torch.stack([(u + 0.5 - cx) / fx * depth, -(v + 0.5 - cy) / fy * depth, -depth], dim=-1)
        pose = camera.camera_to_worlds[0].to(local)
        points.append(local @ pose[:3, :3].T + pose[:3, 3])
        colours.append((render[0, v, u, :3] / alpha[0, v, u]).clamp(0.0, 1.0))
    if not points:
        raise RuntimeError("depth reinitialisation: the model covers no pixel of any training view")
    all_points, all_colours = torch.cat(points), torch.cat(colours)
    pick = torch.randperm(all_points.shape[0], generator=generator)[:count].to(all_points.device)
    return all_points[pick], all_colours[pick]
