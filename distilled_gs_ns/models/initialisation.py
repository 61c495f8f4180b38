"""Where to put random seed Gaussians when a scene has no point cloud.

splatfacto samples a fixed cube of side 10; the scene box of nerfstudio-format data spans the cameras
themselves, so seeds land next to the lenses and cover the whole screen. The useful region is where
the cameras look: the point closest (least squares) to all optical axes, with a half-size of what a
camera at the median distance sees (distance x tan(half field of view)).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def camera_focus_box(camera_to_worlds: Tensor, tan_half_fov: Tensor) -> Optional[Tensor]:
    """[2, 3] box (min, max) around the cameras' common focus, or None if they share none.

    camera_to_worlds: [N, 3, 4] OpenGL convention (cameras look along -z); tan_half_fov: [N].
    """
    centres = camera_to_worlds[:, :3, 3].double()
    forward = -camera_to_worlds[:, :3, 2].double()
    forward = forward / forward.norm(dim=-1, keepdim=True)
    proj = torch.eye(3, dtype=torch.float64) - forward[:, :, None] * forward[:, None, :]  # [N, 3, 3]
    lhs = proj.sum(0)
    rhs = (proj @ centres[:, :, None]).sum(0).squeeze(-1)
    eig = torch.linalg.eigvalsh(lhs)
    if eig[0] < 1e-3 * eig[-1]:
        return None  # near-parallel optical axes (forward-facing capture): no common focus
    focus = torch.linalg.solve(lhs, rhs)
    to_focus = focus - centres
    if (to_focus * forward).sum(-1).gt(0).float().mean() < 0.5:
        return None
    half = to_focus.norm(dim=-1).median() * tan_half_fov.double().max()
    return torch.stack([focus - half, focus + half]).float()


def seed_box(scene_aabb: Tensor, camera_to_worlds: Tensor, tan_half_fov: Tensor) -> Tensor:
    """The camera focus box clipped to the scene box; the scene box itself if there is no focus."""
    box = camera_focus_box(camera_to_worlds, tan_half_fov)
    if box is None:
        return scene_aabb.float()
    clipped = torch.stack([torch.maximum(box[0], scene_aabb[0]), torch.minimum(box[1], scene_aabb[1])])
    return clipped if bool((clipped[1] > clipped[0]).all()) else scene_aabb.float()
