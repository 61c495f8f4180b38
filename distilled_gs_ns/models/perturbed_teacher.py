"""Distilled-3DGS perturbed teacher: a 3DGS whose Gaussians are randomly perturbed at scheduled steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.utils.rich_utils import CONSOLE

from distilled_gs_ns.models.splat_base import SplatBaseModel, SplatBaseModelConfig
from distilled_gs_ns.models.splat_render import planned_steps
from distilled_gs_ns.regularization.perturbation import GaussianPerturbation, GradientTracker, PerturbationSchedule


@dataclass
class PerturbedTeacherModelConfig(SplatBaseModelConfig):
    _target: Type = field(default_factory=lambda: PerturbedTeacherModel)
    perturb_start: float = 0.5
    """First perturbation, as a fraction of the run length (paper: 15k of 30k)."""
    perturb_stop: float = 25 / 30
    """Last perturbation, as a fraction of the run length (paper: 25k of 30k)."""
    perturb_every: float = 1 / 30
    """Interval between perturbations, as a fraction of the run length (paper: 1000 of 30k)."""
    perturb_noise_scale: float = 0.1
    """Noise std per channel = this x max(1, mean |value|) over the Gaussians."""
    perturb_selection: Literal["clone_candidates", "all"] = "clone_candidates"
    """Which Gaussians are perturbed: those 3DGS would clone (high gradient, small scale; official
    code), or all of them."""


class PerturbedTeacherModel(SplatBaseModel):
    config: PerturbedTeacherModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        self.perturbation = GaussianPerturbation(
            noise_scale=self.config.perturb_noise_scale,
            selection=self.config.perturb_selection,
            grad_threshold=self.config.densify_grad_thresh,
            scale_threshold=self.config.densify_size_thresh,
        )
        self.schedule = PerturbationSchedule(self.config.perturb_start, self.config.perturb_stop, self.config.perturb_every)
        self.gradients = GradientTracker()
        self.perturb_steps: List[int] = []
        self.perturbed_counts: Dict[int, int] = {}

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        if trainer is not None:
            self.perturb_steps = self.schedule.steps(planned_steps(trainer))
        return super().get_training_callbacks(training_callback_attributes)

    def step_post_backward(self, step: int) -> None:
        self.gradients.update(self.info, self.config.use_absgrad)
        if step in self.perturb_steps:
            mask = self.perturbation.select(self.gauss_params, self.gradients.mean())
            touched = self.perturbation.apply(self.gauss_params, self.optimizers, mask)
            self.perturbed_counts[step] = touched
            CONSOLE.log(f"perturbation at step {step}: {touched} of {self.num_points} Gaussians")
            self.gradients.reset(self.num_points, self.device)
        num_before = self.num_points
        super().step_post_backward(step)
        if self.num_points != num_before:
            self.gradients.reset(self.num_points, self.device)
