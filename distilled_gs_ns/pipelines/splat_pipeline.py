"""nerfstudio's VanillaPipeline with the input checks a user needs before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from distilled_gs_ns.data.checks import prepare_data
from distilled_gs_ns.models.initialisation import seed_box


@dataclass
class SplatPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: SplatPipeline)


class SplatPipeline(VanillaPipeline):
    """VanillaPipeline that checks its data before building the datamanager, and hands every
    consumer of training cameras the cameras the model is actually trained with."""

    def __init__(
        self,
        config: SplatPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[torch.cuda.amp.GradScaler] = None,
    ) -> None:
        prepare_data(config.datamanager)
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        # Only training needs the seeds placed: ns-viewer/export/eval ("test", "inference") load a
        # checkpoint over them right after.
        if test_mode == "val" and hasattr(self.model, "place_random_seeds") and hasattr(self.datamanager, "train_dataset"):
            cameras = self.served_train_cameras()
            tan_half_fov = torch.maximum(
                cameras.width.float() / (2 * cameras.fx), cameras.height.float() / (2 * cameras.fy)
            ).squeeze(-1)
            box = seed_box(self.datamanager.train_dataset.scene_box.aabb, cameras.camera_to_worlds, tan_half_fov)
            self.model.place_random_seeds(box)

    def served_train_cameras(self) -> Cameras:
        """The training cameras exactly as the datamanager serves them with each ground-truth image.

        nerfstudio's full-image datamanager undistorts and crops images with distortion parameters
        when it first loads them, and then changes those cameras' intrinsics and sizes in place. The
        dataparser's cameras (and the dataset's before that first load) are the distorted originals:
        anything rendered for them (pseudo-labels, importance, seeds) would not line up with the
        images the model is trained on. Loading here makes the cameras final before anyone reads them.
        """
        datamanager = self.datamanager
        if hasattr(datamanager, "cached_train"):
            datamanager.cached_train  # noqa: B018 (a cached property: loads and undistorts once)
        return datamanager.train_dataset.cameras
