"""3DGS-MCMC at a Gaussian cap: the peer a user would pick for a splat of a given size.

nerfstudio 1.1.5's splatfacto has no MCMC option; this model is splatfacto with gsplat's
MCMCStrategy (on CPU too, see strategies/mcmc.py) and the recipe gsplat's `simple_trainer.py mcmc`
uses with it: seeds start at opacity 0.5 and a tenth of the nearest-neighbour distance, and the loss
adds L1 penalties on opacities and scales so unneeded Gaussians fade and get relocated. The count
grows by 5% per refinement up to `max_gaussians` and never beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Tuple, Type

import torch
from torch import Tensor

from distilled_gs_ns.errors import check_model_settings
from distilled_gs_ns.models.splat_base import SplatBaseModel, SplatBaseModelConfig
from distilled_gs_ns.strategies.mcmc import DeviceMCMCStrategy


@dataclass
class MCMCModelConfig(SplatBaseModelConfig):
    _target: Type = field(default_factory=lambda: MCMCModel)
    max_gaussians: int = 1_000_000
    """The cap: the count never exceeds it (gsplat's cap_max). Seeds beyond it are subsampled."""
    noise_lr: float = 5e5
    """Position noise, as a multiple of the means' current learning rate (gsplat's default)."""
    min_opacity: float = 0.005
    """Gaussians at or below this opacity are relocated onto live ones at each refinement."""
    opacity_reg: float = 0.01
    """Weight of the mean opacity in the loss (gsplat's MCMC recipe)."""
    scale_reg: float = 0.01
    """Weight of the mean linear scale in the loss (gsplat's MCMC recipe)."""
    init_opacity: float = 0.5
    """Opacity of the seeds (gsplat's MCMC recipe; splatfacto starts at 0.1)."""
    init_scale: float = 0.1
    """Seed scale as a fraction of the mean distance to the 3 nearest seeds (gsplat's MCMC recipe)."""
    stop_split_at: int = 25000
    """Last step of relocation and growth (gsplat's MCMC refine_stop_iter; warmup_length is its start
    and refine_every its period)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_model_settings(self, {
            "max_gaussians": (self.max_gaussians > 0, "positive"),
            "noise_lr": (math.isfinite(self.noise_lr) and self.noise_lr >= 0, "a finite number >= 0"),
            "min_opacity": (0 < self.min_opacity < 1, "in (0, 1)"),
            "opacity_reg": (math.isfinite(self.opacity_reg) and self.opacity_reg >= 0, "a finite number >= 0"),
            "scale_reg": (math.isfinite(self.scale_reg) and self.scale_reg >= 0, "a finite number >= 0"),
            "init_opacity": (0 < self.init_opacity < 1, "in (0, 1)"),
            "init_scale": (math.isfinite(self.init_scale) and self.init_scale > 0, "a finite number > 0"),
        })


class MCMCModel(SplatBaseModel):
    config: MCMCModelConfig
    strategy: DeviceMCMCStrategy

    def build_strategy(self) -> DeviceMCMCStrategy:
        return DeviceMCMCStrategy(
            cap_max=self.config.max_gaussians,
            noise_lr=self.config.noise_lr,
            refine_start_iter=self.config.warmup_length,
            refine_stop_iter=self.config.stop_split_at,
            refine_every=self.config.refine_every,
            min_opacity=self.config.min_opacity,
        )

    def populate_gaussians(self) -> None:
        super().populate_gaussians()
        opacities = self.gauss_params["opacities"]
        opacities.data.fill_(math.log(self.config.init_opacity / (1 - self.config.init_opacity)))

    def _initial_points(self) -> Tuple[Tensor, Tensor | None]:
        means, colors = super()._initial_points()
        if means.shape[0] > self.config.max_gaussians:
            keep = torch.randperm(means.shape[0])[: self.config.max_gaussians]
            means, colors = means[keep], None if colors is None else colors[keep]
        return means, colors

    def _uniform_in(self, box: Tensor) -> Tensor:
        points = super()._uniform_in(box)
        return points[: self.config.max_gaussians]

    def _initial_log_scales(self, means: Tensor) -> Tensor:
        return super()._initial_log_scales(means) + math.log(self.config.init_scale)

    def strategy_step_arguments(self) -> Dict[str, object]:
        return {"lr": self.optimizers["means"].param_groups[0]["lr"]}  # scales the position noise

    def extra_losses(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if not self.training:
            return {}
        return {
            "opacity_reg": self.config.opacity_reg * torch.sigmoid(self.gauss_params["opacities"]).mean(),
            "scale_reg": self.config.scale_reg * torch.exp(self.gauss_params["scales"]).mean(),
        }
