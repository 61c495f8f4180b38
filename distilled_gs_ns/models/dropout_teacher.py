"""Distilled-3DGS dropout teacher: a 3DGS trained with random Gaussian dropout.

By default dropout starts when densification stops (`stop_split_at`) at the paper's 20% and is
annealed to 0 by the last step. While Gaussians densify,
dropout's holes leave a large residual at every pixel, so the surviving Gaussians' screen-space
gradients stay above the split/clone threshold and the teacher keeps growing: on a real phone
capture (instant-ngp's fox) every-step dropout gave 2.1x the standard teacher's Gaussians and
4.3 dB less (docs/teachers.md). The official code, likewise, leaves densification undisturbed.
Kept at 20% to the end, dropout after densification still cost 0.94 dB there: the teacher is
evaluated with every Gaussian on, a set its last steps never rendered.
"""

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
    dropout_final_rate: Optional[float] = 0.0
    """The rate ramps linearly from dropout_rate when dropout starts to this at the last step (0:
    annealed; larger than dropout_rate: DropGaussian's growing rate; None: constant)."""
    dropout_while_densifying: bool = False
    """Also drop Gaussians before stop_split_at, while densification reads their gradients
    (DropGaussian's every-step dropout). Off by default: it inflates densification on real captures."""


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
        if self.training and (self.config.dropout_while_densifying or self.step >= self.config.stop_split_at):
            first = 0 if self.config.dropout_while_densifying else self.config.stop_split_at
            rate = self.dropout.rate_at(self.step, first, self.max_num_iterations - 1)
            gaussians.opacities = self.dropout.apply(gaussians.opacities, rate)
        return gaussians
