"""Camera conventions between nerfstudio and gsplat, kept free of nerfstudio imports so that light
modules (block partitions, scene generators) can use them."""

from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch import Tensor

CHUNK_ELEMENTS = 2**22
"""Cameras x points handled at once by `in_view_chunks`: bounds its [c, N, 3] temporaries."""


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


def points_in_view(viewmats: Tensor, Ks: Tensor, sizes: Tensor, points: Tensor) -> Tensor:
    """[C, N] bool: points [N, 3] in front of each camera and inside its image.

    viewmats: gsplat world-to-camera [C, 4, 4] (OpenCV axes, looking along +z); Ks: [C, 3, 3] pixel
    intrinsics; sizes: [C, 2] each camera's (width, height), which may differ between cameras.
    Builds [C, N, 3] temporaries: callers with many cameras and points chunk them.
    """
    cam = torch.einsum("cij,nj->cni", viewmats[:, :3, :3], points) + viewmats[:, None, :3, 3]
    depth = cam[..., 2]
    pix = torch.einsum("cij,cnj->cni", Ks, cam / depth.clamp(min=1e-9)[..., None])[..., :2]
    limits = sizes.to(device=pix.device, dtype=pix.dtype)[:, None, :]
    return (depth > 0) & (pix >= 0).all(dim=-1) & (pix < limits).all(dim=-1)


def in_view_chunks(
    viewmats: Tensor, Ks: Tensor, sizes: Tensor, points: Tensor
) -> Iterator[Tuple[slice, Tensor]]:
    """`points_in_view` over many cameras a few at a time: yields (the cameras' slice, [c, N] bool),
    so that callers reduce each chunk (counts, any, sums) without holding [C, N, 3] at once."""
    chunk = max(1, CHUNK_ELEMENTS // max(points.shape[0], 1))
    for start in range(0, viewmats.shape[0], chunk):
        cameras = slice(start, start + chunk)
        yield cameras, points_in_view(viewmats[cameras], Ks[cameras], sizes[cameras], points)


def image_sizes(cameras) -> Tensor:
    """[C, 2] (width, height) of each of nerfstudio `cameras`, as served (after undistortion)."""
    return torch.stack([cameras.width.reshape(-1), cameras.height.reshape(-1)], dim=-1).long().cpu()
