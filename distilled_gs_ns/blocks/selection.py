"""Which anchors each block trains (`block_init`), under an optional per-process cap.

The official Momentum-GS code starts every block from the whole seed cloud, so a block models all
content its views show; anchors are cropped to the block's cell only at the merge. Less memory:
its cell grown by a margin plus what its cameras see ('seen', VastGaussian's coverage selection),
or only its cell grown by a margin ('cell'). Under a cap, a block keeps its cell's anchors first,
then those seen by the most of its cameras.
"""

from __future__ import annotations

from typing import Dict, List, Literal

import torch
from torch import Tensor

from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.rendering.cameras import in_view_chunks, world_to_camera
from distilled_gs_ns.scaffold.anchors import Anchors

BlockInit = Literal["all-seeds", "seen", "cell"]


def view_counts(points: Tensor, camera_to_worlds: Tensor, Ks: Tensor, sizes: Tensor) -> Tensor:
    """[N] how many of the cameras see each point (in front of it and inside its image)."""
    counts = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
    for _, inside in in_view_chunks(world_to_camera(camera_to_worlds), Ks, sizes, points):
        counts += inside.sum(dim=0)
    return counts


def capped(selected: Tensor, in_cell: Tensor, views: Tensor, cap: int) -> Tensor:
    """Sorted indices of at most `cap` of the `selected` anchors: the cell's first, then those seen
    by the most of the block's cameras (`views`: [N] counts)."""
    candidates = selected.nonzero().squeeze(1)
    if candidates.numel() <= cap:
        return candidates
    score = in_cell.double() * (1 << 30) + views.double()
    order = torch.sort(score[candidates], descending=True, stable=True).indices
    return candidates[order[:cap]].sort().values


def block_anchors(
    anchors: Anchors,
    partition: BlockPartition,
    block_cameras: List[List[int]],
    train_views: Dict[str, Tensor],
    mode: BlockInit,
    margin: float,
    cap: int = 0,
) -> List[Anchors]:
    """Each block's anchors; `train_views` holds the cameras' camera_to_worlds, Ks and sizes; cap 0:
    no cap."""
    c2w, Ks, sizes = (train_views[key] for key in ("camera_to_worlds", "Ks", "sizes"))
    parts = []
    for block, cams in enumerate(block_cameras):
        in_cell = partition.contains(anchors.positions, block, margin=margin)
        views = view_counts(anchors.positions, c2w[cams], Ks[cams], sizes[cams]) if cap or mode == "seen" else None
        if mode == "cell":
            selected = in_cell
        elif mode == "all-seeds" and not cap:
            selected = torch.ones_like(in_cell)
        else:
            selected = in_cell | (views > 0)  # type: ignore[operator]
        parts.append(anchors.select(selected if not cap else capped(selected, in_cell, views, cap)))  # type: ignore[arg-type]
    return parts
