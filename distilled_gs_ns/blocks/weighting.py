"""Momentum-GS block weighting: blocks that reconstruct worse than the best one get a larger loss
weight, so the shared decoder does not drift towards the easy blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import torch
from torch import Tensor


def block_weights(psnr: Tensor, ssim: Tensor, sigma: float = 10.0) -> Tensor:
    """w_b = 2 - exp(-[dPSNR_b^2 + 100 dSSIM_b^2] / (2 sigma^2)) for [B] per-block PSNR (dB) and SSIM.

    dPSNR_b = max(psnr) - psnr_b and dSSIM_b = max(ssim) - ssim_b, so the best block gets 1 and the
    weight grows towards 2 as a block falls behind. The factor 100 puts SSIM gaps (~0.01) on the
    scale of PSNR gaps (~1 dB). Detached: the weight scales a loss, it is not optimised.
    """
    if psnr.dim() != 1 or psnr.numel() == 0 or psnr.shape != ssim.shape:
        raise ValueError(f"psnr and ssim must be non-empty [B] tensors, got {tuple(psnr.shape)}, {tuple(ssim.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    psnr_d, ssim_d = psnr.detach().double(), ssim.detach().double()
    d_psnr = psnr_d.max() - psnr_d
    d_ssim = ssim_d.max() - ssim_d
    weights = 2.0 - torch.exp(-(d_psnr**2 + 100.0 * d_ssim**2) / (2.0 * sigma**2))
    return weights.to(psnr.dtype if psnr.is_floating_point() else torch.float32)


@dataclass
class SmoothedBlockMetrics:
    """Exponential moving averages of each block's PSNR and SSIM on its own views.

    Single-view metrics are noisy (views differ in difficulty); weights from raw values would jitter
    step to step. avg <- momentum * avg + (1 - momentum) * new, the first measurement taken as is.
    """

    num_blocks: int
    momentum: float = 0.9
    psnr: Tensor = field(init=False)
    ssim: Tensor = field(init=False)
    measured: Tensor = field(init=False)

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        self.psnr = torch.zeros(self.num_blocks, dtype=torch.float64)
        self.ssim = torch.zeros(self.num_blocks, dtype=torch.float64)
        self.measured = torch.zeros(self.num_blocks, dtype=torch.bool)

    def update(self, block: int, psnr: float, ssim: float) -> None:
        if not 0 <= block < self.num_blocks:
            raise ValueError(f"block must be in [0, {self.num_blocks}), got {block}")
        psnr, ssim = float(psnr), float(ssim)
        if bool(self.measured[block]):
            self.psnr[block] = self.momentum * self.psnr[block] + (1.0 - self.momentum) * psnr
            self.ssim[block] = self.momentum * self.ssim[block] + (1.0 - self.momentum) * ssim
        else:
            self.psnr[block], self.ssim[block] = psnr, ssim
            self.measured[block] = True

    def weights(self, sigma: float = 10.0) -> Tensor:
        """[B] float32 loss weights; the reference is the best measured block, unmeasured blocks get 1."""
        weights = torch.ones(self.num_blocks, dtype=torch.float64)
        if bool(self.measured.any()):
            weights[self.measured] = block_weights(self.psnr[self.measured], self.ssim[self.measured], sigma)
        return weights.float()

    def state_dict(self) -> Dict[str, Tensor]:
        return {"psnr": self.psnr.clone(), "ssim": self.ssim.clone(), "measured": self.measured.clone()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        for key in ("psnr", "ssim", "measured"):
            if tuple(state[key].shape) != (self.num_blocks,):
                raise ValueError(f"state {key!r} has shape {tuple(state[key].shape)}, expected ({self.num_blocks},)")
        self.psnr = state["psnr"].detach().to(torch.float64).clone()
        self.ssim = state["ssim"].detach().to(torch.float64).clone()
        self.measured = state["measured"].detach().to(torch.bool).clone()
