"""nerfstudio's VanillaPipeline with the input checks a user needs before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Type

import torch
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.models.initialisation import seed_box


def check_data_path(datamanager_config) -> None:
    """Fail early, in plain words, when the scene the datamanager would parse is not there."""
    dataparser = datamanager_config.dataparser
    data: Optional[Path] = getattr(datamanager_config, "data", None) or getattr(dataparser, "data", None)
    if data is None:
        raise UserInputError("no scene given: pass --data PATH")
    data = Path(data)
    if not data.exists():
        raise UserInputError(
            f"the data path {data} does not exist (ns-viewer, ns-export and ns-eval re-read the training data, "
            "so it must still be there); pass --data with the scene folder"
        )
    if isinstance(dataparser, NerfstudioDataParserConfig) and data.is_dir() and not (data / "transforms.json").exists():
        raise UserInputError(f"{data} has no transforms.json: it is not a scene in nerfstudio's format")
    if isinstance(dataparser, BlenderDataParserConfig) and not (data / "transforms_train.json").exists():
        raise UserInputError(f"{data} has no transforms_train.json: it is not a Blender-format scene")


@dataclass
class SplatPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: SplatPipeline)


class SplatPipeline(VanillaPipeline):
    """VanillaPipeline that checks its data before building the datamanager."""

    def __init__(
        self,
        config: SplatPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[torch.cuda.amp.GradScaler] = None,
    ) -> None:
        check_data_path(config.datamanager)
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        # Only training needs the seeds placed: ns-viewer/export/eval ("test", "inference") load a
        # checkpoint over them right after.
        if test_mode == "val" and hasattr(self.model, "place_random_seeds") and hasattr(self.datamanager, "train_dataset"):
            cameras = self.datamanager.train_dataset.cameras
            tan_half_fov = torch.maximum(
                cameras.width.float() / (2 * cameras.fx), cameras.height.float() / (2 * cameras.fy)
            ).squeeze(-1)
            box = seed_box(self.datamanager.train_dataset.scene_box.aabb, cameras.camera_to_worlds, tan_half_fov)
            self.model.place_random_seeds(box)
