"""3DGS-MCMC at a Gaussian cap, on any device.

gsplat 1.4.0's `MCMCStrategy` relocates dead Gaussians onto live ones, adds new ones up to
`cap_max`, and perturbs positions with covariance-shaped noise. Two of its pieces are CUDA kernels:
the relocation op (`gsplat.relocation.compute_relocation`) and the covariance used by the position
noise (`gsplat.quat_scale_to_covar_preci`). This strategy keeps gsplat's schedule and sampling and
computes both pieces in torch when the Gaussians are not on CUDA; on CUDA it calls gsplat's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch
from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci
from gsplat.strategy import MCMCStrategy
from gsplat.strategy.ops import _multinomial_sample, _update_param_with_optimizer
from torch import Tensor

MAX_SPLIT = 51
"""Copies one Gaussian may be split into in one relocation (gsplat's n_max)."""


def binomials(n_max: int = MAX_SPLIT, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """[n_max + 1, n_max + 1] table of C(a, b) (zero where b > a)."""
    return torch.tensor(
        [[float(math.comb(a, b)) for b in range(n_max + 1)] for a in range(n_max + 1)], dtype=dtype, device=device
    )


def relocated_opacity_and_scale(opacities: Tensor, scales: Tensor, copies: Tensor) -> Tuple[Tensor, Tensor]:
    """Opacity and scale of each of `copies` Gaussians that together render like the original.

    The MCMC paper's Eq. 9: new opacity o' = 1 - (1 - o)^(1/n), and scales multiplied by
    o / sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1). The double sum equals
    sum_{j=1..n} C(n, j) (-1)^(j-1) o'^j / sqrt(j) (hockey-stick identity), evaluated here in float64
    (its alternating terms reach C(51, 25) ~ 2e14). `copies` is clamped to [1, 51] as gsplat does.
    """
    n = copies.clamp(1, MAX_SPLIT).long()
    o = opacities.to(torch.float64)
    new_o = 1.0 - (1.0 - o) ** (1.0 / n.to(torch.float64))
    j = torch.arange(1, MAX_SPLIT + 1, device=o.device)
    binom = binomials(device=o.device)[n][:, 1:]  # [N, 51]: C(n, j), zero for j > n
    sign = torch.where(j % 2 == 1, 1.0, -1.0).to(torch.float64)
    terms = binom * sign * new_o[:, None] ** j / torch.sqrt(j.to(torch.float64))
    coeff = o / terms.sum(dim=1)
    return new_o.to(opacities.dtype), (coeff[:, None] * scales.to(torch.float64)).to(scales.dtype)


def _relocation(opacities: Tensor, scales: Tensor, copies: Tensor) -> Tuple[Tensor, Tensor]:
    if opacities.is_cuda:
        from gsplat.relocation import compute_relocation

        table = binomials(MAX_SPLIT - 1, torch.float32, opacities.device)  # gsplat's [51, 51] layout
        return compute_relocation(opacities.contiguous(), scales.contiguous(), copies.clone(), table)
    return relocated_opacity_and_scale(opacities, scales, copies)


def position_noise_covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """[N, 3, 3] world covariances R S S^T R^T that shape MCMC's position noise."""
    if quats.is_cuda:
        from gsplat import quat_scale_to_covar_preci

        covars, _ = quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False, triu=False)
        return covars
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False, triu=False)
    return covars


@dataclass
class DeviceMCMCStrategy(MCMCStrategy):
    """gsplat's MCMCStrategy with its CUDA-only ops replaced by torch ones off CUDA.

    `initialize_state` takes (and ignores) `scene_scale` so it is a drop-in for the models' other
    strategies; MCMC's thresholds are opacities, which need no scene scale.
    """

    def initialize_state(self, scene_scale: float = 1.0) -> Dict[str, Any]:
        return {}

    def step_post_backward(self, params, optimizers, state: Dict[str, Any], step: int, info: Dict[str, Any], lr: float) -> None:
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            self._relocate(params, optimizers)
            self._add(params, optimizers)
        self._inject_noise(params, lr * self.noise_lr)

    @torch.no_grad()
    def _relocate(self, params, optimizers) -> int:
        """Move every dead Gaussian (opacity <= min_opacity) onto a live one drawn by opacity."""
        opacities = torch.sigmoid(params["opacities"].flatten())
        dead = opacities <= self.min_opacity
        if not bool(dead.any()) or bool(dead.all()):
            return 0
        dead_idx = dead.nonzero(as_tuple=True)[0]
        alive_idx = (~dead).nonzero(as_tuple=True)[0]
        sampled = alive_idx[_multinomial_sample(opacities[alive_idx], dead_idx.numel(), replacement=True)]
        self._split_onto(params, optimizers, sampled, opacities, dead_idx)
        return dead_idx.numel()

    @torch.no_grad()
    def _add(self, params, optimizers) -> int:
        """Grow by 5% (never past cap_max): copies of Gaussians drawn by opacity."""
        count = params["means"].shape[0]
        new = max(0, min(self.cap_max, int(1.05 * count)) - count)
        if new == 0:
            return 0
        opacities = torch.sigmoid(params["opacities"].flatten())
        sampled = _multinomial_sample(opacities, new, replacement=True)
        self._split_onto(params, optimizers, sampled, opacities, None)
        return new

    def _split_onto(self, params, optimizers, sampled: Tensor, opacities: Tensor, targets) -> None:
        """Give each sampled source its share of opacity and scale (Eq. 9), then copy the sources
        into `targets` (dead slots) or append the copies; the copies' optimiser state starts at zero."""
        copies = torch.bincount(sampled)[sampled] + 1
        new_opacities, new_scales = _relocation(opacities[sampled], torch.exp(params["scales"])[sampled], copies)
        eps = torch.finfo(torch.float32).eps
        new_opacities = new_opacities.clamp(min=self.min_opacity, max=1.0 - eps)

        def param_fn(name: str, p: Tensor) -> Tensor:
            if name == "opacities":
                p[sampled] = torch.logit(new_opacities).reshape(p[sampled].shape)
            elif name == "scales":
                p[sampled] = torch.log(new_scales)
            if targets is None:
                return torch.nn.Parameter(torch.cat([p, p[sampled]]))
            p[targets] = p[sampled]
            return torch.nn.Parameter(p)

        def optimizer_fn(key: str, v: Tensor) -> Tensor:
            v[sampled] = 0
            if targets is None:
                return torch.cat([v, torch.zeros((sampled.numel(), *v.shape[1:]), device=v.device, dtype=v.dtype)])
            return v

        _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)

    @torch.no_grad()
    def _inject_noise(self, params, scale: float) -> None:
        """Noise on positions shaped by each Gaussian's covariance, strong only for transparent ones."""
        opacities = torch.sigmoid(params["opacities"].flatten())
        covars = position_noise_covariances(params["quats"], torch.exp(params["scales"]))
        gate = 1.0 / (1.0 + torch.exp(-100.0 * ((1.0 - opacities) - 0.995)))
        noise = torch.randn_like(params["means"]) * gate.unsqueeze(-1) * scale
        params["means"].add_(torch.einsum("bij,bj->bi", covars, noise))
