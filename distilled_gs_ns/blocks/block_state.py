"""One block's trainable content, its (de)serialisation, and splitting / merging blocks.

A block owns anchors in its grid cell grown by a margin, so content on a border is trained from
both sides; at the end each block is cropped to its own cell and the crops are concatenated, so
every region of the merged model comes from exactly one block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import Tensor

from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.models.anchors import Anchors

ANCHOR_FIELDS = ("positions", "features", "offsets", "log_scaling")


@dataclass
class BlockState:
    """A block's anchors and the optimiser state of its trained tensors, kept on the host."""

    anchors: Anchors
    optimizer_state: Dict[str, Dict[str, object]] = field(default_factory=dict)
    """Per optimiser group (e.g. "anchor_features"): Adam's state for this block's tensor."""
    steps: int = 0
    """Training steps this block has had."""

    def to_dict(self) -> Dict[str, object]:
        """Plain tensors, numbers and dicts: loadable by torch's weights-only unpickler."""
        return {
            **{name: getattr(self.anchors, name).detach().cpu() for name in ANCHOR_FIELDS},
            "optimizer_state": self.optimizer_state,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> BlockState:
        anchors = Anchors(**{name: data[name] for name in ANCHOR_FIELDS})  # type: ignore[arg-type]
        return cls(anchors=anchors, optimizer_state=dict(data.get("optimizer_state", {})), steps=int(data["steps"]))


def select_anchors(anchors: Anchors, mask: Tensor) -> Anchors:
    return Anchors(**{name: getattr(anchors, name)[mask] for name in ANCHOR_FIELDS})


def concat_anchors(parts: List[Anchors]) -> Anchors:
    return Anchors(**{name: torch.cat([getattr(part, name) for part in parts]) for name in ANCHOR_FIELDS})


def split_anchors(partition: BlockPartition, anchors: Anchors, margin: float) -> List[Anchors]:
    """Each block's anchors: those inside its cell grown by `margin` cells (so borders overlap)."""
    return [
        select_anchors(anchors, partition.contains(anchors.positions, block, margin=margin))
        for block in range(partition.num_blocks)
    ]


def merge_blocks(partition: BlockPartition, blocks: List[Anchors]) -> Anchors:
    """One anchor set: each block cropped to its own cell (no margin), concatenated in block order.

    Anchors a block grew outside its cell, and its copies of its neighbours' border anchors, are
    dropped: the neighbour's own copy, trained on the cameras that see that region, is kept.
    """
    if len(blocks) != partition.num_blocks:
        raise ValueError(f"{len(blocks)} blocks for a partition of {partition.num_blocks}")
    return concat_anchors(
        [select_anchors(block, partition.assign(block.positions) == index) for index, block in enumerate(blocks)]
    )
