"""The three Distilled-3DGS teacher methods: standard, perturbed and dropout 3DGS.

All share splatfacto's 30k-step recipe (optimiser settings, densification, SH schedule); they differ
only in their model config.
"""

from __future__ import annotations

from typing import Type

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig

from distilled_gs_ns.configs.trainer import SplatTrainerConfig
from distilled_gs_ns.models.dropout_teacher import DropoutTeacherModelConfig
from distilled_gs_ns.models.perturbed_teacher import PerturbedTeacherModelConfig
from distilled_gs_ns.models.splat_base import SplatBaseModelConfig
from distilled_gs_ns.pipelines.splat_pipeline import SplatPipelineConfig

MAX_ITERATIONS = 30000


def splat_optimizers(max_steps: int = MAX_ITERATIONS) -> dict:
    """splatfacto 1.1.5's optimiser recipe."""
    return {
        "means": {
            "optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps),
        },
        "features_dc": {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None},
        "features_rest": {"optimizer": AdamOptimizerConfig(lr=0.0025 / 20, eps=1e-15), "scheduler": None},
        "opacities": {"optimizer": AdamOptimizerConfig(lr=0.05, eps=1e-15), "scheduler": None},
        "scales": {"optimizer": AdamOptimizerConfig(lr=0.005, eps=1e-15), "scheduler": None},
        "quats": {"optimizer": AdamOptimizerConfig(lr=0.001, eps=1e-15), "scheduler": None},
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(
                lr_final=5e-7, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
            ),
        },
        "bilateral_grid": {
            "optimizer": AdamOptimizerConfig(lr=2e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(
                lr_final=1e-4, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0
            ),
        },
    }


def splat_trainer_config(
    method_name: str, model: SplatBaseModelConfig, pipeline: Type[SplatPipelineConfig] = SplatPipelineConfig
) -> SplatTrainerConfig:
    """splatfacto 1.1.5's trainer settings around `model`, with this package's pipeline and checks."""
    return SplatTrainerConfig(
        method_name=method_name,
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=MAX_ITERATIONS,
        mixed_precision=False,
        pipeline=pipeline(
            datamanager=FullImageDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True),
                cache_images_type="uint8",
            ),
            model=model,
        ),
        optimizers=splat_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


def standard_teacher() -> SplatTrainerConfig:
    return splat_trainer_config("distilled-3dgs-teacher", SplatBaseModelConfig())


def perturbed_teacher() -> SplatTrainerConfig:
    return splat_trainer_config("distilled-3dgs-teacher-perturbed", PerturbedTeacherModelConfig())


def dropout_teacher() -> SplatTrainerConfig:
    return splat_trainer_config("distilled-3dgs-teacher-dropout", DropoutTeacherModelConfig())
