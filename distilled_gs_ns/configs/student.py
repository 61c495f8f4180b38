"""The Distilled-3DGS student method: splatfacto's 30k-step recipe, the student model and the
distillation pipeline (which reads the teachers given with --pipeline.teachers)."""

from __future__ import annotations

from distilled_gs_ns.configs.teachers import splat_trainer_config
from distilled_gs_ns.configs.trainer import SplatTrainerConfig
from distilled_gs_ns.models.student import StudentModelConfig
from distilled_gs_ns.pipelines.distillation_pipeline import DistillationPipelineConfig


def student() -> SplatTrainerConfig:
    return splat_trainer_config("distilled-3dgs-student", StudentModelConfig(), DistillationPipelineConfig)
