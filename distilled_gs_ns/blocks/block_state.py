"""One block's trainable content, its (de)serialisation, and merging blocks.

A block trains more than its grid cell (all seeds, what its cameras see, or its cell grown by a
margin, see `MomentumGSModelConfig.block_init`), so content of its views outside the cell is
modelled rather than faked; at the end each block is cropped to its own cell and the crops are
concatenated, so every region of the merged model comes from exactly one block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.scaffold.anchors import Anchors


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
            **{name: tensor.detach().cpu() for name, tensor in self.anchors.tensors().items()},
            "optimizer_state": self.optimizer_state,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> BlockState:
        anchors = Anchors(**{name: data[name] for name in Anchors.__dataclass_fields__})  # type: ignore[arg-type]
        return cls(anchors=anchors, optimizer_state=dict(data.get("optimizer_state", {})), steps=int(data["steps"]))


def merge_blocks(partition: BlockPartition, blocks: List[Anchors]) -> Anchors:
    """One anchor set: each block cropped to its own cell (no margin), concatenated in block order.

    Anchors a block grew outside its cell, and its copies of its neighbours' border anchors, are
    dropped: the neighbour's own copy, trained on the cameras that see that region, is kept.
    """
    if len(blocks) != partition.num_blocks:
        raise ValueError(f"{len(blocks)} blocks for a partition of {partition.num_blocks}")
    return Anchors.concat([block.select(partition.assign(block.positions) == index) for index, block in enumerate(blocks)])
