"""Distilled-3DGS student: a splat with a fraction of the teachers' Gaussians.

By default it starts from the whole standard teacher and prunes it progressively, by importance, to
its budget while fine-tuning on the ground truth (the recipe that won on both benchmark scenes). The
paper's terms are fields: the teachers' fused renders as labels (`pseudo_label` in the batch, added
by the distillation pipeline), the structure loss that keeps the Gaussians distributed like the
standard teacher's, and growth from seeds with importance sampling (distillation/budget.py).
Everything teacher-related is handed over by the pipeline at the start of training; a loaded
student (ns-viewer, ns-export, ns-eval) is a plain splat and needs no teacher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Type

import numpy as np
import torch
from gsplat.strategy.ops import _update_param_with_optimizer, remove
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.splatfacto import RGB2SH, random_quat_tensor
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from distilled_gs_ns.distillation.budget import least_important, sample_by_importance
from distilled_gs_ns.distillation.importance import blending_importance
from distilled_gs_ns.errors import UserInputError, check_model_settings
from distilled_gs_ns.export.formats import FORMATS
from distilled_gs_ns.export.size_budget import gaussians_for_megabytes, largest_count_within
from distilled_gs_ns.export.splat_data import SplatData, exportable, from_model
from distilled_gs_ns.losses.photometric import photometric_loss
from distilled_gs_ns.losses.structure import StructureLoss
from distilled_gs_ns.models.splat_base import GAUSSIAN_PARAMS, SplatBaseModel, SplatBaseModelConfig
from distilled_gs_ns.models.mcmc import MCMCModelConfig
from distilled_gs_ns.models.splat_render import planned_steps
from distilled_gs_ns.strategies.budget import Cut, ProgressivePruning, SampleThenTrim
from distilled_gs_ns.strategies.capped import CappedStrategy
from distilled_gs_ns.strategies.mcmc import DeviceMCMCStrategy
from distilled_gs_ns.strategies.mini_splatting import MiniSplattingStrategy, surface_points


@dataclass
class StudentModelConfig(SplatBaseModelConfig):
    _target: Type = field(default_factory=lambda: StudentModel)
    target_fraction: float = 0.12
    """Gaussian budget as a fraction of the standard teacher's count (paper: about 12% on average)."""
    max_gaussians: Optional[int] = None
    """Absolute Gaussian budget; overrides target_fraction when set."""
    max_megabytes: Optional[float] = None
    """File-size budget (MB = 10^6 bytes) of the student exported in export_format at its SH degree;
    overrides max_gaussians and target_fraction. The count is found by encoding the standard
    teacher's most important Gaussians (export/size_budget.py)."""
    export_format: Literal["ply", "spz", "compressed-ply"] = "ply"
    """The file format max_megabytes is meant for (`distilled-gs export --format`)."""
    initialisation: Literal["seeds", "teacher"] = "teacher"
    """'teacher' (default): the standard teacher's Gaussians (all of them with prune_rounds > 0, else
    its budget most important ones by accumulated blending weight). 'seeds': the data's point cloud or
    random seeds, like any 3DGS (paper)."""
    growth_cap: float = 2.0
    """Densification never grows the student beyond growth_cap x budget Gaussians."""
    sample_at: float = 0.5
    """When densification stops and the student is sampled down by importance, as a fraction of
    the run (official code: 15k of 30k)."""
    prune_tail_at: float = 2 / 3
    """When the lowest-importance tail is dropped to reach the budget exactly, as a fraction of
    the run (official code: 20k of 30k)."""
    tail_fraction: float = 0.05
    """The importance sampling keeps budget x (1 + tail_fraction) Gaussians; the tail drop removes the excess."""
    prune_rounds: int = 10
    """With initialisation 'teacher': N > 0 starts from the whole teacher and prunes it to the budget
    in N importance cuts evenly spaced until sample_at of the run, with no densification
    (strategies/budget.py, `ProgressivePruning`); 0 starts from the budget's most important teacher
    Gaussians (one cut, prune-and-fine-tune's start). Not used with initialisation 'seeds'."""
    densify: bool = True
    """False: no growth, pruning or opacity resets at all, so a student started from the teacher keeps
    exactly the budget (prune-and-fine-tune)."""
    densification: Literal["capped", "mcmc", "mini-splatting"] = "capped"
    """How a growing student densifies: 'capped' 3DGS growth up to growth_cap x budget (strategies/
    capped.py); 'mcmc': 3DGS-MCMC at the budget (dead Gaussians relocated onto live ones, growth to
    the budget, position noise, its opacity and scale regularisers; strategies/mcmc.py);
    'mini-splatting': capped growth whose Gaussians are replaced twice, at 1/3 and 2/3 of the
    densification window, by as many placed on the surfaces the model renders (strategies/
    mini_splatting.py; the official code's student densification). Only for a student that grows:
    progressive pruning never densifies."""
    kd_weight: float = 0.0
    """Weight of the (1-l) L1 + l (1-SSIM) loss against the teachers' fused render (paper: 1). Off by
    default: with the teacher start it cost 0.27 dB on the demo scene (docs/student.md, "Measured")."""
    structure_weight: float = 0.0
    """Weight of the voxel-histogram structure loss against the standard teacher's centres (paper: 1).
    Off by default: it cost 0.49 dB with the teacher start on the demo scene."""
    depth_weight: float = 0.0
    """Weight of the relative L1 loss between the student's expected depth and the teachers' fused one
    (at training views and pseudo-views, where the teachers cover the pixel). The ground truth has no
    depth; the official code uses monocular depth instead. 0: off."""
    importance: Literal["blending", "consensus"] = "consensus"
    """What the cuts rank Gaussians by: 'consensus' (default), the blending weight summed over the
    training views without each Gaussian's largest single view, so that a floater filling one view
    near its camera ranks low (distillation/importance.py); 'blending', the plain sum (the official
    code, prune-and-fine-tune's). Chosen on four scenes at once (docs/student.md, "On real captures"):
    on the fox and mouse captures it turns a loss / tie against prune-and-fine-tune into +0.99 /
    +0.23 dB, and costs 0.06 / 0.01 dB on the demo / lego scenes."""
    structure_resolution: Optional[int] = None
    """Voxels per axis of the structure loss histogram. None: matched to the budget B, the cube root
    of B / 0.2 clamped to [8, 128] (the paper's 128 at its ~480k Gaussians holds ~0.2 per voxel;
    21 for a 1.9k student, for which 128^3 is measured to hurt)."""

    @property
    def progressive(self) -> bool:
        """Whether the budget is reached by progressive pruning of the whole teacher."""
        return self.initialisation == "teacher" and self.prune_rounds > 0

    def budget_schedule(self) -> ProgressivePruning | SampleThenTrim:
        """The recipe that brings the student to its budget (strategies/budget.py)."""
        if self.progressive:
            return ProgressivePruning(rounds=self.prune_rounds, until=self.sample_at)
        return SampleThenTrim(self.sample_at, self.prune_tail_at, self.tail_fraction, grows=self.densify)

    @property
    def needs_teachers(self) -> bool:
        """False only for the no-distillation baseline: no teacher terms, a fixed budget, seed init."""
        return (
            self.kd_weight > 0
            or self.structure_weight > 0
            or self.depth_weight > 0
            or self.max_gaussians is None
            or self.max_megabytes is not None
            or self.initialisation == "teacher"
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_model_settings(self, {
            "target_fraction": (0 < self.target_fraction <= 1, "in (0, 1]"),
            "max_gaussians": (self.max_gaussians is None or self.max_gaussians > 0, "positive"),
            "max_megabytes": (self.max_megabytes is None or (math.isfinite(self.max_megabytes) and self.max_megabytes > 0), "positive"),
            "growth_cap": (math.isfinite(self.growth_cap) and self.growth_cap >= 1, "a finite number >= 1"),
            "sample_at": (0 < self.sample_at < 1, "in (0, 1)"),
            "prune_tail_at": (self.sample_at < self.prune_tail_at <= 1, "in (sample_at, 1]"),
            "tail_fraction": (0 <= self.tail_fraction < 1, "in [0, 1)"),
            "prune_rounds": (0 <= self.prune_rounds <= 100, "between 0 and 100"),
            "kd_weight": (math.isfinite(self.kd_weight) and self.kd_weight >= 0, "a finite number >= 0"),
            "structure_weight": (math.isfinite(self.structure_weight) and self.structure_weight >= 0, "a finite number >= 0"),
            "depth_weight": (math.isfinite(self.depth_weight) and self.depth_weight >= 0, "a finite number >= 0"),
            "densification": (
                self.densification == "capped" or (self.densify and not self.progressive),
                "'capped' unless the student grows (densify True, and prune_rounds 0 or initialisation seeds)",
            ),
            "structure_resolution": (
                self.structure_resolution is None or 2 <= self.structure_resolution <= 512, "None or between 2 and 512"
            ),
        })
        if self.depth_weight > 0:
            self.output_depth_during_training = True  # the depth loss needs the student's depth render


MCMC_RECIPE = MCMCModelConfig()
"""gsplat's MCMC recipe (regulariser weights) for the student's 'mcmc' densification."""


def budget_resolution(budget: int, per_voxel: float = 0.2) -> int:
    """Structure grid resolution whose voxels hold `per_voxel` student Gaussians on average, as the
    paper's 128^3 does at its scale; clamped to [8, 128]."""
    return int(min(128, max(8, round((budget / per_voxel) ** (1 / 3)))))


class StudentModel(SplatBaseModel):
    config: StudentModelConfig
    strategy: CappedStrategy | DeviceMCMCStrategy

    def populate_modules(self) -> None:
        super().populate_modules()
        self.budget: Optional[int] = None
        self.reference_count: Optional[int] = None
        self.structure_loss: Optional[StructureLoss] = None
        self.train_cameras: Optional[Cameras] = None
        self.schedule = self.config.budget_schedule()
        self.cuts: Dict[int, Cut] = {}
        self.final_step: Optional[int] = None

    def build_strategy(self) -> CappedStrategy | DeviceMCMCStrategy:
        if self.config.densification == "mini-splatting":
            return MiniSplattingStrategy(**self.strategy_settings())
        if self.config.densification == "mcmc":
            return DeviceMCMCStrategy(
                cap_max=self.config.max_gaussians or 1,  # the budget, set with the teachers (set_budget)
                refine_start_iter=self.config.warmup_length,
                refine_stop_iter=self.config.stop_split_at,
                refine_every=self.config.refine_every,
            )
        return CappedStrategy(**self.strategy_settings())

    def strategy_step_arguments(self) -> Dict[str, object]:
        if self.config.densification == "mcmc":
            return {"lr": self.optimizers["means"].param_groups[0]["lr"]}  # scales the position noise
        return super().strategy_step_arguments()

    # ------------------------------------------------------------------ set-up by the pipeline

    def set_budget(self, reference_count: Optional[int], size_sample: Optional[SplatData] = None) -> int:
        """Fix the budget: what max_megabytes holds (measured on `size_sample`, the standard teacher's
        Gaussians most important first), else max_gaussians, else target_fraction of the teacher's count."""
        if self.config.max_megabytes is not None:
            if size_sample is None:
                raise UserInputError("pipeline.model.max-megabytes needs a teacher (--pipeline.teachers)")
            fmt = FORMATS[self.config.export_format]
            budget = gaussians_for_megabytes(self.config.max_megabytes, fmt, size_sample.with_sh_degree(self.config.sh_degree))
        elif self.config.max_gaussians is not None:
            budget = self.config.max_gaussians
        elif reference_count is not None:
            budget = max(1, round(self.config.target_fraction * reference_count))
        else:
            raise UserInputError("the student's budget needs a teacher's Gaussian count or pipeline.model.max-gaussians")
        self.budget = budget
        self.reference_count = reference_count
        if isinstance(self.strategy, DeviceMCMCStrategy):
            self.strategy.cap_max = budget
        else:
            self.strategy.max_count = math.ceil(self.config.growth_cap * budget)
        return budget

    def set_structure_reference(self, teacher_means: Tensor) -> None:
        """The standard teacher's centres fix the structure loss's grid and target histogram."""
        if self.config.structure_weight > 0:
            resolution = self.config.structure_resolution or budget_resolution(self.budget or teacher_means.shape[0])
            self.structure_loss = StructureLoss(teacher_means.detach(), resolution).to(self.device)

    @torch.no_grad()
    def initialise_from(self, gaussians: Dict[str, Tensor], importance: Tensor) -> None:
        """Start from a teacher's Gaussians (all their attributes): the `budget` most important ones, or
        all of them when progressive pruning brings the count down later.

        SH bands the two configurations do not share are dropped or start at zero.
        """
        assert self.budget is not None, "set_budget first"
        count = importance.shape[0] if self.config.progressive else min(self.budget, importance.shape[0])
        keep = torch.topk(importance, count).indices.to(gaussians["means"].device)
        for name in GAUSSIAN_PARAMS:
            value = gaussians[name][keep].to(self.device)
            if name == "features_rest":
                bands = self.gauss_params[name].shape[1]
                rest = value.new_zeros((value.shape[0], bands, 3))
                shared = min(bands, value.shape[1])
                rest[:, :shared] = value[:, :shared]
                value = rest
            self.gauss_params[name] = Parameter(value.contiguous())
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)

    def active_sh_degree(self) -> int:
        """A student started from a trained teacher has that teacher's SH bands from its first step."""
        if self.config.initialisation == "teacher":
            return self.config.sh_degree
        return super().active_sh_degree()

    # ------------------------------------------------------------------ training

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        pipeline = training_callback_attributes.pipeline
        if trainer is not None:
            total = planned_steps(trainer)
            self.final_step = total - 1
            self.strategy.refine_stop_iter = min(self.strategy.refine_stop_iter, self.schedule.densify_until(total))
            if isinstance(self.strategy, MiniSplattingStrategy):
                start, stop = self.strategy.refine_start_iter, self.strategy.refine_stop_iter
                self.strategy.reinit_at = tuple(round(start + (stop - start) * k / 3) for k in (1, 2)) if stop > start else ()
            if self.budget is not None:
                start = self.reference_count if self.schedule.starts_from_whole_teacher else None
                self.cuts = self.schedule.cuts(total, start or self.num_points, self.budget)
        elif not self.schedule.grows:
            self.strategy.refine_stop_iter = 0
        if pipeline is not None:
            self.train_cameras = pipeline.served_train_cameras()
        return super().get_training_callbacks(training_callback_attributes)

    def step_post_backward(self, step: int) -> None:
        super().step_post_backward(step)
        if self.budget is None:
            return
        if step == self.final_step and self.config.max_megabytes is not None:
            self.fit_file_budget(step)
        if isinstance(self.strategy, MiniSplattingStrategy) and step in self.strategy.reinit_at:
            self.reinitialise_from_depth(step)
        if step in self.cuts:
            self.reduce_to(self.cuts[step].count, by=self.cuts[step].by, step=step)

    @torch.no_grad()
    def reinitialise_from_depth(self, step: int) -> None:
        """Replace every Gaussian by a new one on the rendered surfaces (Mini-Splatting's depth
        reinitialisation): as many points, back-projected from the training views' expected depth,
        with the rendered colour, splatfacto's initial opacity and scales from the 3 nearest points."""
        if self.train_cameras is None:
            raise RuntimeError("the student needs the training cameras to reinitialise from depth")
        before = self.num_points
        generator = torch.Generator().manual_seed(step)
        means, colours = surface_points(self, self.train_cameras, before, generator)
        count = means.shape[0]
        dc = RGB2SH(colours) if self.config.sh_degree > 0 else torch.logit(colours, eps=1e-10)
        values = {
            "means": means,
            "scales": self._initial_log_scales(means.cpu()).to(self.device),
            "quats": random_quat_tensor(count).to(self.device),
            "features_dc": dc,
            "features_rest": means.new_zeros((count, *self.gauss_params["features_rest"].shape[1:])),
            "opacities": torch.logit(means.new_full((count, 1), 0.1)),
        }
        _update_param_with_optimizer(
            lambda name, _: Parameter(values[name].contiguous()),
            lambda _, state: state.new_zeros((count, *state.shape[1:])),
            self.gauss_params,
            self.optimizers,
            names=list(GAUSSIAN_PARAMS),
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        CONSOLE.log(f"step {step}: depth reinitialisation replaced {before} Gaussians by {count} on the rendered surfaces")

    @torch.no_grad()
    def reduce_to(self, count: int, by: Literal["sampling", "tail"], step: int) -> None:
        """Remove Gaussians down to `count` by importance: a weighted draw, or dropping the least important."""
        before = self.num_points
        if before <= count:
            CONSOLE.log(f"step {step}: student has {before} Gaussians, within its budget ({count}); nothing removed")
            return
        if self.train_cameras is None:
            raise RuntimeError("the student needs the training cameras to measure importance")
        importance = blending_importance(
            self, self.train_cameras, description=f"importance ({by})", consensus=self.config.importance == "consensus"
        )
        if by == "sampling":
            drop = torch.ones(before, dtype=torch.bool, device=importance.device)
            drop[sample_by_importance(importance, count)] = False
        else:
            drop = least_important(importance, count)
        remove(params=self.gauss_params, optimizers=self.optimizers, state=self.strategy_state, mask=drop)
        CONSOLE.log(f"step {step}: importance {by} kept {self.num_points} of {before} Gaussians (budget {self.budget})")

    @torch.no_grad()
    def fit_file_budget(self, step: int) -> None:
        """After the last step, measure the student's own file in export_format and drop its least
        important Gaussians until it fits max_megabytes (the budget was measured on the teacher's)."""
        assert self.config.max_megabytes is not None and self.train_cameras is not None
        fmt = FORMATS[self.config.export_format]
        limit = self.config.max_megabytes * 1e6
        importance = blending_importance(self, self.train_cameras, description="importance (file size)")
        order = torch.argsort(importance, descending=True)
        ordered = from_model(self, order=order, only_exportable=False)
        written = exportable(ordered)
        size = len(fmt.encode(ordered.select(written)))
        if size <= limit:
            CONSOLE.log(f"step {step}: the {fmt.name} file is {size / 1e6:.4f} MB, within max-megabytes {self.config.max_megabytes}")
            return
        count = largest_count_within(limit, fmt, ordered.select(written), self.config.max_megabytes)
        rows = int(np.searchsorted(np.cumsum(written), count)) + 1  # the first rows of `order` hold `count` written ones
        drop = torch.ones(self.num_points, dtype=torch.bool, device=order.device)
        drop[order[:rows]] = False
        before = self.num_points
        remove(params=self.gauss_params, optimizers=self.optimizers, state=self.strategy_state, mask=drop)
        CONSOLE.log(
            f"step {step}: the {fmt.name} file was {size / 1e6:.4f} MB; dropped the {before - self.num_points} least "
            f"important Gaussians to fit max-megabytes {self.config.max_megabytes}"
        )

    def extra_losses(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        losses: Dict[str, Tensor] = {}
        if not self.training:
            return losses
        if "pseudo_label" in batch and self.config.kd_weight > 0:
            label = self.composite_with_background(self.get_gt_img(batch["pseudo_label"]), outputs["background"])
            losses["distill_loss"] = self.config.kd_weight * photometric_loss(
                outputs["rgb"], label, self.ssim, self.config.ssim_lambda
            )
        if "pseudo_depth" in batch and self.config.depth_weight > 0:
            losses["depth_loss"] = self.config.depth_weight * self.depth_loss(outputs["depth"], batch["pseudo_depth"])
        if self.structure_loss is not None:
            losses["structure_loss"] = self.config.structure_weight * self.structure_loss(self.means)
        if self.config.densification == "mcmc":
            losses["opacity_reg"] = MCMC_RECIPE.opacity_reg * torch.sigmoid(self.gauss_params["opacities"]).mean()
            losses["scale_reg"] = MCMC_RECIPE.scale_reg * torch.exp(self.gauss_params["scales"]).mean()
        return losses

    def depth_loss(self, depth: Tensor, label: Tensor) -> Tensor:
        """Mean relative L1 between the student's expected depth [H, W, 1] and the label's, over the
        pixels the teachers cover (fused alpha > 0.5); the label is downscaled like the image."""
        packed = self.get_gt_img(label.float())
        alpha = packed[..., 1:2]
        covered = alpha > 0.5
        if not bool(covered.any()):
            return depth.sum() * 0.0
        target = packed[..., 0:1] / alpha.clamp(min=1e-4)
        return ((depth - target).abs() / target.abs().clamp(min=1e-6))[covered].mean()
