"""The Distilled-3DGS student's pipeline: teachers in, cached pseudo-labels out, then ordinary training.

Teachers are read only when training (`test_mode == "val"`, the trainer's): ns-viewer, ns-export and
ns-eval of the student build this pipeline in "test"/"inference" mode and never look at the
teachers' files. When training, the teachers are checked, rendered once into pseudo-labels and
dropped again: they never enter the student's state_dict, parameter groups or device memory
beyond set-up. Each training batch then carries its view's fused label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.rich_utils import CONSOLE

from distilled_gs_ns.distillation.importance import blending_importance
from distilled_gs_ns.distillation.pseudo_labels import (
    LabelDtype,
    PseudoLabels,
    cameras_between,
    check_labels_match_views,
    fusion_weights,
    jittered_cameras,
    render_pseudo_labels,
)
from distilled_gs_ns.export.frames import Frame, Similarity
from distilled_gs_ns.pipelines.teachers import StudentFrame, load_teachers, read_teacher_configs, reference_teacher
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.splat_data import from_model
from distilled_gs_ns.models.student import StudentModel
from distilled_gs_ns.pipelines.splat_pipeline import SplatPipeline, SplatPipelineConfig


@dataclass
class DistillationPipelineConfig(SplatPipelineConfig):
    _target: Type = field(default_factory=lambda: DistillationPipeline)
    teachers: Tuple[Path, ...] = ()
    """config.yml of each trained teacher (distilled-3dgs-teacher*, splatfacto), trained on the same
    data, or a splat file (.ply, .spz, compressed .ply) of this capture, which is the standard
    teacher. Read only when training the student."""
    teacher_frame: Frame = "capture"
    """World frame of splat file teachers: 'capture', the capture's own (COLMAP's; what the reference
    3DGS code, gsplat's trainer and most apps write; `distilled-gs export --frame capture`), or
    'dataparser', nerfstudio's oriented and scaled one (what `ns-export gaussian-splat` writes)."""
    teacher_weights: Optional[Tuple[float, ...]] = None
    """Weight of each teacher in the fused pseudo-label, in --pipeline.teachers order (normalised to
    sum 1). Default: the plain mean (paper)."""
    pseudo_label_dtype: LabelDtype = "uint8"
    """Storage of the cached pseudo-labels (CPU memory): uint8 like the ground truth, or float16."""
    pseudo_views: int = 0
    """Extra cameras near the training views (pseudo_view_sampling), rendered by the teachers once; no ground
    truth there, the student learns them from the fused render only. 0 disables them (default: on
    the demo scene they did not help; see docs/student.md)."""
    pseudo_view_sampling: Literal["between", "jitter"] = "between"
    """Where pseudo-views are: 'between' a training view and one of its 4 nearest (a fraction 0.25-0.75
    of the way, orientation slerped), or 'jitter': a training view's position moved by noise."""
    pseudo_view_jitter: float = 0.05
    """With 'jitter': std of the position offset, as a fraction of the cameras' spread."""
    pseudo_view_every: int = 4
    """With pseudo-views, one training step in this many uses a pseudo-view instead of a real one."""

    def __post_init__(self) -> None:
        if self.pseudo_views < 0:
            raise UserInputError(f"pipeline.pseudo-views must be >= 0, got {self.pseudo_views}")
        if self.pseudo_view_every < 2:
            raise UserInputError(f"pipeline.pseudo-view-every must be >= 2, got {self.pseudo_view_every}")
        if not 0 <= self.pseudo_view_jitter < 10:
            raise UserInputError(f"pipeline.pseudo-view-jitter must be in [0, 10), got {self.pseudo_view_jitter}")


