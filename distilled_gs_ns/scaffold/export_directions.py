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

from distilled_gs_ns.rendering.cameras import in_view_chunks, world_to_camera

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
    direction_sum = torch.zeros_like(positions)
    seen_count = positions.new_zeros(positions.shape[0])
    nearest_distance = positions.new_full((positions.shape[0],), float("inf"))
    nearest_unit = positions.new_zeros(positions.shape)
    points = torch.arange(positions.shape[0], device=device)
    for cameras, seen in in_view_chunks(viewmats, Ks, sizes, positions):
        towards = positions[None] - centres[cameras, None]  # [c, N, 3]
        distance, units = towards.norm(dim=-1), F.normalize(towards, dim=-1)
        direction_sum += (units * seen[..., None]).sum(0)
        seen_count += seen.sum(0)
        closest = distance.min(dim=0)
        closer = closest.values < nearest_distance
        nearest_distance = torch.where(closer, closest.values, nearest_distance)
        nearest_unit = torch.where(closer[:, None], units[closest.indices, points], nearest_unit)
    mean = direction_sum / seen_count.clamp(min=1)[:, None]
    use_mean = mean.norm(dim=-1) >= MIN_MEAN_NORM
    return torch.where(use_mean[:, None], F.normalize(mean, dim=-1), nearest_unit)
