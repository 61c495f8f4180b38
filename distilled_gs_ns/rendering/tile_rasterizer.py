"""Differentiable tile-based alpha compositing in plain PyTorch (the CPU rasteriser).

Semantics follow gsplat 1.4.0's `rasterize_to_pixels` kernel: per pixel, the Gaussians of its tile
are blended front to back with alpha = min(0.999, opacity * exp(-sigma)); contributions with
alpha < 1/255 are skipped, and a pixel stops at the first Gaussian that would bring its transmittance
to 1e-4 or below (that Gaussian excluded). Conics are positive definite after the eps2d blur, so
gsplat's extra `sigma < 0` test never fires and is not repeated here.

Work happens on blocks of [B tiles, P pixels, K Gaussians] whose size is capped, so memory stays
bounded whatever the scene; long tile lists are walked in chunks that carry transmittance. Two
choices make it fast on a CPU:
- sigma is a quadratic form in the pixel position, so for a whole block it is one matmul of
  per-pixel features (1, x, y, x^2, xy, y^2) with per-Gaussian coefficients, in tile-local
  coordinates to keep float32 cancellation small;
- the backward pass reduces over pixels with the same features (moments), again one matmul.
Blocks are kept for the backward pass while they fit `max_cached_elements`; beyond that they are
recomputed, as gsplat's CUDA backward does. The backward also yields gsplat's `absgrad` (per-pixel
sum of |dL/dmeans2d|) for AbsGS-style densification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from distilled_gs_ns.rendering.tiles import TileBins

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 21
DEFAULT_MAX_CHUNK = 1024
DEFAULT_MAX_CACHED_ELEMENTS = 1 << 25


def _pixel_features(tile_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[P, 6] features (1, x, y, x^2, xy, y^2) of pixel centres relative to the tile centre."""
    local = torch.arange(tile_size * tile_size, device=device)
    y = torch.div(local, tile_size, rounding_mode="floor").to(dtype) + 0.5 - 0.5 * tile_size
    x = (local % tile_size).to(dtype) + 0.5 - 0.5 * tile_size
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], dim=-1)


@dataclass
class _BlockGaussians:
    """Per-Gaussian quantities of one block, in the coordinates of each row's tile."""

    ids: Tensor  # [B, K] gaussian index (padding clamped to 0)
    mx: Tensor  # [B, K] mean relative to the tile centre
    my: Tensor
    conic: Tensor  # [B, K, 3]
    opacity: Tensor  # [B, K] (0 for padding)
    neg_sigma_coeffs: Tensor  # [B, 6, K] -sigma = features @ coeffs


def _block_gaussians(
    ids: Tensor, centres: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor
) -> _BlockGaussians:
    valid = ids >= 0
    ids = ids.clamp(min=0)
    mean = means2d[ids]
    mx = mean[..., 0] - centres[:, None, 0]
    my = mean[..., 1] - centres[:, None, 1]
    conic = conics[ids]
    a, b, c = conic[..., 0], conic[..., 1], conic[..., 2]
    # sigma = 0.5 a (mx - x)^2 + b (mx - x)(my - y) + 0.5 c (my - y)^2, expanded in (1, x, y, x^2, xy, y^2).
    coeffs = torch.stack(
        [
            0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my,
            -(a * mx + b * my),
            -(b * mx + c * my),
            0.5 * a,
            b,
            0.5 * c,
        ],
        dim=1,
    )
    return _BlockGaussians(ids, mx, my, conic, opacities[ids] * valid, -coeffs)


@dataclass
class _BlockState:
    """What compositing one block produced; enough to run its backward."""

    raw: Tensor  # [B, P, K] opacity * exp(-sigma), unclamped
    alpha: Tensor  # [B, P, K] alpha actually blended (0 where skipped)
    t_before: Tensor  # [B, P, K] transmittance in front of each Gaussian


