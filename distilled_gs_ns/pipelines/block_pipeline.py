"""The pipeline of block-wise training: each step draws a view of the model's active block.

nerfstudio's VanillaPipeline would wrap the model in DDP when several processes run; that neither
works on CPU (gloo) nor fits a model whose anchor Parameters are per process and replaced as
blocks are swapped. This pipeline keeps the model unwrapped and lets the model share what must be
shared (decoder gradients through its optimiser, block states and metrics through collectives).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras

from distilled_gs_ns.distributed import process_group
from distilled_gs_ns.metrics.saved_tensors import SavedTensorBytes
from distilled_gs_ns.pipelines.splat_pipeline import SplatPipeline, SplatPipelineConfig


@dataclass
class BlockPipelineConfig(SplatPipelineConfig):
    _target: Type = field(default_factory=lambda: BlockPipeline)


class BlockPipeline(SplatPipeline):
    """SplatPipeline without DDP whose training views come from the active block's cameras."""

    def __init__(
        self,
        config: BlockPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[torch.cuda.amp.GradScaler] = None,
    ) -> None:
        if str(device).startswith("cuda") and process_group.is_distributed():
            torch.cuda.set_device(torch.device(device))  # NCCL object collectives use the current GPU
        super().__init__(config, device, test_mode, world_size=1, local_rank=local_rank, grad_scaler=grad_scaler)
        self.world_size = process_group.world_size()
        self._queues: Dict[int, List[int]] = {}
        # Seeded by the run's seed (nerfstudio seeds torch with --machine.seed) and the rank.
        self._shuffle = random.Random(torch.initial_seed() + process_group.rank())
        if test_mode == "val":
            process_group.broadcast_module_(self.model.decoder)
            process_group.broadcast_module_(self.model.teacher_decoder)
            self.model.setup_blocks(self.served_train_cameras(), process_group.rank(), self.world_size)

    def _next_camera(self, block: int) -> int:
        """The block's cameras in a fresh random order each pass, like nerfstudio's datamanager."""
        queue = self._queues.get(block)
        if not queue:
            queue = list(self.model.blocks.cameras[block])
            self._shuffle.shuffle(queue)
            self._queues[block] = queue
        return queue.pop()

    def _train_view(self, index: int) -> Tuple[Cameras, Dict]:
        datamanager = self.datamanager
        data = dict(datamanager.cached_train[index])
        data["image"] = data["image"].to(self.device)
        camera = datamanager.train_dataset.cameras[index : index + 1].to(self.device)
        if camera.metadata is None:
            camera.metadata = {}
        camera.metadata["cam_idx"] = index
        return camera, data

    def get_train_loss_dict(self, step: int):
        block = self.model.blocks.block_for_step(step)
        assert self.model.blocks.active == block, "the model activates its block in its BEFORE_TRAIN_ITERATION callback"
        camera, batch = self._train_view(self._next_camera(block))
        with SavedTensorBytes() as saved:
            outputs = self.model(camera)
            metrics_dict = self.model.get_metrics_dict(outputs, batch)
            loss_dict = self.model.get_loss_dict(outputs, batch, metrics_dict)
        metrics_dict["device_activation_mb"] = saved.nbytes / 2**20
        return outputs, loss_dict, metrics_dict
