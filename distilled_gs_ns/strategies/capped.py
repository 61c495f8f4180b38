"""3DGS densification that stops growing at a Gaussian cap.

gsplat's DefaultStrategy grows every candidate above the gradient threshold; a budgeted splat (the
student before its importance reduction, the capped baseline) must not pass `max_count`. This
strategy keeps only the highest-gradient candidates that fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from gsplat.strategy import DefaultStrategy


@dataclass
class CappedStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy whose growth stops at `max_count` Gaussians (None: no cap)."""

    max_count: Optional[int] = None

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state: Dict[str, Any], step: int) -> Tuple[int, int]:
        if self.max_count is not None:
            self._limit_candidates(params["means"].shape[0], state, step)
        return super()._grow_gs(params, optimizers, state, step)

    def _limit_candidates(self, count: int, state: Dict[str, Any], step: int) -> None:
        """Keep only the `max_count - count` highest-gradient growth candidates.

        Every candidate adds exactly one Gaussian (a duplicate, or a split of one into two), so this
        bounds the count after growth. The others are made non-candidates by clearing the running
        statistics that select them; DefaultStrategy zeroes those statistics after each refinement.
        """
        grads = state["grad2d"] / state["count"].clamp_min(1)
        candidates = grads > self.grow_grad2d
        by_radius = step < self.refine_scale2d_stop_iter
        if by_radius:
            candidates |= state["radii"] > self.grow_scale2d
        room = max(self.max_count - count, 0)
        if int(candidates.sum()) <= room:
            return
        score = torch.where(candidates, grads, torch.full_like(grads, -float("inf")))
        keep = torch.zeros_like(candidates)
        keep[torch.topk(score, room).indices] = True
        refused = candidates & ~keep
        state["grad2d"][refused] = 0.0
        if by_radius:
            state["radii"][refused] = 0.0
