"""A rows x cols grid of blocks on the ground plane: which block owns each point (Momentum-GS splits
the coarse model's anchors into e.g. 2x4 blocks, each trained on its own cameras).

The grid is stored as edge coordinates along two ground axes, in float64 on the CPU: a partition
is tiny, and float64 makes `to_dict`/`from_dict` (JSON floats) an exact round trip, so a saved
partition assigns every point to the same block as the one that was fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Literal, Tuple

import torch
from torch import Tensor

from distilled_gs_ns.blocks.ground_plane import ground_basis

Split = Literal["uniform", "quantile"]


def _quantiles(values: Tensor, levels: Tensor) -> Tensor:
    """Linear-interpolation quantiles like `torch.quantile`, which refuses more than 2^24 values."""
    ordered = values.sort().values
    pos = levels * (values.numel() - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=values.numel() - 1)
    return ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo])


@dataclass
class BlockPartition:
    """Grid of blocks; block id = row * cols + col, rows along `axes[0]` (u), cols along `axes[1]` (v)."""

    up: Tensor  # [3] unit world up
    axes: Tensor  # [2, 3] orthonormal ground axes u, v
    edges_u: Tensor  # [rows + 1] increasing u coordinates of the grid lines
    edges_v: Tensor  # [cols + 1] increasing v coordinates of the grid lines

    def __post_init__(self) -> None:
        self.up = torch.as_tensor(self.up, dtype=torch.float64).detach().cpu()
        self.axes = torch.as_tensor(self.axes, dtype=torch.float64).detach().cpu()
        self.edges_u = torch.as_tensor(self.edges_u, dtype=torch.float64).detach().cpu()
        self.edges_v = torch.as_tensor(self.edges_v, dtype=torch.float64).detach().cpu()
        if self.up.shape != (3,) or self.axes.shape != (2, 3):
            raise ValueError(f"up must be [3] and axes [2, 3], got {tuple(self.up.shape)} and {tuple(self.axes.shape)}")
        for name, edges in (("edges_u", self.edges_u), ("edges_v", self.edges_v)):
            if edges.dim() != 1 or edges.numel() < 2 or not bool((edges[1:] > edges[:-1]).all()):
                raise ValueError(f"{name} must hold at least 2 strictly increasing values, got {edges.tolist()}")

    @classmethod
    def fit(
        cls,
        points: Tensor,
        up: Tensor,
        grid: Tuple[int, int],
        split: Split = "quantile",
        quantile: float = 0.005,
    ) -> BlockPartition:
        """Grid over `points` [N, 3] projected on the plane orthogonal to `up`; grid = (rows, cols).

        `uniform`: equal cells over the robust extent (the `quantile` .. 1 - `quantile` range, so a
        few stray points far away do not stretch the grid). `quantile`: edges at evenly spaced point
        quantiles over that range, so rows and columns hold equal numbers of points (the border ones
        also get the tails beyond it), and so do the blocks when u and v are roughly independent,
        as for content spread over a rectangular site.
        """
        rows, cols = grid
        if rows < 1 or cols < 1:
            raise ValueError(f"grid sizes must be >= 1, got {grid}")
        if points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
        if points.shape[0] < rows * cols:
            raise ValueError(f"{points.shape[0]} points cannot fill a {rows}x{cols} grid of {rows * cols} blocks")
        if split not in ("uniform", "quantile"):
            raise ValueError(f"split must be 'uniform' or 'quantile', got {split!r}")
        if not 0.0 <= quantile < 0.5:
            raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
        axes = ground_basis(up.detach().double().cpu())
        up_d = torch.linalg.cross(axes[0], axes[1])
        coords = points.detach().double().cpu() @ axes.T
        edges = []
        for axis, count in ((0, rows), (1, cols)):
            if split == "uniform":
                lo_hi = _quantiles(coords[:, axis], torch.tensor([quantile, 1.0 - quantile], dtype=torch.float64))
                edges.append(torch.linspace(float(lo_hi[0]), float(lo_hi[1]), count + 1, dtype=torch.float64))
            else:
                levels = torch.linspace(quantile, 1.0 - quantile, count + 1, dtype=torch.float64)
                edges.append(_quantiles(coords[:, axis], levels))
            if not bool((edges[-1][1:] > edges[-1][:-1]).all()):
                raise ValueError(
                    f"points are too concentrated along ground axis {'uv'[axis]} to split into {count} cells"
                )
        return cls(up=up_d, axes=axes, edges_u=edges[0], edges_v=edges[1])

    @property
    def grid(self) -> Tuple[int, int]:
        """(rows, cols)."""
        return self.edges_u.numel() - 1, self.edges_v.numel() - 1

    @property
    def num_blocks(self) -> int:
        rows, cols = self.grid
        return rows * cols

    def ground_coords(self, points: Tensor) -> Tensor:
        """[N, 2] float64 (u, v) coordinates of `points` [N, 3], on the points' device."""
        return points.detach().double() @ self.axes.to(points.device).T

    def assign(self, points: Tensor) -> Tensor:
        """Block id [N] of each point; points beyond the outer grid lines go to the nearest border cell.

        Cells are half-open ([lo, hi) per axis), so a point on an inner grid line belongs to exactly
        one block.
        """
        coords = self.ground_coords(points)
        rows, cols = self.grid
        row = torch.bucketize(coords[:, 0].contiguous(), self.edges_u[1:-1].to(points.device), right=True)
        col = torch.bucketize(coords[:, 1].contiguous(), self.edges_v[1:-1].to(points.device), right=True)
        return row * cols + col

    def block_bounds(self, block: int, margin: float = 0.0) -> Tensor:
        """[2, 2] box (min, max) x (u, v) of a block, grown by `margin` x the cell size on each side.

        The grid's outer cells are unbounded on their outer sides (they own every point beyond).
        """
        if not 0 <= block < self.num_blocks:
            raise ValueError(f"block must be in [0, {self.num_blocks}), got {block}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        rows, cols = self.grid
        bounds = torch.empty(2, 2, dtype=torch.float64)
        cells = ((self.edges_u, block // cols, rows), (self.edges_v, block % cols, cols))
        for axis, (edges, index, count) in enumerate(cells):
            lo, hi = float(edges[index]), float(edges[index + 1])
            pad = margin * (hi - lo)
            bounds[0, axis] = -torch.inf if index == 0 else lo - pad
            bounds[1, axis] = torch.inf if index == count - 1 else hi + pad
        return bounds

    def contains(self, points: Tensor, block: int, margin: float = 0.0) -> Tensor:
        """Bool [N]: points inside the block's half-open box grown by `margin` (margin 0: same as `assign`)."""
        bounds = self.block_bounds(block, margin).to(points.device)
        coords = self.ground_coords(points)
        return ((coords >= bounds[0]) & (coords < bounds[1])).all(dim=-1)

    def to_dict(self) -> Dict[str, List]:
        """JSON-serialisable form, for logs and checkpoints."""
        return {
            "up": self.up.tolist(),
            "axes": self.axes.tolist(),
            "edges_u": self.edges_u.tolist(),
            "edges_v": self.edges_v.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, List]) -> BlockPartition:
        return cls(up=data["up"], axes=data["axes"], edges_u=data["edges_u"], edges_v=data["edges_v"])
