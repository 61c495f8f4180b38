"""The momentum-gs method: Scaffold-GS's optimiser recipe around the block-wise anchor model.

Learning rates follow Scaffold-GS (which Momentum-GS trains with); the decoder's three MLPs use
an Adam that averages gradients across processes, so one decoder is shared by all devices.
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

from distilled_gs_ns.configs.teachers import MAX_ITERATIONS, splat_optimizers, splat_trainer_config
from distilled_gs_ns.configs.trainer import SplatTrainerConfig
from distilled_gs_ns.distributed.gradient_averaging import AveragedAdamOptimizerConfig
from distilled_gs_ns.models.momentum_gs import MomentumGSModelConfig
from distilled_gs_ns.pipelines.block_pipeline import BlockPipelineConfig


def _decay(lr: float, lr_final: float, max_steps: int) -> dict:
    return {
        "optimizer": AveragedAdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr_final, max_steps=max_steps),
    }


def momentum_gs_optimizers(max_steps: int = MAX_ITERATIONS) -> dict:
    """Scaffold-GS's rates: anchors per process, decoder MLPs averaged over processes."""
    shared = splat_optimizers(max_steps)
    return {
        "anchor_features": {"optimizer": AdamOptimizerConfig(lr=0.0075, eps=1e-15), "scheduler": None},
        "anchor_offsets": {
            "optimizer": AdamOptimizerConfig(lr=0.01, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps),
        },
        "anchor_scaling": {"optimizer": AdamOptimizerConfig(lr=0.007, eps=1e-15), "scheduler": None},
        "opacity_mlp": _decay(0.002, 2e-5, max_steps),
        "covariance_mlp": {"optimizer": AveragedAdamOptimizerConfig(lr=0.004, eps=1e-15), "scheduler": None},
        "color_mlp": _decay(0.008, 5e-5, max_steps),
        "camera_opt": shared["camera_opt"],
        "bilateral_grid": shared["bilateral_grid"],
    }


def momentum_gs() -> SplatTrainerConfig:
    config = splat_trainer_config("momentum-gs", MomentumGSModelConfig(), BlockPipelineConfig)
    config.optimizers = momentum_gs_optimizers()
    return config
