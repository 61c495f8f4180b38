"""Random Gaussian dropout during training (the Distilled-3DGS "dropout" teacher, after DropGaussian).

Each training render switches off a random fraction p of the Gaussians (opacity 0) and scales the
survivors' opacity by 1 / (1 - p), so the expected opacity is unchanged and every Gaussian must be
useful on its own. p may ramp linearly over the steps dropout runs in (DropGaussian grows it with
the step; the dropout teacher anneals it to 0, so that its last steps train the Gaussians it is
evaluated with). Never applied outside training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class GaussianDropout:
    rate: float = 0.2
    final_rate: Optional[float] = None

    def __post_init__(self) -> None:
        for value in (self.rate, self.final_rate):
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"dropout rates must be in [0, 1), got {value}")

    def rate_at(self, step: int, first: int, last: int) -> float:
        """The rate at `step` of a window of steps [first, last]: `rate` at first, `final_rate` at last."""
        if self.final_rate is None or last <= first:
            return self.rate
        t = min(max((step - first) / (last - first), 0.0), 1.0)
        return self.rate + t * (self.final_rate - self.rate)

    def apply(self, opacities: Tensor, rate: float) -> Tensor:
        """Opacities [N] with a random `rate` fraction zeroed and the rest scaled by 1 / (1 - rate)."""
        if rate <= 0.0:
            return opacities
        keep = torch.rand(opacities.shape[0], device=opacities.device) >= rate
        return opacities * keep.to(opacities.dtype) / (1.0 - rate)
