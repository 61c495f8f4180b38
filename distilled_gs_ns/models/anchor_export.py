"""The viewing direction each anchor is baked with for export.

A splat file stores one opacity, shape and colour per Gaussian, but anchors decode them per view.
Each anchor is baked as seen from the training cameras that see it: the mean of their unit viewing
directions. Where those directions cancel out (an anchor circled by cameras) or no camera sees it,
the direction from the nearest training camera is used, so the bake is always a real viewpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distilled_gs_ns.rendering.cameras import points_in_view, world_to_camera

MIN_MEAN_NORM = 0.2
"""Below this length the mean unit direction has no dominant side and the nearest camera is used."""


@torch.no_grad()
def export_view_directions(positions: Tensor, camera_to_worlds: Tensor, Ks: Tensor, sizes: Tensor) -> Tensor:
    """[N, 3] unit directions (camera towards anchor) for anchors `positions` [N, 3].

    camera_to_worlds: [C, 3, 4] nerfstudio (OpenGL) training poses; Ks: [C, 3, 3] pixel intrinsics;
    sizes: [C, 2] image (width, height) per camera.
    """
    if positions.shape[0] == 0:
        return positions.new_zeros(0, 3)
    device = positions.device
    c2w = camera_to_worlds.to(device=device, dtype=positions.dtype)
    Ks = Ks.to(device=device, dtype=positions.dtype)
    viewmats = world_to_camera(c2w)
    centres = c2w[:, :3, 3]
    result = torch.empty_like(positions)
    chunk = max(1, 2**22 // max(c2w.shape[0], 1))
    for start in range(0, positions.shape[0], chunk):
        points = positions[start : start + chunk]
        seen = points_in_view(viewmats, Ks, sizes, points)
        towards = points[None] - centres[:, None]  # [C, n, 3]
        units = F.normalize(towards, dim=-1)
        mean = (units * seen[..., None]).sum(0) / seen.sum(0).clamp(min=1)[:, None]
        nearest = towards.norm(dim=-1).argmin(dim=0)
        fallback = units[nearest, torch.arange(points.shape[0], device=device)]
        use_mean = mean.norm(dim=-1) >= MIN_MEAN_NORM
        result[start : start + chunk] = torch.where(use_mean[:, None], F.normalize(mean, dim=-1), fallback)
    return result
