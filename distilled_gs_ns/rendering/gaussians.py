"""The rasterisers' input: one row per Gaussian, attributes already activated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class RenderGaussians:
    """What goes to the rasteriser for one view: activated attributes, one row per Gaussian."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] (normalised by the rasteriser)
    scales: Tensor  # [N, 3] linear scales
    opacities: Tensor  # [N] in [0, 1]
    colors: Tensor  # [N, K, 3] SH coefficients, or [N, 3] RGB when sh_degree is None
    sh_degree: Optional[int]
