"""Prune and fine-tune (LightGaussian / PUP-3DGS style), the student's other same-budget peer.

A trained standard teacher (`--pipeline.teachers its/config.yml`) is cut to the budget by the
student's importance measure (accumulated blending weight over the training views: the budget most
important Gaussians, all their attributes and SH bands), then fine-tuned against ground truth only:
no teacher labels, no structure loss, no densification or pruning (so the count stays exactly the
budget). It is the student's model and pipeline with every distillation term off.
"""

from __future__ import annotations

from distilled_gs_ns.configs.teachers import splat_trainer_config
from distilled_gs_ns.configs.trainer import SplatTrainerConfig
from distilled_gs_ns.models.student import StudentModelConfig
from distilled_gs_ns.pipelines.distillation_pipeline import DistillationPipelineConfig

PRUNE_FINETUNE_MODEL = dict(
    initialisation="teacher", prune_rounds=0, kd_weight=0.0, structure_weight=0.0, densify=False, importance="blending"
)
"""The student settings that make it prune-and-fine-tune (also the flags the benchmarks pass); its
importance is the plain blending weight, as LightGaussian's and PUP-3DGS's users have it."""


def prune_finetune() -> SplatTrainerConfig:
    return splat_trainer_config(
        "distilled-3dgs-prune-finetune", StudentModelConfig(**PRUNE_FINETUNE_MODEL), DistillationPipelineConfig
    )
