"""Dense reference compositor: every pixel against every Gaussian, differentiated by autograd.

Memory grows as H*W*N, so it is only for tests and benchmarks on small inputs. It shares no code
with the tile rasteriser beyond the constants, so the two check each other.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from distilled_gs_ns.rendering.tile_rasterizer import ALPHA_MAX, ALPHA_MIN


def rasterize_dense(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D]
    depths: Tensor,  # [N]
    radii: Tensor,  # [N]
    width: int,
    height: int,
) -> Tuple[Tensor, Tensor]:
    """Render one camera: image [H, W, D] and alpha [H, W, 1]."""
    keep = torch.nonzero(radii > 0).squeeze(-1)
    keep = keep[torch.argsort(depths[keep], stable=True)]
    mean, conic, opac, col = means2d[keep], conics[keep], opacities[keep], colors[keep]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=mean.dtype) + 0.5, torch.arange(width, dtype=mean.dtype) + 0.5, indexing="ij"
    )
    dx = mean[None, None, :, 0] - xs[..., None]
    dy = mean[None, None, :, 1] - ys[..., None]
    sigma = 0.5 * (conic[:, 0] * dx**2 + conic[:, 2] * dy**2) + conic[:, 1] * dx * dy
    alpha = torch.clamp(opac * torch.exp(-sigma), max=ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    # The Gaussian that would take transmittance to <= 1e-4 and everything behind it are dropped.
    with torch.no_grad():
        t_after = torch.cumprod(1.0 - alpha, dim=-1)
        keep_mask = t_after > 1e-4
    alpha = alpha * keep_mask
    one_minus = 1.0 - alpha
    t_before = torch.cat([torch.ones_like(one_minus[..., :1]), torch.cumprod(one_minus, dim=-1)[..., :-1]], dim=-1)
    weight = alpha * t_before
    image = torch.einsum("hwn,nd->hwd", weight, col)
    return image, weight.sum(-1, keepdim=True)
