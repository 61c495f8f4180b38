"""Which training cameras each block trains on.

Momentum-GS gives a block the cameras whose centre lies in it, plus those whose render changes
visibly (SSIM) when the block's content is removed. Rendering every camera twice per block is
expensive, so this uses the cheaper projection proxy of CityGaussian-style partitions: a camera
sees a block when a large enough share of the block's points project inside its image.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.rendering.cameras import in_view_chunks, world_to_camera


def _visible_counts(
    camera_to_worlds: Tensor, Ks: Tensor, sizes: Tensor, points: Tensor, block_ids: Tensor, num_blocks: int
) -> Tensor:
    """[C, B] number of each block's points in front of each camera and inside its image."""
    viewmats = world_to_camera(camera_to_worlds.to(points.dtype))  # OpenCV axes: camera looks along +z
    Ks = Ks.to(points.dtype)
    counts = torch.zeros(camera_to_worlds.shape[0], num_blocks, dtype=points.dtype, device=points.device)
    for cameras, inside in in_view_chunks(viewmats, Ks, sizes, points):
        counts[cameras].index_add_(1, block_ids, inside.to(points.dtype))
    return counts


@torch.no_grad()
def assign_cameras(
    partition: BlockPartition,
    camera_to_worlds: Tensor,
    Ks: Tensor,
    sizes: Tensor,
    points: Tensor,
    block_ids: Tensor,
    position_margin: float = 0.1,
    visibility_threshold: float = 0.2,
    min_points: int = 1,
) -> List[List[int]]:
    """Sorted camera indices per block; blocks may share cameras.

    camera_to_worlds: [C, 3, 4] nerfstudio (OpenGL axes); Ks: [C, 3, 3] pixel intrinsics; sizes:
    [C, 2] image (width, height) per camera; points: [N, 3] scene points (e.g. coarse anchors) with
    block_ids [N].
    A camera belongs to a block if its centre lies in the block grown by `position_margin` cells,
    or if at least `visibility_threshold` of the block's points are in its view. Blocks with fewer
    than `min_points` points count as empty: they only get cameras by position.

    Every non-empty block gets at least one camera (the one seeing most of its points, else the
    nearest): a block without views gets no gradient, so its content would stay at initialisation
    and still be merged into the final model.
    """
    num_cams = camera_to_worlds.shape[0]
    if camera_to_worlds.dim() != 3 or camera_to_worlds.shape[1:] != (3, 4) or num_cams == 0:
        raise ValueError(f"camera_to_worlds must be [C, 3, 4] with C >= 1, got {tuple(camera_to_worlds.shape)}")
    if Ks.shape != (num_cams, 3, 3):
        raise ValueError(f"Ks must be [{num_cams}, 3, 3], got {tuple(Ks.shape)}")
    if sizes.shape != (num_cams, 2):
        raise ValueError(f"sizes must be [{num_cams}, 2], got {tuple(sizes.shape)}")
    if points.dim() != 2 or points.shape[1] != 3 or block_ids.shape != (points.shape[0],):
        raise ValueError(
            f"points must be [N, 3] and block_ids [N], got {tuple(points.shape)}, {tuple(block_ids.shape)}"
        )
    num_blocks = partition.num_blocks
    if block_ids.numel() and not (0 <= int(block_ids.min()) and int(block_ids.max()) < num_blocks):
        raise ValueError(f"block_ids must be in [0, {num_blocks})")
    if not 0.0 < visibility_threshold <= 1.0:
        raise ValueError(f"visibility_threshold must be in (0, 1], got {visibility_threshold}")
    if position_margin < 0:
        raise ValueError(f"position_margin must be >= 0, got {position_margin}")
    if min_points < 1:
        raise ValueError(f"min_points must be >= 1, got {min_points}")

    points = points.detach().float()
    device = points.device
    camera_to_worlds = camera_to_worlds.detach().to(device)
    block_ids = block_ids.to(device=device, dtype=torch.long)
    points_per_block = torch.bincount(block_ids, minlength=num_blocks)
    counts = _visible_counts(camera_to_worlds, Ks.detach().to(device), sizes, points, block_ids, num_blocks)
    fractions = counts / points_per_block.clamp(min=1).to(counts.dtype)
    centres = camera_to_worlds[:, :3, 3]

    assigned = []
    for block in range(num_blocks):
        non_empty = int(points_per_block[block]) >= min_points
        chosen = partition.contains(centres, block, margin=position_margin)
        if non_empty:
            chosen = chosen | (fractions[:, block] >= visibility_threshold)
            if not bool(chosen.any()):
                if float(counts[:, block].max()) > 0:
                    best = int(counts[:, block].argmax())
                else:
                    block_centre = points[block_ids == block].mean(0, keepdim=True)
                    offsets = partition.ground_coords(centres) - partition.ground_coords(block_centre)
                    best = int(offsets.norm(dim=-1).argmin())
                chosen[best] = True
        assigned.append(torch.nonzero(chosen).flatten().tolist())
    return assigned