def _composite(
    feats: Tensor, gauss: _BlockGaussians, t_in: Tensor, done: Optional[Tensor]
) -> Tuple[_BlockState, Tensor, Optional[Tensor]]:
    """Blend one block front to back, given the incoming transmittance [B, P] and ended pixels."""
    raw = torch.exp(torch.matmul(feats, gauss.neg_sigma_coeffs)).mul_(gauss.opacity[:, None, :])
    alpha = raw.clamp(max=ALPHA_MAX)
    alpha.masked_fill_(alpha < ALPHA_MIN, 0.0)
    t_after = torch.cumprod(1.0 - alpha, dim=-1).mul_(t_in[..., None])
    ended = t_after <= T_MIN
    if done is not None:
        ended |= done[..., None]
    if bool(ended.any()):
        # Drop the Gaussian that would end the pixel and all behind it (t_after only falls along K).
        done = ended.any(dim=-1)
        alpha.masked_fill_(ended, 0.0)
        t_after = torch.cumprod(1.0 - alpha, dim=-1).mul_(t_in[..., None])
    t_before = t_after / (1.0 - alpha)
    return _BlockState(raw, alpha, t_before), t_after[..., -1].contiguous(), done


def _tile_batches(bins: TileBins, pixels: int, max_block_elements: int, max_chunk: int) -> Iterator[Tuple[int, int, int]]:
    """(start, stop, chunk) ranges of tiles, sized so one block stays under `max_block_elements`."""
    counts = bins.counts.tolist()
    start = 0
    while start < len(counts):
        chunk = max(1, min(counts[start], max_chunk))
        stop = min(len(counts), start + max(1, max_block_elements // (pixels * chunk)))
        yield start, stop, chunk
        start = stop


def _to_tiles(image: Tensor, tile_size: int, tiles_x: int, tiles_y: int) -> Tensor:
    """[H, W, D] -> [tiles_y * tiles_x, tile_size**2, D], zero padded at the right and bottom."""
    h, w, d = image.shape
    padded = image.new_zeros(tiles_y * tile_size, tiles_x * tile_size, d)
    padded[:h, :w] = image
    return (
        padded.view(tiles_y, tile_size, tiles_x, tile_size, d)
        .permute(0, 2, 1, 3, 4)
        .reshape(tiles_y * tiles_x, tile_size * tile_size, d)
    )


def _from_tiles(tiles: Tensor, tile_size: int, tiles_x: int, tiles_y: int, height: int, width: int) -> Tensor:
    d = tiles.shape[-1]
    image = (
        tiles.view(tiles_y, tiles_x, tile_size, tile_size, d)
        .permute(0, 2, 1, 3, 4)
        .reshape(tiles_y * tile_size, tiles_x * tile_size, d)
    )
    return image[:height, :width].contiguous()


def _tile_centres(bins: TileBins, start: int, stop: int, dtype: torch.dtype) -> Tensor:
    tiles = bins.tile_ids[start:stop]
    ty = torch.div(tiles, bins.tiles_x, rounding_mode="floor")
    tx = tiles - ty * bins.tiles_x
    return (torch.stack([tx, ty], dim=-1).to(dtype) + 0.5) * bins.tile_size


class _RasterizeTiles(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        means2d: Tensor,  # [C, N, 2]
        conics: Tensor,  # [C, N, 3]
        opacities: Tensor,  # [C, N]
        colors: Tensor,  # [C, N, D]
        bins: List[TileBins],
        width: int,
        height: int,
        absgrad: bool,
        limits: Tuple[int, int, int],
    ) -> Tuple[Tensor, Tensor]:
        max_block, max_chunk, max_cached = limits
        channels = colors.shape[-1]
        renders, alphas, sums, caches = [], [], [], []
        cached_elements = 0
        for cam, cam_bins in enumerate(bins):
            ts = cam_bins.tile_size
            pixels = ts * ts
            feats = _pixel_features(ts, colors.dtype, colors.device)
            color_sum = colors.new_zeros(cam_bins.tiles_x * cam_bins.tiles_y, pixels, channels)
            t_final = colors.new_ones(cam_bins.tiles_x * cam_bins.tiles_y, pixels)
            # Each cached entry keeps the block's outgoing transmittance and ended-pixel mask too, so
            # that a block recomputed in backward after a cached one starts from the right state.
            cache: List[Optional[Tuple[_BlockState, Tensor, Optional[Tensor]]]] = []
            for start, stop, chunk in _tile_batches(cam_bins, pixels, max_block, max_chunk):
                lists = cam_bins.padded_lists(start, stop)
                centres = _tile_centres(cam_bins, start, stop, colors.dtype)
                t = colors.new_ones(stop - start, pixels)
                done: Optional[Tensor] = None
                acc = colors.new_zeros(stop - start, pixels, channels)
                for k0 in range(0, lists.shape[1], chunk):
                    gauss = _block_gaussians(lists[:, k0 : k0 + chunk], centres, means2d[cam], conics[cam], opacities[cam])
                    state, t, done = _composite(feats, gauss, t, done)
                    acc.baddbmm_(state.alpha * state.t_before, colors[cam][gauss.ids])
                    if cached_elements + 3 * state.raw.numel() <= max_cached:
                        cached_elements += 3 * state.raw.numel()
                        cache.append((state, t, done))
                    else:
                        cache.append(None)
                rows = cam_bins.tile_ids[start:stop]
                color_sum[rows] = acc
                t_final[rows] = t
            renders.append(_from_tiles(color_sum, ts, cam_bins.tiles_x, cam_bins.tiles_y, height, width))
            alphas.append(_from_tiles((1.0 - t_final)[..., None], ts, cam_bins.tiles_x, cam_bins.tiles_y, height, width))
            sums.append((color_sum, t_final))
            caches.append(cache)
        ctx.bins, ctx.sums, ctx.caches = bins, sums, caches
        ctx.absgrad, ctx.means2d, ctx.limits = absgrad, means2d, limits
        ctx.save_for_backward(means2d, conics, opacities, colors)
        return torch.stack(renders), torch.stack(alphas)

    @staticmethod
    def backward(ctx, grad_render: Tensor, grad_alpha: Tensor):  # type: ignore[override]
        means2d, conics, opacities, colors = ctx.saved_tensors
        max_block, max_chunk, _ = ctx.limits
        g_means2d = torch.zeros_like(means2d)
        g_abs = torch.zeros_like(means2d) if ctx.absgrad else None
        g_conics = torch.zeros_like(conics)
        g_opac = torch.zeros_like(opacities)
        g_colors = torch.zeros_like(colors)
        for cam, cam_bins in enumerate(ctx.bins):
            color_sum, t_final = ctx.sums[cam]
            cache = iter(ctx.caches[cam])
            ts, tx, ty = cam_bins.tile_size, cam_bins.tiles_x, cam_bins.tiles_y
            pixels = ts * ts
            feats = _pixel_features(ts, colors.dtype, colors.device)
            feats_t = feats.t().contiguous()  # [6, P]
            g_img = _to_tiles(grad_render[cam], ts, tx, ty)
            # dL/dalpha_k = T_k (c_k . g) - (S_k - T_final g_alpha) / (1 - alpha_k), with
            # S_k = sum_{j > k} w_j (c_j . g) = total - prefix_k.
            rest_all = (color_sum * g_img).sum(-1) - t_final * _to_tiles(grad_alpha[cam], ts, tx, ty)[..., 0]
            cam_colors = colors[cam]
            for start, stop, chunk in _tile_batches(cam_bins, pixels, max_block, max_chunk):
                rows = cam_bins.tile_ids[start:stop]
                g = g_img[rows]
                rest = rest_all[rows]
                lists = cam_bins.padded_lists(start, stop)
                centres = _tile_centres(cam_bins, start, stop, colors.dtype)
                t = colors.new_ones(stop - start, pixels)
                done: Optional[Tensor] = None
                prefix = colors.new_zeros(stop - start, pixels)
                for k0 in range(0, lists.shape[1], chunk):
                    gauss = _block_gaussians(lists[:, k0 : k0 + chunk], centres, means2d[cam], conics[cam], opacities[cam])
                    entry = next(cache)
                    if entry is None:
                        state, t, done = _composite(feats, gauss, t, done)
                    else:
                        state, t, done = entry
                    col = cam_colors[gauss.ids]  # [B, K, D]
                    weight = state.alpha * state.t_before
                    cg = torch.bmm(g, col.transpose(1, 2))  # [B, P, K]
                    prefix_incl = torch.cumsum(weight * cg, dim=-1).add_(prefix[..., None])
                    g_alpha = state.t_before * cg - (rest[..., None] - prefix_incl) / (1.0 - state.alpha)
                    live = (state.alpha > 0) & (state.raw <= ALPHA_MAX)
                    g_raw = torch.where(live, g_alpha, torch.zeros_like(g_alpha))
                    g_neg_sigma = g_raw * state.raw  # dL/d(-sigma)
                    flat = gauss.ids.reshape(-1)
                    safe_opacity = torch.where(gauss.opacity > 0, gauss.opacity, torch.ones_like(gauss.opacity))
                    g_opac[cam].index_add_(0, flat, (g_neg_sigma.sum(1) / safe_opacity).reshape(-1))
                    # Moments over pixels: m[:, j, k] = sum_p feats[p, j] * dL/dsigma[p, k].
                    m = torch.matmul(feats_t, g_neg_sigma).neg_()
                    s0, sx, sy, sxx, sxy, syy = m.unbind(1)
                    mx, my = gauss.mx, gauss.my
                    sum_dx = mx * s0 - sx  # sum_p dL/dsigma * (mean.x - x)
                    sum_dy = my * s0 - sy
                    sum_dxdx = mx * mx * s0 - 2 * mx * sx + sxx
                    sum_dxdy = mx * my * s0 - mx * sy - my * sx + sxy
                    sum_dydy = my * my * s0 - 2 * my * sy + syy
                    a, b, c = gauss.conic.unbind(-1)
                    g_mean = torch.stack([a * sum_dx + b * sum_dy, b * sum_dx + c * sum_dy], dim=-1)
                    g_means2d[cam].index_add_(0, flat, g_mean.reshape(-1, 2))
                    g_con = torch.stack([0.5 * sum_dxdx, sum_dxdy, 0.5 * sum_dydy], dim=-1)
                    g_conics[cam].index_add_(0, flat, g_con.reshape(-1, 3))
                    if g_abs is not None:
                        # Per-pixel dL/dmean.x = dL/dsigma * (a dx + b dy), linear in (x, y).
                        lin_x = torch.stack([a * mx + b * my, -a, -b], dim=1)
                        lin_y = torch.stack([b * mx + c * my, -b, -c], dim=1)
                        abs_x = (torch.matmul(feats[:, :3], lin_x) * g_neg_sigma).abs_().sum(1)
                        abs_y = (torch.matmul(feats[:, :3], lin_y) * g_neg_sigma).abs_().sum(1)
                        g_abs[cam].index_add_(0, flat, torch.stack([abs_x, abs_y], dim=-1).reshape(-1, 2))
                    g_colors[cam].index_add_(0, flat, torch.bmm(weight.transpose(1, 2), g).reshape(-1, g.shape[-1]))
                    prefix = prefix_incl[..., -1]
        ctx.caches = None
        if g_abs is not None:
            ctx.means2d.absgrad = g_abs
        return g_means2d, g_conics, g_opac, g_colors, None, None, None, None, None


def rasterize_tiles(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    bins: List[TileBins],
    width: int,
    height: int,
    absgrad: bool = False,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
    max_chunk: int = DEFAULT_MAX_CHUNK,
    max_cached_elements: int = DEFAULT_MAX_CACHED_ELEMENTS,
) -> Tuple[Tensor, Tensor]:
    """Blend projected Gaussians ([C, N, ...]) into images [C, H, W, D] and alphas [C, H, W, 1].

    After backward, `means2d.absgrad` holds the per-pixel absolute gradient sums when `absgrad` is set.
    """
    limits = (max_block_elements, max_chunk, max_cached_elements)
    return _RasterizeTiles.apply(means2d, conics, opacities, colors, bins, width, height, absgrad, limits)
