"""The shared implicit Gaussian decoder of Scaffold-GS / Momentum-GS.

Anchors store no Gaussians, only a feature; three small MLPs turn [feature, unit view direction]
into the attributes of the anchor's neural Gaussians. Momentum-GS shares this decoder across
blocks and keeps an EMA copy of it as a teacher (see `distilled_gs_ns.scaffold.momentum_teacher`), whose
consistency loss compares the four outputs of `AnchorDecoder.forward` key by key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class AnchorDecoderConfig:
    """Sizes of the decoder (Momentum-GS: 32-d features, 10 offsets, 32 hidden units)."""

    feature_dim: int = 32
    num_offsets: int = 10
    hidden_dim: int = 32

    def __post_init__(self) -> None:
        for name in ("feature_dim", "num_offsets", "hidden_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class AnchorDecoder(nn.Module):
    """Opacity, covariance and colour MLPs of Scaffold-GS, each on [feature, view direction]."""

    def __init__(self, config: Optional[AnchorDecoderConfig] = None) -> None:
        super().__init__()
        self.config = config or AnchorDecoderConfig()
        in_dim, hidden, k = self.config.feature_dim + 3, self.config.hidden_dim, self.config.num_offsets
        self.opacity_mlp = _mlp(in_dim, hidden, k)
        # Per offset: 3 scale factors, then a quaternion (wxyz), as in Scaffold-GS's mlp_cov.
        self.covariance_mlp = _mlp(in_dim, hidden, 7 * k)
        self.color_mlp = _mlp(in_dim, hidden, 3 * k)

    def forward(self, features: Tensor, view_dirs: Tensor) -> Dict[str, Tensor]:
        """Decode M anchors: features [M, F] and unit view directions [M, 3] (anchor minus camera).

        Returns "opacity" [M, K] in (-1, 1) (tanh: Gaussians with opacity <= 0 are dropped, which is
        how Scaffold-GS learns how many of its K Gaussians an anchor uses), "scale" [M, K, 3]
        sigmoid factors of the anchor's base scale, "rotation" [M, K, 4] unit quaternions (wxyz) and
        "color" [M, K, 3] RGB in (0, 1).
        """
        f, k = self.config.feature_dim, self.config.num_offsets
        if features.dim() != 2 or features.shape[1] != f:
            raise ValueError(f"features must be [M, {f}], got {tuple(features.shape)}")
        if view_dirs.shape != (features.shape[0], 3):
            raise ValueError(f"view_dirs must be [{features.shape[0]}, 3], got {tuple(view_dirs.shape)}")
        m = features.shape[0]
        inputs = torch.cat([features, view_dirs.to(features.dtype)], dim=-1)
        covariance = self.covariance_mlp(inputs).reshape(m, k, 7)
        return {
            "opacity": torch.tanh(self.opacity_mlp(inputs)),
            "scale": torch.sigmoid(covariance[..., :3]),
            "rotation": F.normalize(covariance[..., 3:], dim=-1),
            "color": torch.sigmoid(self.color_mlp(inputs).reshape(m, k, 3)),
        }
