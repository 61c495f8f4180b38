"""Scaffold-GS anchor growing and pruning as a strategy in gsplat's style: the settings are a small
dataclass, the per-block statistics are the state, and the model calls two hooks, one after every
backward pass and one that refines when the schedule says so.

Rows of the trained anchor tensors are kept and appended inside their optimisers, so Adam's moments
follow the anchors (optim/parameter_rows.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import Tensor
from torch.nn import Parameter

from distilled_gs_ns.optim.parameter_rows import append_rows, keep_rows
from distilled_gs_ns.scaffold.anchors import Anchors, SpawnInfo
from distilled_gs_ns.scaffold.refinement import (
    AnchorStatistics,
    grown_anchors,
    pruned_mask,
)

TRAINED_FIELDS = {"anchor_features": "features", "anchor_offsets": "offsets", "anchor_scaling": "log_scaling"}
"""Optimiser group -> the trained anchor field it holds (positions stay fixed, as in Scaffold-GS)."""


@dataclass
class ScaffoldStrategy:
    """When and how one block's anchors grow and are pruned (the fields of `MomentumGSModelConfig`
    of the same names document each)."""

    refine_every: int = 100
    grow_from: float = 0.05
    grow_until: float = 0.5
    grow_grad_threshold: float = 0.0002
    prune_opacity: float = 0.005
    min_visit_fraction: float = 0.8
    max_anchors: int = 0
    """0: no cap; otherwise growth stops at this many anchors (largest gradients first)."""

    def initialize_state(self, num_anchors: int, num_offsets: int, device: torch.device) -> AnchorStatistics:
        return AnchorStatistics.zeros(num_anchors, num_offsets, device)

    @torch.no_grad()
    def step_post_backward(
        self, state: AnchorStatistics, info: Dict, ids: Tensor, spawn: SpawnInfo, opacities: Tensor
    ) -> None:
        """Accumulate one view: screen-space gradients (NDC units) of the rasterised Gaussians,
        their opacities and which anchors were decoded (`ids`)."""
        means2d = info["means2d"]
        if means2d.grad is None:
            return
        scale = means2d.new_tensor([info["width"] / 2.0, info["height"] / 2.0])
        norms = (means2d.grad[0] * scale).norm(dim=-1)
        radii = info["radii"][0]
        seen = (radii > 0).all(dim=-1) if radii.dim() == 2 else radii > 0
        state.update(ids, spawn, opacities.detach(), norms, seen)

    def refines_at(self, block_steps: int, planned_block_steps: int) -> bool:
        """Every `refine_every` of the block's steps within [grow_from, grow_until) of its schedule."""
        start, stop = self.grow_from * planned_block_steps, self.grow_until * planned_block_steps
        return self.refine_every > 0 and block_steps % self.refine_every == 0 and start <= block_steps < stop

    @torch.no_grad()
    def refine(
        self,
        state: AnchorStatistics,
        anchors: Anchors,
        params: Dict[str, Parameter],
        optimizers: Dict[str, torch.optim.Optimizer],
        voxel_size: float,
    ) -> Tuple[Tensor, Dict[str, Parameter], AnchorStatistics]:
        """Prune, then grow up to the cap. Returns the new positions, trained Parameters (replaced
        in their optimisers, `TRAINED_FIELDS` groups) and statistics."""
        min_count = self.min_visit_fraction * self.refine_every
        keep = ~pruned_mask(state, self.prune_opacity, min_count)
        if not bool(keep.any()):
            keep[state.opacity_sum.argmax()] = True
        room = max(0, self.max_anchors - int(keep.sum())) if self.max_anchors else None
        new = grown_anchors(anchors, state, voxel_size, self.grow_grad_threshold, min_count, room)
        refined = {}
        for group, name in TRAINED_FIELDS.items():
            param = keep_rows(optimizers[group], params[group], keep)
            if new.num_anchors:
                param = append_rows(optimizers[group], param, getattr(new, name))
            refined[group] = param
        positions = torch.cat([anchors.positions[keep], new.positions])
        return positions, refined, state.after_refinement(keep, new.num_anchors, min_count)
