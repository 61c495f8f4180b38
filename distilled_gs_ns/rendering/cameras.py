"""Camera conventions between nerfstudio and gsplat, kept free of nerfstudio imports so that light
modules (block partitions, scene generators) can use them."""

from __future__ import annotations

import torch
from torch import Tensor


def world_to_camera(camera_to_world: Tensor) -> Tensor:
    """gsplat view matrices [C, 4, 4] from nerfstudio camera-to-world [C, 3, 4] (OpenGL axes)."""
    rot = camera_to_world[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=camera_to_world.device)
    trans = camera_to_world[:, :3, 3:4]
    rot_inv = rot.transpose(1, 2)
    view = torch.zeros(camera_to_world.shape[0], 4, 4, device=camera_to_world.device, dtype=camera_to_world.dtype)
    view[:, :3, :3] = rot_inv
    view[:, :3, 3:4] = -torch.bmm(rot_inv, trans)
    view[:, 3, 3] = 1.0
    return view
