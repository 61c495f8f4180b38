"""The student's Gaussian budget: capped densification and importance-based reduction.

Distilled-3DGS grows the student with ordinary densification, then brings it down to a fraction of
the teacher's count in two moves (official code: at 15k and 20k of 30k steps):
1. keep a random subset sampled with probability proportional to importance, so well-used
   Gaussians almost always survive while weak ones can still be drawn (sampling rather than a hard
   top-k keeps coverage of regions that only weak Gaussians explain);
2. later, once the survivors have adapted, drop the lowest-importance tail.
Here (1) keeps `budget * (1 + tail_fraction)` Gaussians and (2) cuts exactly to the budget, so the
final count is the budget whenever densification reached it. Growth beyond `max_count` is refused
by `BudgetedStrategy`, which keeps the highest-gradient candidates instead of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from gsplat.strategy import DefaultStrategy
from torch import Tensor


@dataclass
class BudgetedStrategy(DefaultStrategy):
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


def sample_by_importance(importance: Tensor, count: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices of `count` distinct Gaussians drawn with probability proportional to `importance`.

    Gumbel top-k: argtop-k of log(w) + Gumbel noise is a draw without replacement proportional to w,
    with no limit on the number of categories (torch.multinomial stops at 2^24). Zero-importance
    Gaussians are drawn only when the positive ones run out.
    """
    if count >= importance.shape[0]:
        return torch.arange(importance.shape[0], device=importance.device)
    uniform = torch.rand(importance.shape, generator=generator, device="cpu").to(importance.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    keys = torch.log(importance.clamp(min=0.0)) + gumbel
    return torch.topk(keys, count).indices


def least_important(importance: Tensor, keep: int) -> Tensor:
    """Boolean mask of the Gaussians outside the `keep` most important ones."""
    drop = torch.ones_like(importance, dtype=torch.bool)
    drop[torch.topk(importance, min(keep, importance.shape[0])).indices] = False
    return drop
