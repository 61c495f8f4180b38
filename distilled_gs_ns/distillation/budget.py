"""Choosing Gaussians by importance: a draw proportional to it, or the most important ones.

The draw (Distilled-3DGS's reduction) keeps Gaussians with probability proportional to importance,
so well-used ones almost always survive while weak ones can still be drawn: coverage of regions that
only weak Gaussians explain is kept better than by a hard top-k. When the schedules
(strategies/budget.py) call these is the student's recipe.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


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
