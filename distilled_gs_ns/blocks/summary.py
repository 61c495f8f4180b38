"""What a block-wise run reports about its blocks: the partition table printed at start and the
run folder's blocks.json (partition, anchors and cameras per block, then the merge's results)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from nerfstudio.utils.rich_utils import CONSOLE
from rich.table import Table

from distilled_gs_ns.blocks.partition import BlockPartition

SUMMARY_FILE = "blocks.json"


def print_partition(voxel_size: float, anchors: List[int], cameras: List[List[int]], processes: int) -> None:
    table = Table(title=f"momentum-gs blocks (voxel {voxel_size:.4g})")
    for column in ("block", "anchors", "cameras", "process"):
        table.add_column(column, justify="right")
    for index, count in enumerate(anchors):
        table.add_row(str(index), str(count), str(len(cameras[index])), str(index % processes))
    CONSOLE.print(table)


def partition_summary(
    partition: BlockPartition, voxel_size: float, anchors: List[int], cameras: List[List[int]], processes: int
) -> Dict:
    return {
        "grid": list(partition.grid),
        "voxel_size": voxel_size,
        "partition": partition.to_dict(),
        "processes": processes,
        "blocks": [
            {"anchors": count, "cameras": cameras[index], "process": index % processes}
            for index, count in enumerate(anchors)
        ],
    }


def write_summary(run_dir: Path, summary: Dict, update: bool = False) -> None:
    """Write blocks.json, or with `update` add `summary`'s keys to the existing one."""
    path = run_dir / SUMMARY_FILE
    if update and path.exists():
        summary = {**json.loads(path.read_text()), **summary}
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