class DistillationPipeline(SplatPipeline):
    config: DistillationPipelineConfig
    model: StudentModel

    def __init__(
        self,
        config: DistillationPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[torch.cuda.amp.GradScaler] = None,
    ) -> None:
        training = test_mode == "val"
        needs_teachers = getattr(config.model, "needs_teachers", True)
        if training and (config.teachers or needs_teachers):  # the cheap checks, before any data is loaded
            read_teacher_configs(config.teachers)
            fusion_weights(len(config.teachers), config.teacher_weights)
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.pseudo_labels: Optional[PseudoLabels] = None
        self.pseudo_cameras: Optional[Cameras] = None
        self.pseudo_view_labels: Optional[PseudoLabels] = None
        if training:
            if not isinstance(self.model, StudentModel):
                raise UserInputError("the distillation pipeline trains a distilled-3dgs-student model only")
            self._prepare_distillation()

    @torch.no_grad()
    def _prepare_distillation(self) -> None:
        if not self.config.teachers:  # the no-distillation baseline (see StudentModelConfig.needs_teachers)
            budget = self.model.set_budget(None)
            CONSOLE.log(f"no teachers: training to a budget of {budget} Gaussians without distillation")
            return
        outputs = self.datamanager.train_dataparser_outputs
        frame = StudentFrame(
            to_dataparser=Similarity.from_dataparser(outputs.dataparser_transform.cpu().numpy(), float(outputs.dataparser_scale)),
            file_frame=self.config.teacher_frame,
            background_color=str(self.model.config.background_color),
        )
        teachers = load_teachers(self.config.teachers, outputs.cameras, self.device, frame, self._label_cache_bytes())
        reference = reference_teacher(teachers)
        cameras = self.served_train_cameras()
        importance = None
        if self.model.config.initialisation == "teacher" or self.model.config.max_megabytes is not None:
            importance = blending_importance(
                reference.model, cameras, description="teacher importance", consensus=self.model.config.importance == "consensus"
            )
        size_sample = None
        if self.model.config.max_megabytes is not None:
            size_sample = from_model(reference.model, order=torch.argsort(importance, descending=True))
        budget = self.model.set_budget(reference.num_gaussians, size_sample)
        counts = ", ".join(f"{t.method_name} {t.num_gaussians}" for t in teachers)
        CONSOLE.log(
            f"teachers: {counts}; budget {budget} Gaussians "
            f"({budget / reference.num_gaussians:.1%} of {reference.method_name}, {reference.config_path})"
        )
        self.model.set_structure_reference(reference.model.means)
        if importance is not None and self.model.config.initialisation == "teacher":
            self.model.initialise_from(dict(reference.model.gauss_params.items()), importance)
            if self.model.num_points == reference.num_gaussians:
                CONSOLE.log(f"student starts from all {self.model.num_points} Gaussians of the standard teacher")
            else:
                CONSOLE.log(f"student starts from the {self.model.num_points} most important teacher Gaussians")

        weights = fusion_weights(len(teachers), self.config.teacher_weights)
        dtype = self.config.pseudo_label_dtype
        models = [teacher.model for teacher in teachers]
        with_depth = self.model.config.depth_weight > 0
        if self.model.config.kd_weight > 0 or with_depth:
            self.pseudo_labels = render_pseudo_labels(models, cameras, weights, dtype, with_depth=with_depth)
            served = getattr(self.datamanager, "train_cameras", cameras)
            check_labels_match_views(self.pseudo_labels, served, [view["image"] for view in self.datamanager.cached_train])
            CONSOLE.log(f"pseudo-labels: {len(self.pseudo_labels)} views cached, {self.pseudo_labels.nbytes / 2**20:.1f} MiB ({dtype})")
        if self.config.pseudo_views > 0:
            if self.config.pseudo_view_sampling == "between":
                self.pseudo_cameras = cameras_between(cameras, self.config.pseudo_views)
            else:
                self.pseudo_cameras = jittered_cameras(cameras, self.config.pseudo_views, self.config.pseudo_view_jitter)
            self.pseudo_view_labels = render_pseudo_labels(
                models, self.pseudo_cameras, weights, dtype, description="rendering pseudo-views", with_depth=with_depth
            )
            CONSOLE.log(
                f"pseudo-views: {len(self.pseudo_view_labels)} cached, {self.pseudo_view_labels.nbytes / 2**20:.1f} MiB"
            )

    def _label_cache_bytes(self) -> int:
        """CPU memory the pseudo-label caches will take (training views and pseudo-views)."""
        cameras = self.datamanager.train_dataparser_outputs.cameras
        pixels = int((cameras.width * cameras.height).sum())
        per_pixel = 3 * (1 if self.config.pseudo_label_dtype == "uint8" else 2)
        views = pixels if self.model.config.kd_weight > 0 or self.model.config.depth_weight > 0 else 0
        views += self.config.pseudo_views * pixels // max(len(cameras), 1)
        return views * per_pixel

    def get_train_loss_dict(self, step: int):
        if self.pseudo_view_labels is not None and step % self.config.pseudo_view_every == 0:
            assert self.pseudo_cameras is not None
            index = (step // self.config.pseudo_view_every) % len(self.pseudo_view_labels)
            camera = self.pseudo_cameras[index : index + 1].to(self.device)
            batch = {"image": self.pseudo_view_labels[index].to(self.device), "image_idx": -1}
            if self.pseudo_view_labels.depths is not None:
                batch["pseudo_depth"] = self.pseudo_view_labels.depths[index].to(self.device)
        else:
            camera, batch = self.datamanager.next_train(step)
            if self.pseudo_labels is not None:
                view = int(batch["image_idx"])
                batch["pseudo_label"] = self.pseudo_labels[view].to(self.device)
                if self.pseudo_labels.depths is not None:
                    batch["pseudo_depth"] = self.pseudo_labels.depths[view].to(self.device)
        model_outputs = self._model(camera)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        return model_outputs, loss_dict, metrics_dict
