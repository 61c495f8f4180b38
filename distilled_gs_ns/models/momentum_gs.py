"""Momentum-GS: Scaffold-GS anchors trained block by block around one shared decoder.

The scene's anchors are split into a grid of blocks on the ground plane. A process trains one block
at a time (its anchors and their Adam state on the device, the other blocks on the host), cycling
through its share of the blocks every `steps_per_block` steps, so the number of blocks does not
depend on the number of devices (blocks/block_set.py holds this schedule). All blocks decode their anchors with one shared decoder; a
momentum (EMA) copy of it is the teacher of a consistency loss that keeps the decoder from drifting
towards whichever block it saw last, and blocks that reconstruct worse than the best one get a
larger loss weight. With several processes each trains its blocks and the decoder's gradients are
averaged (see distributed/gradient_averaging.py). At the last step the blocks are gathered, each
cropped to its own cell, and merged into one anchor set: the final checkpoint is one model that
ns-viewer, ns-export (anchors baked into explicit Gaussians) and ns-eval load like any other.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from distilled_gs_ns.blocks.block_set import BlockSet
from distilled_gs_ns.blocks.block_state import BlockState
from distilled_gs_ns.blocks.camera_assignment import assign_cameras
from distilled_gs_ns.blocks.ground_plane import detect_up_axis
from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.blocks.selection import BlockInit, block_anchors
from distilled_gs_ns.blocks.summary import (
    partition_summary,
    print_partition,
    write_summary,
)
from distilled_gs_ns.blocks.weighting import SmoothedBlockMetrics
from distilled_gs_ns.distributed import process_group
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.models.splat_render import SplatRenderModel, SplatRenderModelConfig, planned_steps
from distilled_gs_ns.rendering.cameras import image_sizes, world_to_camera
from distilled_gs_ns.rendering.gaussians import RenderGaussians
from distilled_gs_ns.scaffold.anchors import (
    Anchors,
    SpawnInfo,
    assemble_gaussians,
    visible,
)
from distilled_gs_ns.scaffold.bake_refinement import refine_bake
from distilled_gs_ns.scaffold.decoder import AnchorDecoder, AnchorDecoderConfig
from distilled_gs_ns.scaffold.momentum_teacher import consistency_loss, ema_update_
from distilled_gs_ns.scaffold.refinement import AnchorStatistics
from distilled_gs_ns.scaffold.sh_bake import BakeMode, bake_anchors_with_sh
from distilled_gs_ns.scaffold.strategy import TRAINED_FIELDS, ScaffoldStrategy

DECODER_GROUPS = ("opacity_mlp", "covariance_mlp", "color_mlp")
SH_C0 = 0.28209479177387814


@dataclass
class MomentumGSModelConfig(SplatRenderModelConfig):
    """Momentum-GS settings. splatfacto's Gaussian-densification fields (densify_*, cull_*, split_*,
    reset_alpha_every, ...) do not apply to anchors; `refine_every` sets the anchor growing/pruning
    interval."""

    _target: Type = field(default_factory=lambda: MomentumGSModel)
    sh_degree: int = 3
    """SH degree of the exported splat (renders always use the decoder): each neural Gaussian's
    decoded colour is fitted over the training views that see its anchor (`scaffold/sh_bake.py`)."""
    export_bake: BakeMode = "export-direction"
    """How export first fixes each neural Gaussian's view-dependent opacity and scale: decoded along
    its anchor's export direction, or averaged over the training views that see the anchor."""
    export_refine_steps: int = 1000
    """Then the baked Gaussians are fitted to the model's renders of its training views for this many
    Adam steps (one view each; 0: the bake as is), see scaffold/bake_refinement.py."""
    use_absgrad: bool = False
    """Anchor growing reads plain screen-space gradients, as Scaffold-GS does."""
    num_downscales: int = 0
    """Scaffold-GS trains at full resolution from the start (splatfacto starts at 1/4)."""
    voxel_size: float = 0.0
    """Anchor grid spacing; <= 0 uses the median distance of a seed to its 3 nearest seeds."""
    feature_dim: int = 32
    num_offsets: int = 10
    hidden_dim: int = 32
    visibility_margin: float = 0.1
    """Anchors projecting this fraction of the image size outside it are still decoded."""
    block_grid: Tuple[int, int] = (2, 2)
    """Blocks on the ground plane (rows, cols); independent of the number of devices."""
    block_split: Literal["uniform", "quantile"] = "quantile"
    """'quantile' balances anchors per row/column, 'uniform' makes equal cells."""
    block_init: BlockInit = "all-seeds"
    """Which anchors a block starts from; every block is cropped to its own cell at the merge.
    'all-seeds' (the official code): the whole seed cloud, so content of other blocks in its views
    is modelled, not faked by its own anchors; the most memory per block. 'seen': its cell grown by
    `block_margin` plus every anchor its cameras see (VastGaussian's coverage selection). 'cell':
    only its cell grown by `block_margin`; the least memory, but its views' other content must be
    faked. Under `max_active_anchors` a block starts from at most that many of what its cameras see."""
    block_margin: float = 0.1
    """'seen' and 'cell' blocks also train the anchors within this many cells of their border."""
    max_active_anchors: int = 0
    """Per-process cap on the active block's anchors, as a device's memory imposes one (0: none). A
    block starts from at most this many (its cell first, then what most of its cameras see) and its
    growth stops at the cap."""
    camera_position_margin: float = 0.1
    """A camera belongs to a block if its centre is within the block grown by this many cells..."""
    camera_visibility_threshold: float = 0.2
    """...or if at least this fraction of the block's anchors project into its image."""
    steps_per_block: int = 500
    """Steps a block trains before the process swaps in its next block (official code: 500)."""
    momentum_teacher: bool = True
    """Keep an EMA teacher of the shared decoder and add the consistency loss (off: ablation)."""
    momentum: float = 0.9
    """teacher <- momentum * teacher + (1 - momentum) * decoder, every step."""
    consistency_weight: float = 50.0
    """lambda_c: weight of the sum of MSEs between decoder and teacher outputs."""
    consistency_feature_grad: bool = True
    """The consistency loss also reaches the anchor features through the frozen teacher decoder, as
    in the official code: the teacher's global knowledge shapes each block's features (off: the
    teacher reads detached features and only the decoder is pulled towards it)."""
    block_weighting: bool = True
    """Weight each block's loss by w = 2 - exp(-[dPSNR^2 + 100 dSSIM^2] / (2 sigma^2)) (off: ablation)."""
    weighting_sigma: float = 10.0
    metrics_smoothing: float = 0.9
    """EMA factor of the per-block PSNR/SSIM the weights come from."""
    volume_weight: float = 0.01
    """Weight of the mean volume of the rasterised Gaussians (Scaffold-GS's scaling regulariser)."""
    grow_from: float = 0.05
    """Anchor growing/pruning runs from this fraction of a block's steps..."""
    grow_until: float = 0.5
    """...until this fraction (Scaffold-GS: 1.5k to 15k of 30k)."""
    grow_grad_threshold: float = 0.0002
    """Mean screen-space (NDC) gradient of an offset above which an anchor grows at its Gaussian."""
    prune_opacity: float = 0.005
    """Anchors whose Gaussians' summed opacity averages below this per view are removed."""
    min_visit_fraction: float = 0.8
    """Statistics count only after this fraction of `refine_every` views."""

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = {
            "feature_dim": self.feature_dim >= 1,
            "num_offsets": self.num_offsets >= 1,
            "hidden_dim": self.hidden_dim >= 1,
            "steps_per_block": self.steps_per_block >= 1,
            "block_grid": len(self.block_grid) == 2 and min(self.block_grid) >= 1,
            "momentum": 0.0 <= self.momentum < 1.0,
            "metrics_smoothing": 0.0 <= self.metrics_smoothing < 1.0,
            "weighting_sigma": self.weighting_sigma > 0,
            "consistency_weight": self.consistency_weight >= 0,
            "volume_weight": self.volume_weight >= 0,
            "block_margin": self.block_margin >= 0,
            "max_active_anchors": self.max_active_anchors >= 0,
            "camera_position_margin": self.camera_position_margin >= 0,
            "camera_visibility_threshold": 0.0 < self.camera_visibility_threshold <= 1.0,
            "grow_from": 0.0 <= self.grow_from <= self.grow_until <= 1.0,
            "visibility_margin": self.visibility_margin >= 0,
            "voxel_size": math.isfinite(self.voxel_size),
            "sh_degree": 0 <= self.sh_degree <= 3,
            "export_refine_steps": self.export_refine_steps >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise UserInputError(f"invalid momentum-gs settings: {values} (see docs/momentum_gs.md for the ranges)")


@dataclass
class TrainingView:
    """What one training render decoded, kept until the step's statistics and losses are done."""

    ids: Tensor
    decoded: Dict[str, Tensor]
    teacher: Optional[Dict[str, Tensor]]
    spawn: SpawnInfo
    gaussians: RenderGaussians


def decoder_checksum(*modules: torch.nn.Module) -> str:
    """sha256 of the modules' parameters: equal on every rank iff the decoders are bit-identical."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class MomentumGSModel(SplatRenderModel):
    """Block-wise anchor model; see the module docstring."""

    config: MomentumGSModelConfig

    # ------------------------------------------------------------------ construction

    def populate_modules(self) -> None:
        self.populate_common()
        decoder_config = AnchorDecoderConfig(self.config.feature_dim, self.config.num_offsets, self.config.hidden_dim)
        self.decoder = AnchorDecoder(decoder_config)
        self.teacher_decoder = copy.deepcopy(self.decoder).requires_grad_(False)
        self.seed_positions = self._initial_points()[0]
        self.voxel_size = float(self.config.voxel_size)
        config = self.config
        self.strategy = ScaffoldStrategy(
            refine_every=config.refine_every,
            grow_from=config.grow_from,
            grow_until=config.grow_until,
            grow_grad_threshold=config.grow_grad_threshold,
            prune_opacity=config.prune_opacity,
            min_visit_fraction=config.min_visit_fraction,
            max_anchors=config.max_active_anchors,
        )
        self._blocks: Optional[BlockSet] = None
        self.block_metrics = SmoothedBlockMetrics(1, self.config.metrics_smoothing)
        self.train_views: Dict[str, Tensor] = {}
        self.stats: Optional[AnchorStatistics] = None
        self.training_view: Optional[TrainingView] = None
        self.nerf_optimizers: Optional[Optimizers] = None
        self.run_dir: Optional[Path] = None
        self.last_step = -1
        self.block_planned_steps = 1
        self._render_cache: Optional[Tuple[Tuple, Anchors]] = None
        self._visit_start: Optional[Tensor] = None
        """The decoder's parameters when the active block was swapped in, for the drift diagnostic."""
        self.log_every = 1
        """The trainer's steps_per_log: the diagnostics are computed only on the steps it logs."""
        self._bake_cache: Optional[Tuple[Tuple, RenderGaussians, Optional[RenderGaussians]]] = None
        """(key, bake, bake fitted to the model's renders or None until asked for)."""

    @torch.no_grad()
    def place_random_seeds(self, box: Tensor) -> None:
        if self.seeded_randomly:
            self.seed_positions = self._uniform_in(box.float().cpu())

    def _auto_voxel_size(self) -> float:
        distances, _ = self.k_nearest_sklearn(self.seed_positions, 3)
        return float(torch.from_numpy(distances).mean(dim=-1).median().clamp(min=1e-6))

    def setup_blocks(self, cameras: Cameras, rank: int, world_size: int) -> None:
        """Anchors from the seeds, the block grid, each block's cameras and this process's share."""
        if self.voxel_size <= 0:
            self.voxel_size = self._auto_voxel_size()
        anchors = Anchors.from_points(
            self.seed_positions, self.voxel_size, self.config.feature_dim, self.config.num_offsets
        )
        c2w = cameras.camera_to_worlds.detach().cpu().float()
        Ks = cameras.get_intrinsics_matrices().detach().cpu().float()
        sizes = image_sizes(cameras)
        self.train_views = {"camera_to_worlds": c2w, "Ks": Ks, "sizes": sizes}
        try:
            partition = BlockPartition.fit(
                anchors.positions, detect_up_axis(c2w), tuple(self.config.block_grid), self.config.block_split
            )
        except ValueError as error:
            raise UserInputError(f"cannot split the scene into {self.config.block_grid} blocks: {error}") from error
        block_ids = partition.assign(anchors.positions)
        block_cameras = assign_cameras(
            partition,
            c2w,
            Ks,
            sizes,
            anchors.positions,
            block_ids,
            position_margin=self.config.camera_position_margin,
            visibility_threshold=self.config.camera_visibility_threshold,
        )
        parts = self._block_anchors(anchors, partition, block_cameras)
        empty = (torch.bincount(block_ids, minlength=len(parts)) == 0).nonzero().flatten().tolist()
        if empty:
            raise UserInputError(
                f"blocks {empty} of the {self.config.block_grid} grid hold no anchors: use fewer blocks "
                "(--pipeline.model.block-grid) or --pipeline.model.block-split quantile"
            )
        states = [BlockState(anchors=part) for part in parts]
        self._blocks = BlockSet(partition, block_cameras, states, self.config.steps_per_block)
        self.block_metrics = SmoothedBlockMetrics(len(states), self.config.metrics_smoothing)
        self.configure_processes(rank, world_size)
        self._activate(self.blocks.owned[0])
        if rank == 0:
            print_partition(self.voxel_size, self.blocks.sizes(), block_cameras, world_size)

    def _block_anchors(self, anchors: Anchors, partition: BlockPartition, block_cameras: List[List[int]]) -> List[Anchors]:
        """Each block's training anchors (`block_init`), at most `max_active_anchors` of them."""
        return block_anchors(
            anchors,
            partition,
            block_cameras,
            self.train_views,
            self.config.block_init,
            self.config.block_margin,
            self.config.max_active_anchors,
        )

    def configure_processes(self, rank: int, world_size: int) -> None:
        """This process's share of the blocks (see BlockSet.assign)."""
        self.blocks.assign(rank, world_size)
        if self.config.camera_optimizer.mode != "off" and world_size > 1:
            raise UserInputError("camera pose optimisation is per process and not shared: use one process or mode off")

    @property
    def blocks(self) -> BlockSet:
        if self._blocks is None:
            raise RuntimeError("momentum-gs model has no anchors: it was neither set up for training nor loaded")
        return self._blocks

    def _activate(self, block: int) -> None:
        """Bring `block` onto the device with fresh refinement statistics, and its Adam state into the
        optimisers once they exist."""
        self.blocks.activate(block, self.device)
        count = self.blocks.states[block].anchors.num_anchors
        self.stats = self.strategy.initialize_state(count, self.config.num_offsets, self.device)
        self._visit_start = self._decoder_vector()
        if self.nerf_optimizers is not None:
            self.blocks.install(self.nerf_optimizers)

    def _deactivate(self) -> None:
        self.blocks.deactivate(self.nerf_optimizers)
        self.stats = None

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        active = self._blocks.params if self._blocks is not None else {}
        if not active:  # ns-viewer/export/eval build no optimisers; keep the names valid
            active = {group: Parameter(torch.empty(0, device=self.device)) for group in TRAINED_FIELDS}
        groups: Dict[str, List[Parameter]] = {group: [param] for group, param in active.items()}
        for name in DECODER_GROUPS:
            groups[name] = list(getattr(self.decoder, name).parameters())
        self.camera_optimizer.get_param_groups(param_groups=groups)
        if self.config.use_bilateral_grid:
            groups["bilateral_grid"] = list(self.bil_grids.parameters())
        return groups

    def trained_scene_parameters(self) -> Dict[str, Tensor]:
        return {**self.blocks.params, **{f"decoder.{k}": v for k, v in self.decoder.named_parameters()}}

    def decoder_state_bytes(self) -> int:
        """Bytes of the shared decoder on the device: its parameters, their Adam moments, the teacher."""
        decoder = sum(param.numel() for param in self.decoder.parameters())
        teacher = sum(param.numel() for param in self.teacher_decoder.parameters())
        return 4 * (3 * decoder + teacher)

    # ------------------------------------------------------------------ the merged model

    def render_anchors(self) -> Anchors:
        """The merged anchors on the device, cached per step (see BlockSet.anchors)."""
        key = (self.step, self.blocks.merged is None, len(self.blocks.states))
        if self._render_cache is None or self._render_cache[0] != key:
            self._render_cache = (key, self.blocks.anchors().map(lambda tensor: tensor.to(self.device)))
        return self._render_cache[1]

    @torch.no_grad()
    def merge(self) -> None:
        """Gather every block, crop each to its cell, keep the union as the model's only anchors."""
        blocks = self.blocks
        count = len(blocks.states)
        merged = blocks.merge(self.nerf_optimizers)
        self.stats, self._render_cache = None, None
        checksums = process_group.all_gather_objects(decoder_checksum(self.decoder, self.teacher_decoder))
        if len(set(checksums)) != 1:
            raise RuntimeError(f"the shared decoder differs between processes after training: {checksums}")
        if self.run_dir is not None and blocks.rank == 0:
            per_block = torch.bincount(blocks.partition.assign(merged.positions), minlength=count)
            results = {
                "merged_anchors": merged.num_anchors,
                "merged_anchors_per_block": per_block.tolist(),
                "steps_per_block_trained": blocks.merged_steps,
                "decoder_checksum_per_process": checksums,
            }
            write_summary(self.run_dir, results, update=True)

    def prepare_checkpoint(self) -> None:
        if self.blocks.merged is None:
            self.blocks.sync(self.nerf_optimizers)
            self._render_cache = None

    # ------------------------------------------------------------------ checkpoints

    def get_extra_state(self) -> Dict:
        blocks = self._blocks
        if blocks is not None:
            blocks.stash(self.nerf_optimizers)
        return {
            "voxel_size": self.voxel_size,
            **(blocks.to_dict() if blocks is not None else {"partition": None}),
            "block_metrics": self.block_metrics.state_dict(),
            "train_views": self.train_views,
        }

    def set_extra_state(self, state: Dict) -> None:
        self.voxel_size = float(state["voxel_size"])
        self._blocks = None if state["partition"] is None else BlockSet.from_dict(state, self.config.steps_per_block)
        count = len(self._blocks.cameras) if self._blocks is not None else 1
        self.block_metrics = SmoothedBlockMetrics(count, self.config.metrics_smoothing)
        self.block_metrics.load_state_dict(state["block_metrics"])
        self.train_views = dict(state["train_views"])
        if "size" in self.train_views:  # checkpoints before per-camera sizes: one size for every camera
            count = self.train_views["Ks"].shape[0]
            self.train_views["sizes"] = self.train_views.pop("size").reshape(1, 2).expand(count, 2).clone()
        self.stats, self._render_cache, self._bake_cache = None, None, None
        if self._blocks is not None and self._blocks.states:
            self.configure_processes(process_group.rank(), process_group.world_size())

    # ------------------------------------------------------------------ training hooks

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        self.run_dir = Path(trainer.base_dir)
        self.last_step = planned_steps(trainer) - 1
        self.log_every = max(1, trainer.config.logging.steps_per_log)
        blocks = self.blocks
        if blocks.merged is not None:  # continue training from a merged checkpoint: split it again
            blocks.resplit(lambda merged: self._block_anchors(merged, blocks.partition, blocks.cameras))
            self._render_cache = None
            self.configure_processes(process_group.rank(), process_group.world_size())
        self.block_planned_steps = max(1, planned_steps(trainer) // len(blocks.owned))
        if blocks.rank == 0:
            summary = partition_summary(blocks.partition, self.voxel_size, blocks.sizes(), blocks.cameras, blocks.world_size)
            write_summary(self.run_dir, summary)
        return super().get_training_callbacks(training_callback_attributes)

    def step_cb(self, optimizers: Optimizers, step: int) -> None:
        super().step_cb(optimizers, step)
        self.nerf_optimizers = optimizers
        target = self.blocks.block_for_step(step)
        if self.blocks.active != target:
            self._deactivate()
            self._activate(target)
        self.blocks.install(optimizers)
        if self.config.block_weighting and process_group.is_distributed() and step % self.config.steps_per_block == 0:
            self._share_block_metrics()

    def _share_block_metrics(self) -> None:
        """Each process measures its own blocks; the weights compare all of them. Exchanged when the
        blocks switch (the same steps on every rank): a block's smoothed metrics move slowly, and
        the official code re-measures them only every 1000 steps."""
        metrics = self.block_metrics
        owned = torch.zeros(len(self.blocks.states), dtype=torch.bool)
        owned[self.blocks.owned] = True
        local = torch.stack([metrics.psnr, metrics.ssim, metrics.measured.double()]) * owned.double()
        total = process_group.all_reduce_sum(local)
        metrics.psnr, metrics.ssim, metrics.measured = total[0], total[1], total[2] > 0

    def after_rasterize(self, info: Dict) -> None:
        if info["means2d"].requires_grad:
            info["means2d"].retain_grad()

    def step_post_backward(self, step: int) -> None:
        super().step_post_backward(step)
        view = self.training_view
        if view is not None and self.stats is not None:
            self.strategy.step_post_backward(self.stats, self.info, view.ids, view.spawn, view.gaussians.opacities)
        if self.config.momentum_teacher:
            ema_update_(self.teacher_decoder, self.decoder, self.config.momentum)
        block = self.blocks.states[self.blocks.active]  # type: ignore[index]
        block.steps += 1
        if self.strategy.refines_at(block.steps, self.block_planned_steps):
            self._refine()
        self.training_view = None
        if step == self.last_step:
            self.merge()

    def _refine(self) -> None:
        """Grow and prune the active block's anchors; their Parameters change in the optimisers."""
        assert self.stats is not None and self.nerf_optimizers is not None
        optimizers = {group: self.nerf_optimizers.optimizers[group] for group in TRAINED_FIELDS}
        positions, params, self.stats = self.strategy.refine(
            self.stats, self.blocks.active_anchors(), self.blocks.params, optimizers, self.voxel_size
        )
        self.blocks.replace_active(positions, params, self.nerf_optimizers)

    # ------------------------------------------------------------------ rendering

    @property
    def crop_positions(self) -> Tensor:
        return self.render_anchors().positions

    def gaussians_for_render(
        self, crop_ids: Optional[Tensor], camera: Optional[Cameras] = None, camera_to_world: Optional[Tensor] = None
    ) -> RenderGaussians:
        if camera is None:
            raise ValueError("anchors decode their Gaussians per view: pass the camera")
        anchors = self.blocks.active_anchors() if self.training else self.render_anchors()
        pose = (camera.camera_to_worlds if camera_to_world is None else camera_to_world).reshape(3, 4).to(self.device)
        mask = visible(
            anchors,
            world_to_camera(pose[None])[0],
            camera.get_intrinsics_matrices().reshape(3, 3).to(self.device),
            int(camera.width.item()),
            int(camera.height.item()),
            self.config.visibility_margin,
        )
        if crop_ids is not None:
            mask = mask & crop_ids.reshape(-1)
        ids = mask.nonzero().squeeze(1)
        view_dirs = F.normalize(anchors.positions[ids] - pose[:, 3], dim=-1)
        decoded = self.decoder(anchors.features[ids], view_dirs)
        gaussians, spawn = assemble_gaussians(anchors, ids, decoded)
        if self.training:
            teacher = None
            if self.config.momentum_teacher and self.config.consistency_weight > 0:
                if self.config.consistency_feature_grad:  # frozen teacher; the features get its gradient
                    teacher = self.teacher_decoder(anchors.features[ids], view_dirs)
                else:
                    with torch.no_grad():
                        teacher = self.teacher_decoder(anchors.features[ids], view_dirs)
            self.training_view = TrainingView(ids=ids, decoded=decoded, teacher=teacher, spawn=spawn, gaussians=gaussians)
        return gaussians

    # ------------------------------------------------------------------ losses

    def current_block_weight(self) -> float:
        if not self.config.block_weighting or self.blocks.active is None:
            return 1.0
        return float(self.block_metrics.weights(self.config.weighting_sigma)[self.blocks.active])

    def extra_losses(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        view = self.training_view
        if not self.training or view is None:
            return {}
        if view.ids.numel() == 0:
            # nerfstudio steps only the optimisers that got gradients, and the decoder's averaged Adam
            # all-reduces in its step: a zero gradient keeps a rank that sees no anchor in step.
            return {"decoder_in_step": 0.0 * sum(param.sum() for param in self.decoder.parameters())}
        losses: Dict[str, Tensor] = {}
        if view.gaussians.scales.shape[0]:
            losses["volume_reg"] = self.config.volume_weight * view.gaussians.scales.prod(dim=-1).mean()
        if view.teacher is not None:
            losses["consistency"] = self.config.consistency_weight * consistency_loss(view.decoded, view.teacher)
        return losses

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        active = self.blocks.active
        if not self.training or active is None:
            return loss_dict
        if self.config.block_weighting:
            with torch.no_grad():
                gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
                pred, target = outputs["rgb"].permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]
                psnr = -10.0 * torch.log10(F.mse_loss(pred, target).clamp(min=1e-10))
                self.block_metrics.update(active, float(psnr), float(self.ssim(target, pred)))
        weight = self.current_block_weight()
        if metrics_dict is not None:
            metrics_dict["block_weight"] = weight
            metrics_dict["active_block"] = float(active)
            metrics_dict["device_anchor_state_mb"] = self.blocks.active_state_bytes() / 2**20
            metrics_dict["device_decoder_state_mb"] = self.decoder_state_bytes() / 2**20
            if self.step % self.log_every == 0:
                metrics_dict.update(self._decoder_diagnostics())
        return {name: weight * value for name, value in loss_dict.items()}

    def _decoder_vector(self) -> Tensor:
        return torch.cat([param.detach().reshape(-1) for param in self.decoder.parameters()])

    @torch.no_grad()
    def _decoder_diagnostics(self) -> Dict[str, float]:
        """Why the momentum teacher helps or not, on the logged steps (they sync the device): the
        decoder's relative drift since the active block was swapped in, its relative distance to the
        teacher, and the smoothed training PSNR of each of this process's blocks."""
        current = self._decoder_vector()
        start = current if self._visit_start is None else self._visit_start
        scale = float(current.norm().clamp(min=1e-12))
        teacher = torch.cat([param.reshape(-1) for param in self.teacher_decoder.parameters()])
        diagnostics = {
            "decoder_drift_in_visit": float((current - start).norm()) / scale,
            "decoder_teacher_gap": float((current - teacher).norm()) / scale,
        }
        for block in self.blocks.owned:
            if bool(self.block_metrics.measured[block]):
                diagnostics[f"block_{block}_psnr"] = float(self.block_metrics.psnr[block])
        return diagnostics

    # ------------------------------------------------------------------ export (ns-export gaussian-splat)

    def baked_gaussians(self, fitted: bool = True) -> RenderGaussians:
        """The merged anchors as explicit Gaussians with SH colours of `config.sh_degree`, fitted to
        the model's renders unless `fitted` is False (the fit keeps the rows and their positions, so
        the unfitted bake answers `means`, e.g. for the viewer's initial point cloud, without it)."""
        key = (self.step, self.blocks.merged is None, len(self.blocks.states))
        if self._bake_cache is None or self._bake_cache[0] != key:
            with torch.no_grad():
                baked = bake_anchors_with_sh(
                    self.render_anchors(), self.decoder, self.train_views, self.config.sh_degree, self.config.export_bake
                )
            self._bake_cache = (key, baked, None)
        if not fitted:
            return self._bake_cache[1]
        if self._bake_cache[2] is None:
            self._bake_cache = (key, self._bake_cache[1], self._fit_to_own_renders(self._bake_cache[1]))
        return self._bake_cache[2]

    def _fit_to_own_renders(self, baked: RenderGaussians) -> RenderGaussians:
        steps = self.config.export_refine_steps
        if steps == 0 or not self.train_views:
            return baked
        c2w, Ks, sizes = (self.train_views[key].to(self.device) for key in ("camera_to_worlds", "Ks", "sizes"))
        cameras = Cameras(
            camera_to_worlds=c2w, fx=Ks[:, 0, 0:1], fy=Ks[:, 1, 1:2], cx=Ks[:, 0, 2:3], cy=Ks[:, 1, 2:3],
            width=sizes[:, 0:1].long(), height=sizes[:, 1:2].long(),
        )  # fmt: skip
        was_training = self.training
        self.eval()
        with torch.no_grad():
            targets = [self.get_outputs(cameras[i : i + 1])["rgb"] for i in range(cameras.shape[0])]

        def render(gaussians: RenderGaussians, view: int) -> Tensor:
            return self.render_rgb(gaussians, cameras[view : view + 1])

        CONSOLE.log(f"export: fitting {baked.means.shape[0]} baked Gaussians to the model's renders ({steps} steps)")
        refined = refine_bake(baked, render, targets, steps)
        self.train(was_training)
        return refined

    @property
    def num_points(self) -> int:
        """Anchors: the active block's while training, the merged model's otherwise."""
        if self.training and self._blocks is not None and self._blocks.positions is not None:
            return int(self._blocks.positions.shape[0])
        return self.render_anchors().num_anchors

    @property
    def means(self) -> Tensor:
        return self.baked_gaussians(fitted=False).means

    @property
    def scales(self) -> Tensor:
        return torch.log(self.baked_gaussians().scales)

    @property
    def quats(self) -> Tensor:
        return self.baked_gaussians().quats

    @property
    def opacities(self) -> Tensor:
        return torch.logit(self.baked_gaussians().opacities.clamp(1e-6, 1 - 1e-6))[:, None]

    @property
    def shs_0(self) -> Tensor:
        return self.baked_gaussians().colors[:, 0, :]

    @property
    def shs_rest(self) -> Tensor:
        return self.baked_gaussians().colors[:, 1:, :]

    @property
    def features_dc(self) -> Tensor:
        return self.shs_0

    @property
    def features_rest(self) -> Tensor:
        return self.shs_rest

    @property
    def colors(self) -> Tensor:
        return torch.clamp(self.shs_0 * SH_C0 + 0.5, 0.0, 1.0)
