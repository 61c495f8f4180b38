"""The compiled tile binning gives exactly the PyTorch binning's `TileBins`."""

from __future__ import annotations

import pytest
import torch

from distilled_gs_ns.rendering.numba_binning import bin_gaussians_numba
from distilled_gs_ns.rendering.tiles import TileBins, bin_gaussians


def assert_same_bins(a: TileBins, b: TileBins) -> None:
    assert (a.tile_size, a.tiles_x, a.tiles_y) == (b.tile_size, b.tiles_x, b.tiles_y)
    for field in ("tile_ids", "counts", "offsets", "gaussian_ids"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and torch.equal(x, y), field


def scene(n: int, width: int, height: int, dtype: torch.dtype, seed: int):
    """Means partly off-screen (so rectangles are clamped), radii 0 (culled) to large, tied depths."""
    gen = torch.Generator().manual_seed(seed)
    means2d = (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2) * torch.tensor([width, height])
    radii = torch.randint(0, 12, (n,), generator=gen, dtype=torch.int32)
    radii[torch.rand(n, generator=gen) < 0.02] = max(width, height)
    depths = torch.randint(1, 20, (n,), generator=gen).to(torch.float64) / 4  # many equal depths: stability
    return means2d.to(dtype), radii, depths.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width,height,tile_size", [(100, 100, 8), (37, 23, 4), (64, 48, 16), (5, 3, 8)])
def test_matches_the_pytorch_binning(dtype, width, height, tile_size) -> None:
    for seed in range(3):
        means2d, radii, depths = scene(3000, width, height, dtype, seed)
        compiled = bin_gaussians_numba(means2d, radii, depths, width, height, tile_size)
        assert_same_bins(compiled, bin_gaussians(means2d, radii, depths, width, height, tile_size))
        assert compiled.num_intersections > 0


def test_rectangles_on_tile_boundaries() -> None:
    """Centres and reaches that land exactly on tile edges round like the PyTorch version."""
    means2d = torch.tensor([[8.0, 8.0], [16.0, 0.0], [0.0, 0.0], [31.999, 7.5], [40.0, 40.0]])
    radii = torch.tensor([8, 1, 3, 0, 4], dtype=torch.int32)
    depths = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert_same_bins(bin_gaussians_numba(means2d, radii, depths, 32, 32, 8), bin_gaussians(means2d, radii, depths, 32, 32, 8))


def test_nothing_visible() -> None:
    means2d, radii, depths = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int32), torch.ones(4)
    bins = bin_gaussians_numba(means2d, radii, depths, 16, 16, 8)
    assert bins.num_intersections == 0 and bins.tile_ids.numel() == 0
    assert_same_bins(bins, bin_gaussians(means2d, radii, depths, 16, 16, 8))
    empty = bin_gaussians_numba(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int32), torch.zeros(0), 16, 16, 8)
    assert empty.num_intersections == 0
