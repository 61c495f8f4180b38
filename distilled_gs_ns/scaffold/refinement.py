"""Scaffold-GS anchor growing and pruning, from statistics gathered while training one block.

Growing: an offset whose neural Gaussian keeps a large screen-space gradient marks an under-fitted
spot; a new anchor is placed at the voxel containing that Gaussian, if the voxel has no anchor yet.
Pruning: an anchor whose Gaussians contribute little opacity over many views is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from distilled_gs_ns.scaffold.anchors import (
    Anchors,
    SpawnInfo,
    accumulate_opacity,
    accumulate_per_offset,
)


@dataclass
class AnchorStatistics:
    """Per-offset gradient sums and counts, per-anchor opacity sums and visits since the last reset."""

    gradient_sum: Tensor  # [N, K]
    gradient_count: Tensor  # [N, K]
    opacity_sum: Tensor  # [N]
    visits: Tensor  # [N]

    @classmethod
    def zeros(cls, num_anchors: int, num_offsets: int, device: torch.device) -> AnchorStatistics:
        return cls(
            gradient_sum=torch.zeros(num_anchors, num_offsets, device=device),
            gradient_count=torch.zeros(num_anchors, num_offsets, device=device),
            opacity_sum=torch.zeros(num_anchors, device=device),
            visits=torch.zeros(num_anchors, device=device),
        )

    @torch.no_grad()
    def update(self, visible_ids: Tensor, spawn: SpawnInfo, opacities: Tensor, gradient_norms: Tensor, seen: Tensor) -> None:
        """One view: `visible_ids` were decoded; per spawned Gaussian its opacity, screen-space
        gradient norm and whether it landed in the image (`seen`, bool)."""
        n, k = self.gradient_sum.shape
        self.visits[visible_ids] += 1
        self.opacity_sum += accumulate_opacity(n, spawn, opacities)
        self.gradient_sum += accumulate_per_offset(n, k, spawn, torch.where(seen, gradient_norms, 0.0))
        self.gradient_count += accumulate_per_offset(n, k, spawn, seen.to(gradient_norms.dtype))

    def after_refinement(self, keep: Tensor, num_new: int, min_count: float) -> AnchorStatistics:
        """Statistics for the refined anchors (rows `keep`, then `num_new` new ones), as Scaffold-GS
        keeps them: what was evaluated this time (offsets with at least half of `min_count`
        samples, anchors with `min_count` visits) starts over, the rest keeps accumulating, so
        offsets seen in few views still qualify after several intervals."""
        evaluated_offsets = self.gradient_count >= 0.5 * min_count
        evaluated_anchors = self.visits >= min_count
        rows = (
            torch.where(evaluated_offsets, 0.0, self.gradient_sum),
            torch.where(evaluated_offsets, 0.0, self.gradient_count),
            torch.where(evaluated_anchors, 0.0, self.opacity_sum),
            torch.where(evaluated_anchors, 0.0, self.visits),
        )
        grown = [torch.cat([row[keep], row.new_zeros((num_new,) + tuple(row.shape[1:]))]) for row in rows]
        return AnchorStatistics(*grown)


@torch.no_grad()
def grown_anchors(
    anchors: Anchors,
    stats: AnchorStatistics,
    voxel_size: float,
    gradient_threshold: float,
    min_count: float,
    limit: Optional[int] = None,
) -> Anchors:
    """New anchors (possibly none) at the voxels of offsets whose mean gradient >= the threshold.

    Only offsets rasterised at least `min_count` times qualify. A new anchor takes the feature of
    the first qualifying offset's anchor in its voxel, zero offsets and a one-voxel log scaling, as
    Scaffold-GS initialises grown anchors. With a `limit` (a memory cap), at most that many are
    grown: offsets are taken in order of their gradient, largest first.
    """
    mean = stats.gradient_sum / stats.gradient_count.clamp(min=1)
    candidate = (stats.gradient_count >= min_count) & (mean >= gradient_threshold)
    anchor_ids, offset_ids = candidate.nonzero(as_tuple=True)
    if limit is not None:
        order = torch.sort(mean[anchor_ids, offset_ids], descending=True, stable=True).indices
        anchor_ids, offset_ids = anchor_ids[order], offset_ids[order]
    empty = Anchors(
        positions=anchors.positions[:0],
        features=anchors.features[:0].detach(),
        offsets=anchors.offsets[:0].detach(),
        log_scaling=anchors.log_scaling[:0].detach(),
    )
    if anchor_ids.numel() == 0:
        return empty
    scaling = torch.exp(anchors.log_scaling[anchor_ids, :3])
    points = anchors.positions[anchor_ids] + anchors.offsets[anchor_ids, offset_ids] * scaling
    cells = torch.floor(points / voxel_size + 0.5).long()
    existing = torch.floor(anchors.positions / voxel_size + 0.5).long()
    # A cell is new if it appears neither among the existing anchors nor earlier in the candidates.
    everything = torch.cat([existing, cells])
    unique, inverse = torch.unique(everything, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), everything.shape[0], dtype=torch.long, device=cells.device)
    first.scatter_reduce_(0, inverse, torch.arange(everything.shape[0], device=cells.device), reduce="amin")
    own_index = torch.arange(existing.shape[0], everything.shape[0], device=cells.device)
    keep = first[inverse[existing.shape[0] :]] == own_index  # first occurrence and no existing anchor there
    if limit is not None:
        keep &= torch.cumsum(keep, dim=0) <= limit
    if not bool(keep.any()):
        return empty
    count = int(keep.sum())
    return Anchors(
        positions=cells[keep].to(anchors.positions.dtype) * voxel_size,
        features=anchors.features[anchor_ids[keep]].detach().clone(),
        offsets=anchors.offsets.new_zeros(count, anchors.num_offsets, 3),
        log_scaling=anchors.log_scaling.new_full((count, 6), float(torch.log(torch.tensor(voxel_size)))),
    )


def pruned_mask(stats: AnchorStatistics, min_opacity: float, min_visits: float) -> Tensor:
    """[N] bool: anchors seen at least `min_visits` times whose mean summed opacity is < `min_opacity`."""
    return (stats.visits >= min_visits) & (stats.opacity_sum < min_opacity * stats.visits)
