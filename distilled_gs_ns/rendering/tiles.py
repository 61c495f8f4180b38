"""Tile binning: which Gaussians touch which screen tile, front to back.

Mirrors gsplat's `isect_tiles` (a Gaussian covers the tiles its 3-sigma square overlaps) but lays the
result out for batched dense work on CPU: tiles are ranked by how many Gaussians they hold, so that a
batch of consecutive tiles has similar list lengths and little padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TileBins:
    """Depth-sorted Gaussian lists for the non-empty tiles of one camera."""

    tile_size: int
    tiles_x: int
    tiles_y: int
    tile_ids: Tensor  # [T] flat tile index (ty * tiles_x + tx) of each non-empty tile, most crowded first
    counts: Tensor  # [T] list length of each of those tiles (non-increasing)
    offsets: Tensor  # [T] start of each tile's list in `gaussian_ids`
    gaussian_ids: Tensor  # [M] concatenated lists, each sorted front to back

    @property
    def num_intersections(self) -> int:
        return int(self.gaussian_ids.numel())

    def padded_lists(self, start: int, stop: int) -> Tensor:
        """Lists of tiles [start, stop) as a [stop - start, max_len] matrix padded with -1."""
        counts = self.counts[start:stop]
        max_len = int(counts[0]) if counts.numel() else 0
        out = torch.full((stop - start, max_len), -1, dtype=torch.long, device=self.gaussian_ids.device)
        if max_len == 0:
            return out
        begin = int(self.offsets[start])
        end = int(self.offsets[stop - 1] + counts[-1])
        flat = self.gaussian_ids[begin:end]
        row = torch.repeat_interleave(torch.arange(stop - start, device=flat.device), counts)
        col = torch.arange(flat.numel(), device=flat.device) - (self.offsets[start:stop] - begin).repeat_interleave(counts)
        out[row, col] = flat
        return out

    def pixel_centers(self, start: int, stop: int) -> Tensor:
        """Pixel-centre coordinates [stop - start, tile_size**2, 2] of tiles [start, stop)."""
        tiles = self.tile_ids[start:stop]
        ty = torch.div(tiles, self.tiles_x, rounding_mode="floor")
        tx = tiles - ty * self.tiles_x
        local = torch.arange(self.tile_size * self.tile_size, device=tiles.device)
        ly = torch.div(local, self.tile_size, rounding_mode="floor")
        lx = local - ly * self.tile_size
        x = (tx[:, None] * self.tile_size + lx[None, :]).float() + 0.5
        y = (ty[:, None] * self.tile_size + ly[None, :]).float() + 0.5
        return torch.stack([x, y], dim=-1)


@torch.no_grad()
def bin_gaussians(means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int) -> TileBins:
    """Bin one camera's projected Gaussians ([N, 2], [N], [N]) into screen tiles."""
    device = means2d.device
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)
    visible = torch.nonzero(radii > 0).squeeze(-1)
    # Front-to-back order first; the stable sort by tile below keeps it inside every tile.
    visible = visible[torch.argsort(depths[visible], stable=True)]
    centre = means2d[visible].detach() / tile_size
    reach = radii[visible].float() / tile_size
    x0 = torch.floor(centre[:, 0] - reach).clamp(0, tiles_x).long()
    x1 = torch.ceil(centre[:, 0] + reach).clamp(0, tiles_x).long()
    y0 = torch.floor(centre[:, 1] - reach).clamp(0, tiles_y).long()
    y1 = torch.ceil(centre[:, 1] + reach).clamp(0, tiles_y).long()
    span_x = x1 - x0
    per_gauss = span_x * (y1 - y0)

    empty = torch.zeros(0, dtype=torch.long, device=device)
    total = int(per_gauss.sum())
    if total == 0:
        return TileBins(tile_size, tiles_x, tiles_y, empty, empty, empty, empty)

    owner = torch.repeat_interleave(torch.arange(visible.numel(), device=device), per_gauss)
    first = torch.cumsum(per_gauss, 0) - per_gauss
    k = torch.arange(total, device=device) - first[owner]
    sx = span_x[owner]
    tile_x = x0[owner] + k % sx
    tile_y = y0[owner] + torch.div(k, sx, rounding_mode="floor")
    tile = tile_y * tiles_x + tile_x

    counts_all = torch.bincount(tile, minlength=tiles_x * tiles_y)
    order = torch.argsort(counts_all, descending=True, stable=True)
    num_nonempty = int((counts_all > 0).sum())
    tile_ids = order[:num_nonempty]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    by_rank = torch.argsort(rank[tile], stable=True)
    counts = counts_all[tile_ids]
    offsets = torch.cumsum(counts, 0) - counts
    return TileBins(
        tile_size=tile_size,
        tiles_x=tiles_x,
        tiles_y=tiles_y,
        tile_ids=tile_ids,
        counts=counts,
        offsets=offsets,
        gaussian_ids=visible[owner[by_rank]],
    )
