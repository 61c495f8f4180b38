"""How the student reaches its Gaussian budget: small schedules of importance cuts, one per recipe.

Each schedule says which Gaussians the student starts from and at which steps it is cut, by
importance, to how many; the student measures importance and removes Gaussians (models/student.py).
Growth between cuts is the densification strategy's business (capped 3DGS or MCMC, beside this file).

- `ProgressivePruning` (default): the whole standard teacher, cut `rounds` times, counts falling
  geometrically to exactly the budget by `until` of the run, no growth.
- `SampleThenTrim` (the paper's): growth to a cap, then a draw proportional to importance that keeps
  budget x (1 + tail_fraction) at `sample_at`, and the least important dropped to the budget at
  `trim_at` (official code: 15k and 20k of 30k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Literal, NamedTuple, Tuple


class Cut(NamedTuple):
    """Reduce to `count` Gaussians: a weighted draw ('sampling') or dropping the least important ('tail')."""

    count: int
    by: Literal["sampling", "tail"]


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


@dataclass
class ProgressivePruning:
    """Start from all the teacher's Gaussians and prune them to the budget in `rounds` even steps."""

    rounds: int
    until: float
    """The last cut, as a fraction of the run."""

    starts_from_whole_teacher = True
    grows = False

    def densify_until(self, total_steps: int) -> int:
        return 0

    def cuts(self, total_steps: int, start_count: int, budget: int) -> Dict[int, Cut]:
        """From the teacher's count, not the current one: a run resumed in the middle continues it."""
        last = max(1, round(self.until * total_steps))
        rounds = min(self.rounds, last)  # very short runs: one cut per step at most
        return {step: Cut(count, "tail") for step, count in pruning_schedule(start_count, budget, rounds, last)}


@dataclass
class SampleThenTrim:
    """Grow (capped), sample by importance at `sample_at`, trim the least important to the budget at `trim_at`."""

    sample_at: float
    trim_at: float
    tail_fraction: float
    grows: bool = True

    starts_from_whole_teacher = False

    def _sample_step(self, total_steps: int) -> int:
        return max(1, round(self.sample_at * total_steps))

    def densify_until(self, total_steps: int) -> int:
        """Densification (and its opacity resets and pruning) stops where the budget schedule starts."""
        return self._sample_step(total_steps) if self.grows else 0

    def cuts(self, total_steps: int, start_count: int, budget: int) -> Dict[int, Cut]:
        sample = self._sample_step(total_steps)
        trim = max(sample + 1, round(self.trim_at * total_steps))
        return {sample: Cut(math.ceil(budget * (1 + self.tail_fraction)), "sampling"), trim: Cut(budget, "tail")}
