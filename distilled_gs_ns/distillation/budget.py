"""The student's Gaussian budget: importance-based reduction to it.

Distilled-3DGS grows the student with ordinary densification, then brings it down to a fraction of
the teacher's count in two moves (official code: at 15k and 20k of 30k steps):
1. keep a random subset sampled with probability proportional to importance, so well-used
   Gaussians almost always survive while weak ones can still be drawn (sampling rather than a hard
   top-k keeps coverage of regions that only weak Gaussians explain);
2. later, once the survivors have adapted, drop the lowest-importance tail.
Here (1) keeps `budget * (1 + tail_fraction)` Gaussians and (2) cuts exactly to the budget, so the
final count is the budget whenever densification reached it. Growth before that is capped by
strategies/capped.py.

A student started from the whole standard teacher instead reaches its budget by progressive pruning
(`pruning_schedule`): several hard importance cuts with training in between, each removing the same
fraction, so the survivors adapt to each loss before the next (one-shot pruning, as in
prune-and-fine-tune, removes ~88% at once).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

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


def pruning_schedule(start: int, budget: int, rounds: int, last_step: int) -> List[Tuple[int, int]]:
    """(step, count) of each progressive pruning round: `rounds` cuts evenly spaced up to `last_step`,
    counts falling geometrically from `start` so that the last one is exactly `budget`."""
    if rounds < 1 or last_step < rounds:
        raise ValueError(f"need 1 <= rounds <= last_step, got rounds={rounds}, last_step={last_step}")
    ratio = budget / start if start > budget else 1.0
    steps = [round(last_step * k / rounds) for k in range(1, rounds + 1)]
    counts = [max(budget, round(start * ratio ** (k / rounds))) for k in range(1, rounds + 1)]
    counts[-1] = budget
    return list(zip(steps, counts))
