"""Distilled-3DGS dropout teacher: a 3DGS trained with random Gaussian dropout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes

from distilled_gs_ns.models.splat_base import SplatBaseModel, SplatBaseModelConfig
from distilled_gs_ns.models.splat_render import planned_steps
from distilled_gs_ns.rendering.gaussians import RenderGaussians
from distilled_gs_ns.regularization.dropout import GaussianDropout


@dataclass
class DropoutTeacherModelConfig(SplatBaseModelConfig):
    _target: Type = field(default_factory=lambda: DropoutTeacherModel)
    dropout_rate: float = 0.2
    """Fraction of Gaussians switched off at each training step (paper: 20%)."""
    dropout_final_rate: Optional[float] = None
    """If set, the rate ramps linearly from dropout_rate to this by the last step (DropGaussian-style)."""


class DropoutTeacherModel(SplatBaseModel):
    config: DropoutTeacherModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        self.dropout = GaussianDropout(self.config.dropout_rate, self.config.dropout_final_rate)
        self.max_num_iterations = 30000

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        if training_callback_attributes.trainer is not None:
            self.max_num_iterations = planned_steps(training_callback_attributes.trainer)
        return super().get_training_callbacks(training_callback_attributes)

    def gaussians_for_render(
        self, crop_ids: Optional[torch.Tensor], camera: Optional[Cameras] = None, camera_to_world: Optional[torch.Tensor] = None
    ) -> RenderGaussians:
        gaussians = super().gaussians_for_render(crop_ids, camera, camera_to_world)
        if self.training:
            rate = self.dropout.rate_at(self.step, self.max_num_iterations)
            gaussians.opacities = self.dropout.apply(gaussians.opacities, rate)
        return gaussians
