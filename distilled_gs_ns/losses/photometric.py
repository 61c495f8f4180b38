"""The 3DGS image loss, (1 - l) L1 + l (1 - SSIM), for any target image (ground truth or pseudo-label)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def photometric_loss(pred: Tensor, target: Tensor, ssim: Callable[[Tensor, Tensor], Tensor], ssim_lambda: float) -> Tensor:
    """Images are [H, W, 3] in [0, 1]; `ssim` takes [1, 3, H, W] pairs (pytorch_msssim.SSIM)."""
    l1 = torch.abs(pred - target).mean()
    similarity = ssim(pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - similarity)
