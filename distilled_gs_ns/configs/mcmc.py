"""The 3DGS-MCMC method at a Gaussian cap (`--pipeline.model.max-gaussians`): splatfacto's 30k-step
recipe with gsplat's MCMC strategy, the strongest same-budget peer of the student."""

from __future__ import annotations

from distilled_gs_ns.configs.teachers import splat_trainer_config
from distilled_gs_ns.configs.trainer import SplatTrainerConfig
from distilled_gs_ns.models.mcmc import MCMCModelConfig


def mcmc() -> SplatTrainerConfig:
    return splat_trainer_config("distilled-3dgs-mcmc", MCMCModelConfig())
