"""One process's view of the scene's blocks: which it trains, the active one on the device, the merge.

Every process keeps every block's state on the host (so a checkpoint or the merge needs no extra
round trip), trains the blocks b with b % world_size == rank, and holds only the active block's
anchors, as Parameters, and their Adam state on the device. Swapping a block copies the tensors and
the optimiser state out and the next block's in; the optimisers keep their groups and only their
parameter changes. At the end the blocks are gathered, each cropped to its own cell, and merged.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from distilled_gs_ns.blocks.block_state import BlockState, merge_blocks
from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.distributed import process_group
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.optim.parameter_rows import install_parameter, optimizer_state
from distilled_gs_ns.scaffold.anchors import Anchors
from distilled_gs_ns.scaffold.strategy import TRAINED_FIELDS

HOST = torch.device("cpu")


class BlockSet:
    """The blocks of one partition, this process's share of them and the active block's tensors."""

    def __init__(
        self,
        partition: BlockPartition,
        cameras: List[List[int]],
        states: List[BlockState],
        steps_per_block: int,
        merged: Optional[Anchors] = None,
        merged_steps: Optional[List[int]] = None,
    ) -> None:
        self.partition = partition
        self.cameras = cameras
        """Training-camera indices of each block."""
        self.states = states
        """Each block's host copy; empty once merged."""
        self.steps_per_block = steps_per_block
        self.merged = merged
        """The final anchors, each block cropped to its cell; None while the blocks train."""
        self.merged_steps: List[int] = list(merged_steps or [])
        """Steps each block had when they were merged (a resumed run starts them from there)."""
        self.owned: List[int] = []
        self.rank, self.world_size = 0, 1
        self.active: Optional[int] = None
        self.positions: Optional[Tensor] = None
        self.params: Dict[str, Parameter] = {}
        """The active block's trained tensors, keyed by optimiser group (TRAINED_FIELDS)."""

    # ------------------------------------------------------------------ processes and schedule

    def assign(self, rank: int, world_size: int) -> None:
        """Blocks b with b % world_size == rank are this process's share."""
        count = len(self.states)
        if count < world_size:
            raise UserInputError(
                f"{world_size} processes but only {count} blocks: every process needs a block "
                "(raise --pipeline.model.block-grid or lower --machine.num-devices)"
            )
        if count % world_size:
            CONSOLE.print(
                f"[yellow]{count} blocks over {world_size} processes: processes with fewer blocks give each "
                "of them more steps"
            )
        self.rank, self.world_size = rank, world_size
        self.owned = [block for block in range(count) if block % world_size == rank]

    def block_for_step(self, step: int) -> int:
        """The owned blocks take turns, `steps_per_block` steps each."""
        return self.owned[(step // self.steps_per_block) % len(self.owned)]

    def sizes(self) -> List[int]:
        return [state.anchors.num_anchors for state in self.states]

    # ------------------------------------------------------------------ the active block

    def activate(self, block: int, device: torch.device) -> None:
        """Copy `block`'s anchors to the device as fresh Parameters (see `install` for its Adam state)."""
        anchors = self.states[block].anchors
        self.positions = anchors.positions.to(device, copy=True)
        self.params = {
            group: Parameter(getattr(anchors, name).to(device, copy=True)) for group, name in TRAINED_FIELDS.items()
        }
        self.active = block

    def install(self, optimizers: Optimizers) -> None:
        """Hand the active block's Parameters, with the Adam state it left with, to the optimisers."""
        if self.active is None:
            return
        saved = self.states[self.active].optimizer_state
        for group, param in self.params.items():
            optimizer = optimizers.optimizers[group]
            if optimizer.param_groups[0]["params"][0] is not param:
                install_parameter(optimizer, param, saved.get(group, {}))
            optimizers.parameters[group] = [param]

    def replace_active(self, positions: Tensor, params: Dict[str, Parameter], optimizers: Optimizers) -> None:
        """New active tensors after anchors grew or were pruned (the optimisers already hold them)."""
        self.positions, self.params = positions, params
        for group, param in params.items():
            optimizers.parameters[group] = [param]

    def active_anchors(self) -> Anchors:
        assert self.positions is not None, "no active block"
        return Anchors(positions=self.positions, **{name: self.params[group] for group, name in TRAINED_FIELDS.items()})

    def stash(self, optimizers: Optional[Optimizers]) -> None:
        """Copy the active block's tensors and Adam state into its host state."""
        if self.active is None:
            return
        state = self.states[self.active]
        values = {name: self.params[group].detach().to(HOST, copy=True) for group, name in TRAINED_FIELDS.items()}
        state.anchors = Anchors(positions=self.positions.to(HOST, copy=True), **values)  # type: ignore[union-attr]
        if optimizers is not None:
            state.optimizer_state = {
                group: optimizer_state(optimizers.optimizers[group], param, HOST) for group, param in self.params.items()
            }

    def deactivate(self, optimizers: Optional[Optimizers]) -> None:
        self.stash(optimizers)
        self.active, self.positions, self.params = None, None, {}

    def active_state_bytes(self) -> int:
        """Bytes of anchor state on the device: the active block's tensors and their Adam moments
        (the other blocks wait on the host)."""
        count = self.positions.numel() if self.positions is not None else 0
        for param in self.params.values():
            count += 3 * param.numel()  # value, exp_avg, exp_avg_sq
        return 4 * count

    # ------------------------------------------------------------------ across processes and the merge

    def live_anchors(self) -> List[Anchors]:
        """Every block's anchors, the active one with its live values (detached)."""
        return [
            self.active_anchors().map(Tensor.detach) if index == self.active else state.anchors
            for index, state in enumerate(self.states)
        ]

    def anchors(self) -> Anchors:
        """The model's anchors: the merge, or the blocks cropped and merged on the fly (a checkpoint
        saved before the end renders the same way)."""
        if self.merged is not None:
            return self.merged
        return merge_blocks(self.partition, self.live_anchors())

    def sync(self, optimizers: Optional[Optimizers]) -> None:
        """Bring this process's copy of every block up to date (before a checkpoint or the merge)."""
        self.stash(optimizers)
        if not process_group.is_distributed():
            return
        mine = {block: self.states[block].to_dict() for block in self.owned}
        for shared in process_group.all_gather_objects(mine):
            for block, data in shared.items():
                if block not in self.owned:
                    self.states[block] = BlockState.from_dict(data)

    def merge(self, optimizers: Optional[Optimizers]) -> Anchors:
        """Gather every block, crop each to its cell, keep the union as the only anchors."""
        self.sync(optimizers)
        self.merged = merge_blocks(self.partition, [state.anchors for state in self.states])
        self.merged_steps = [state.steps for state in self.states]
        self.active, self.positions, self.params, self.states = None, None, {}, []  # stashed by the sync
        return self.merged

    def resplit(self, split: Callable[[Anchors], List[Anchors]]) -> None:
        """Continue training from the merge: `split` gives each block's anchors again."""
        assert self.merged is not None
        parts = split(self.merged)
        steps = self.merged_steps or [0] * len(parts)
        self.states = [BlockState(anchors=part, steps=steps[index]) for index, part in enumerate(parts)]
        self.merged = None

    # ------------------------------------------------------------------ checkpoints

    def to_dict(self) -> Dict:
        """Plain tensors, numbers and dicts (torch's weights-only unpickler loads them)."""
        return {
            "partition": self.partition.to_dict(),
            "block_cameras": self.cameras,
            "blocks": [state.to_dict() for state in self.states],
            "merged": None if self.merged is None else self.merged.map(lambda t: t.detach().cpu()).tensors(),
            "merged_block_steps": self.merged_steps,
        }

    @classmethod
    def from_dict(cls, data: Dict, steps_per_block: int) -> BlockSet:
        return cls(
            BlockPartition.from_dict(data["partition"]),
            [list(cams) for cams in data["block_cameras"]],
            [BlockState.from_dict(block) for block in data["blocks"]],
            steps_per_block,
            merged=None if data["merged"] is None else Anchors(**data["merged"]),
            merged_steps=list(data["merged_block_steps"]),
        )
