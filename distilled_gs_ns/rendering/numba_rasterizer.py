"""Differentiable tile compositing compiled with numba: the fast CPU path of the tile rasteriser.

Same contract and semantics as `tile_rasterizer.rasterize_tiles` (gsplat 1.4.0's
`rasterize_to_pixels`), organised like gsplat's CUDA kernels instead of dense blocks:
- forward: one task per non-empty tile, walking the tile's Gaussians front to back over its pixels,
  until every pixel has terminated. Per pixel it keeps the final transmittance and one past the list
  index of the last Gaussian blended; per list entry, the pixel rows in which it blended anything;
- backward: the same walk back to front from there, over those rows only, recovering the
  transmittance in front of each Gaussian by dividing by (1 - alpha) as gsplat does. A tile's sums
  over its pixels go to one slot per list entry and are added up per Gaussian afterwards, serially:
  threads never write to shared memory and results do not depend on scheduling.

Speed comes from the innermost loops running over a tile's pixels, which LLVM vectorises:
- libm's `expf` would stop that (numba has no vector maths library without SVML), so float32 uses a
  branch-free Cephes `expf` (within about 1 ulp of libm); float64 uses `math.exp`;
- per-tile state lives in rows of one flat scratch array at constant unsigned offsets, so LLVM needs
  no run-time alias checks and numba no negative-index wraparound (either one costs more than the
  short pixel loops, or stops vectorisation);
- a Gaussian only visits the rows of a tile where its alpha can reach 1/255 (a conservative bound
  that also covers float32 rounding), and the backward only the rows where it blended a pixel.
Compiled code is cached on disk (`cache=True`): only the first process on a machine compiles.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload
from torch import Tensor

from distilled_gs_ns.rendering.numba_launch import NUMPY_DTYPES, as_numpy, launch
from distilled_gs_ns.rendering.tile_rasterizer import ALPHA_MAX, ALPHA_MIN, T_MIN
from distilled_gs_ns.rendering.tiles import TileBins

MAX_TILE_SIZE = 16
LANES = 8
"""Tile pixels are padded to a multiple of this; per-Gaussian sums over pixels keep this many
partial sums, which lets LLVM vectorise them without reordering float additions itself."""
NUM_PARTIALS = 8
"""Per-intersection sums before the colours: dmean2d (2), dconic (3), dopacity, absgrad (2)."""
_STRIDE = MAX_TILE_SIZE * MAX_TILE_SIZE + 16
"""Row length of the scratch arrays; the padding keeps rows off 4 KiB-aliasing offsets."""
_ROUNDING_SLACK = 16.0 * 2.0**-24
"""Relative error bound of a float32 sigma, per unit of (1 + rho) / (1 - rho) (rho: conic correlation)."""
_CHUNK = 32
"""Gaussians fetched from the packed table at a time."""
_LIVE_CHECK_EVERY = 16
"""The forward walk narrows its pixel range to the blocks of pixels still running (and stops when
none is left) once per this many Gaussians: tracking ended pixels inside the pixel loop would make
it an int64 reduction, which halves its vector width."""

# Exact in float32 and float64; as float32 globals they keep float32 code in float32.
_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_U_ZERO = np.uint64(0)
_U_LANES = np.uint64(LANES)


def _row(index: int) -> np.uint64:
    return np.uint64(index * _STRIDE)


# Forward scratch rows: pixel centres, transmittance, still-running flag, weight, then a colour sum
# per channel.
_F_PX, _F_PY, _F_TRANS, _F_LIVE, _F_WEIGHT, _F_ACC = (_row(r) for r in range(6))
# Backward scratch rows: pixel centres, transmittance, sum behind of weight * (colour . dL/dimage),
# colour . dL/dimage, weight, T_final * dL/dalpha, LANES partial sums, the per-pixel terms of the
# per-Gaussian sums (NUM_PARTIALS, then one per channel), then dL/dimage per channel.
_B_PX, _B_PY, _B_TRANS, _B_BEHIND, _B_CG, _B_WEIGHT, _B_TF_G_ALPHA, _LANES, _B_TERMS = (_row(r) for r in range(9))
_B_T0, _B_T1, _B_T2, _B_T3, _B_T4, _B_T5, _B_T6, _B_T7 = (_row(8 + r) for r in range(NUM_PARTIALS))
# Columns of the packed per-Gaussian table (then one colour per channel): one or two cache lines per
# Gaussian instead of one per input array, which matters once they no longer fit in L2.
_G_MX, _G_MY, _G_A, _G_B, _G_C, _G_OPACITY, _G_REACH, _G_COLOR = range(8)



@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=False)
def _expf(x):
    """Cephes `expf`: round(x / ln 2) splits off a power of two, a degree-6 polynomial does the rest."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(x * np.float32(1.44269504088896341) + _HALF)
    r = x - n * np.float32(0.693359375)
    r = r - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * r * r + r + _ONE
    return y * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


def _exp(x):
    """exp that LLVM can vectorise in float32; typed by `overload` below."""
    raise NotImplementedError


@overload(_exp, inline="always")
def _exp_overload(x):
    if x == types.float32:
        return lambda x: _expf(x)
    return lambda x: math.exp(x)


@njit(inline="always", fastmath=False)
def _lane_sum(s, row, p0, p1):
    """Sum of s[row + p0 : row + p1] (p0 < p1, multiples of LANES) through LANES partial sums kept
    in scratch row _LANES."""
    for j in range(_U_LANES):
        s[_LANES + j] = s[row + p0 + j]
    for i in range(p0 + _U_LANES, p1, _U_LANES):
        for j in range(_U_LANES):
            s[_LANES + j] += s[row + i + j]
    total = s[_LANES]
    for j in range(1, LANES):
        total += s[_LANES + j]
    return total


@njit(inline="always", fastmath=False)
def _pixel_xy(tile, p, tile_size, tiles_x):
    """Image coordinates of pixel `p` (row-major) of a tile."""
    row = p // tile_size
    return (tile % tiles_x) * tile_size + p - row * tile_size, (tile // tiles_x) * tile_size + row


@njit(cache=True, fastmath=False)
def _pack_gaussians(means2d, conics, opacities, colors, alpha_min):
    """[N, 7 + D] table of mean, conic, opacity, vertical reach and colours.

    The reach is the vertical distance from the mean beyond which no pixel gets alpha >= alpha_min
    as the kernels compute it (+inf where that is not established); tiles skip rows beyond it. A
    row at vertical offset dy has sigma >= dy^2 det / (2 a) at every pixel (minimum over x).
    Rounding makes the computed sigma at worst (1 - slack) times the exact one, where slack grows
    with the conic's correlation rho; nearly degenerate conics are not culled at all.
    """
    n, channels = colors.shape
    out = np.empty((n, _G_COLOR + channels), means2d.dtype)
    for g in range(n):
        a, b, c = np.float64(conics[g, 0]), np.float64(conics[g, 1]), np.float64(conics[g, 2])
        det = a * c - b * b
        cut = math.log(np.float64(opacities[g]) / np.float64(alpha_min)) + 1e-4  # alpha < alpha_min beyond
        reach = np.inf
        if a > 0.0 and det > 0.0 and cut > 1e-3:
            rho = abs(b) / math.sqrt(a * c)
            slack = _ROUNDING_SLACK * (1.0 + rho) / (1.0 - rho)
            if slack < 0.5:
                # The relative margin covers rounding the reach to float32.
                reach = math.sqrt(2.0 * cut * a / (det * (1.0 - slack))) * (1.0 + 1e-6) + 1e-3
        out[g, _G_MX] = means2d[g, 0]
        out[g, _G_MY] = means2d[g, 1]
        out[g, _G_A] = conics[g, 0]
        out[g, _G_B] = conics[g, 1]
        out[g, _G_C] = conics[g, 2]
        out[g, _G_OPACITY] = opacities[g]
        out[g, _G_REACH] = reach
        for d in range(channels):
            out[g, _G_COLOR + d] = colors[g, d]
    return out


@njit(inline="always", fastmath=False)
def _gather(gauss, gaussian_ids, first, n, buf):
    """buf[:n] = gauss[gaussian_ids[first : first + n]]: a tile's next Gaussians, fetched in one tight
    loop so that their cache misses overlap instead of stalling the pixel loops one at a time."""
    for j in range(n):
        g = gaussian_ids[first + j]
        for f in range(gauss.shape[1]):
            buf[j, f] = gauss[g, f]


@njit(inline="always", fastmath=False)
def _pixel_span(my, reach, y0, tile_size, pixels):
    """Pixels [p0, p1) of a tile (whole rows within `reach` of `my`, widened to multiples of LANES)
    outside of which the Gaussian's alpha is below alpha_min: skipping them changes nothing."""
    centre = np.float64(my) - y0 - 0.5  # row r has its pixel centres at y0 + r + 0.5
    lo = min(centre - reach, float(tile_size))
    hi = max(centre + reach, -1.0)
    if not (lo > 0.0):  # also NaN
        lo = 0.0
    if not (hi < tile_size):
        hi = float(tile_size)
    r0 = int(math.ceil(lo))
    r1 = int(math.floor(hi)) + 1
    if r1 > tile_size:
        r1 = tile_size
    if r1 <= r0:
        return _U_ZERO, _U_ZERO
    return np.uint64((r0 * tile_size // LANES) * LANES), np.uint64(min(pixels, -(-r1 * tile_size // LANES) * LANES))


@njit(inline="always", fastmath=False)
def _any_positive(s, first):
    """Whether any of the LANES values from s[first] is positive."""
    found = False
    for j in range(_U_LANES):
        found |= s[first + j] > _ZERO
    return found


@njit(inline="always", fastmath=False)
def _live_blocks(s, pixels):
    """[lo, hi): the LANES-aligned pixel range holding every still-running pixel (empty if none)."""
    lo, hi = np.uint64(pixels), _U_ZERO
    for block in range(_U_ZERO, np.uint64(pixels), _U_LANES):
        live = False
        for j in range(_U_LANES):
            live |= s[_F_LIVE + block + j] != _ZERO
        if live:
            lo = min(lo, block)
            hi = block + _U_LANES
    return lo, hi


@njit(fastmath=False)
def _composite_tile(
    i, gauss, tile_ids, offsets, counts, gaussian_ids, tile_size, tiles_x, limits, render, alpha, t_final, last, spans,
):  # fmt: skip
    """Tile `i` of `_forward_kernel`."""
    alpha_min, alpha_max, t_min = limits
    height, width, channels = render.shape
    pixels = t_final.shape[1]
    tile = tile_ids[i]
    y0 = (tile // tiles_x) * tile_size
    s = np.zeros((6 + channels) * _STRIDE, gauss.dtype)
    buf = np.empty((_CHUNK, gauss.shape[1]), gauss.dtype)
    stop = last[i]
    for p in range(_U_ZERO, np.uint64(pixels)):
        x, y = _pixel_xy(tile, np.int64(p), tile_size, tiles_x)
        inside = (p < tile_size * tile_size) & (x < width) & (y < height)
        s[_F_PX + p] = x + _HALF
        s[_F_PY + p] = y + _HALF
        s[_F_TRANS + p] = _ONE
        s[_F_LIVE + p] = _ONE if inside else _ZERO
        stop[p] = 0
    start, count = offsets[i], counts[i]
    live_lo, live_hi = _live_blocks(s, pixels)
    for k in range(count):
        j = k % _CHUNK
        if j == 0:
            _gather(gauss, gaussian_ids, start + k, min(_CHUNK, count - k), buf)
        mx, my = buf[j, _G_MX], buf[j, _G_MY]
        ca, b, cc = buf[j, _G_A], buf[j, _G_B], buf[j, _G_C]
        opacity = buf[j, _G_OPACITY]
        p0, p1 = _pixel_span(my, buf[j, _G_REACH], y0, tile_size, pixels)
        p0, p1 = max(p0, live_lo), min(p1, live_hi)
        p1 = max(p0, p1)
        ha, hc = _HALF * ca, _HALF * cc
        index = np.int32(k + 1)
        for p in range(p0, p1):
            dx = mx - s[_F_PX + p]
            dy = my - s[_F_PY + p]
            a = min(alpha_max, opacity * _exp(-(ha * dx * dx + hc * dy * dy + b * dx * dy)))
            t = s[_F_TRANS + p]
            t_next = t * (_ONE - a)
            visible = (s[_F_LIVE + p] != _ZERO) & (a >= alpha_min)
            ended = visible & (t_next <= t_min)
            blend = visible & (t_next > t_min)
            s[_F_LIVE + p] = _ZERO if ended else s[_F_LIVE + p]
            s[_F_WEIGHT + p] = a * t if blend else _ZERO
            s[_F_TRANS + p] = t_next if blend else t
            stop[p] = index if blend else stop[p]
        for d in range(channels):
            c = buf[j, _G_COLOR + d]
            acc = _F_ACC + np.uint64(d * _STRIDE)
            for p in range(p0, p1):
                s[acc + p] += s[_F_WEIGHT + p] * c
        # Narrow the span to the blocks with blended pixels, for the backward pass.
        while p0 < p1 and not _any_positive(s, _F_WEIGHT + p0):
            p0 += _U_LANES
        while p1 > p0 and not _any_positive(s, _F_WEIGHT + p1 - _U_LANES):
            p1 -= _U_LANES
        spans[start + k, 0] = p0
        spans[start + k, 1] = p1
        if k % _LIVE_CHECK_EVERY == _LIVE_CHECK_EVERY - 1:
            live_lo, live_hi = _live_blocks(s, pixels)
            if live_lo >= live_hi:
                break
    for p in range(_U_ZERO, np.uint64(pixels)):
        t_final[i, p] = s[_F_TRANS + p]
    for p in range(tile_size * tile_size):
        x, y = _pixel_xy(tile, p, tile_size, tiles_x)
        if x < width and y < height:
            for d in range(channels):
                render[y, x, d] = s[_F_ACC + np.uint64(d * _STRIDE + p)]
            alpha[y, x, 0] = _ONE - s[_F_TRANS + np.uint64(p)]


@njit(parallel=True, cache=True, fastmath=False)
def _forward_kernel(
    gauss, tile_ids, offsets, counts, gaussian_ids, tile_size, tiles_x, limits, render, alpha, t_final, last, spans,
):  # fmt: skip
    """Blend every non-empty tile front to back; writes render [H, W, D], alpha [H, W, 1], per tile
    and padded pixel the final transmittance and one past the last blended list index, and per
    walked list entry the pixel range [spans[j, 0], spans[j, 1]) (multiples of LANES) outside of
    which it blended no pixel."""
    for i in prange(tile_ids.shape[0]):
        _composite_tile(
            i, gauss, tile_ids, offsets, counts, gaussian_ids, tile_size, tiles_x, limits, render, alpha, t_final,
            last, spans,
        )  # fmt: skip


@njit(fastmath=False)
def _backprop_tile(
    i, gauss, tile_ids, offsets, counts, gaussian_ids, tile_size, tiles_x, limits, t_final, last, spans,
    grad_render, grad_alpha, partials,
):  # fmt: skip
    """Tile `i` of `_backward_kernel`."""
    alpha_min, alpha_max, t_min = limits
    height, width, channels = grad_render.shape
    pixels = t_final.shape[1]
    n_terms = partials.shape[1]
    g_img = _B_TERMS + np.uint64(n_terms * _STRIDE)
    tile = tile_ids[i]
    s = np.zeros((8 + n_terms + channels) * _STRIDE, gauss.dtype)
    buf = np.empty((_CHUNK, gauss.shape[1]), gauss.dtype)
    stop = last[i]
    k_end = 0
    for p in range(_U_ZERO, np.uint64(pixels)):
        x, y = _pixel_xy(tile, np.int64(p), tile_size, tiles_x)
        s[_B_PX + p] = x + _HALF
        s[_B_PY + p] = y + _HALF
        s[_B_TRANS + p] = t_final[i, p]
        k_end = max(k_end, stop[p])
        if p < tile_size * tile_size and x < width and y < height:
            for d in range(channels):
                s[g_img + np.uint64(d * _STRIDE) + p] = grad_render[y, x, d]
            s[_B_TF_G_ALPHA + p] = t_final[i, p] * grad_alpha[y, x, 0]
    start = offsets[i]
    partials[start + k_end : start + counts[i]] = _ZERO
    first = k_end
    for k in range(k_end - 1, -1, -1):
        if k < first:
            first = max(0, k + 1 - _CHUNK)
            _gather(gauss, gaussian_ids, start + first, k + 1 - first, buf)
        j = k - first
        mx, my = buf[j, _G_MX], buf[j, _G_MY]
        p0, p1 = np.uint64(spans[start + k, 0]), np.uint64(spans[start + k, 1])
        if p0 == p1:
            partials[start + k] = _ZERO
            continue
        ca, b, cc = buf[j, _G_A], buf[j, _G_B], buf[j, _G_C]
        opacity = buf[j, _G_OPACITY]
        ha, hc = _HALF * ca, _HALF * cc
        for p in range(p0, p1):
            s[_B_CG + p] = _ZERO
        for d in range(channels):
            c = buf[j, _G_COLOR + d]
            g_row = g_img + np.uint64(d * _STRIDE)
            for p in range(p0, p1):
                s[_B_CG + p] += c * s[g_row + p]
        for p in range(p0, p1):
            dx = mx - s[_B_PX + p]
            dy = my - s[_B_PY + p]
            vis = _exp(-(ha * dx * dx + hc * dy * dy + b * dx * dy))
            raw = opacity * vis
            a = min(alpha_max, raw)
            blended = (k < stop[p]) & (a >= alpha_min)
            ra = _ONE / (_ONE - a)
            t = s[_B_TRANS + p] * ra if blended else s[_B_TRANS + p]
            s[_B_TRANS + p] = t
            cg = s[_B_CG + p]
            w = a * t if blended else _ZERO
            s[_B_WEIGHT + p] = w
            v_alpha = cg * t - s[_B_BEHIND + p] * ra + s[_B_TF_G_ALPHA + p] * ra
            s[_B_BEHIND + p] += w * cg
            # A clamped alpha passes no gradient to opacity, mean or conic (as in gsplat).
            v_alpha = v_alpha if blended & (raw <= alpha_max) else _ZERO
            v_sigma = -raw * v_alpha
            gx = v_sigma * (ca * dx + b * dy)
            gy = v_sigma * (b * dx + cc * dy)
            s[_B_T0 + p] = gx
            s[_B_T1 + p] = gy
            s[_B_T2 + p] = _HALF * v_sigma * dx * dx
            s[_B_T3 + p] = v_sigma * dx * dy
            s[_B_T4 + p] = _HALF * v_sigma * dy * dy
            s[_B_T5 + p] = vis * v_alpha
            s[_B_T6 + p] = abs(gx)
            s[_B_T7 + p] = abs(gy)
        for d in range(channels):
            g_row = g_img + np.uint64(d * _STRIDE)
            term = _B_TERMS + np.uint64((NUM_PARTIALS + d) * _STRIDE)
            for p in range(p0, p1):
                s[term + p] = s[_B_WEIGHT + p] * s[g_row + p]
        for q in range(n_terms):
            partials[start + k, q] = _lane_sum(s, _B_TERMS + np.uint64(q * _STRIDE), p0, p1)


@njit(parallel=True, cache=True, fastmath=False)
def _backward_kernel(
    gauss, tile_ids, offsets, counts, gaussian_ids, tile_size, tiles_x, limits, t_final, last, spans,
    grad_render, grad_alpha, partials,
):  # fmt: skip
    """Walk every tile back to front over the pixels each Gaussian blended; partials[j] gets the
    tile's sums over pixels for list entry j (columns: dmean2d x/y, dconic a/b/c, dopacity,
    |dmean2d| x/y, dcolor...)."""
    for i in prange(tile_ids.shape[0]):
        _backprop_tile(
            i, gauss, tile_ids, offsets, counts, gaussian_ids, tile_size, tiles_x, limits, t_final, last, spans,
            grad_render, grad_alpha, partials,
        )  # fmt: skip


@njit(cache=True, fastmath=False)
def _reduce_partials(gaussian_ids, partials, out):
    """out[gaussian_ids[j]] += partials[j], serially in list order (deterministic)."""
    for j in range(gaussian_ids.shape[0]):
        g = gaussian_ids[j]
        for q in range(partials.shape[1]):
            out[g, q] += partials[j, q]


def _padded_pixels(tile_size: int) -> int:
    return -(-tile_size * tile_size // LANES) * LANES


def _bins_arrays(bins: TileBins) -> Tuple[np.ndarray, ...]:
    return tuple(as_numpy(t) for t in (bins.tile_ids, bins.offsets, bins.counts, bins.gaussian_ids))


class _RasterizeTilesNumba(torch.autograd.Function):
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
    ) -> Tuple[Tensor, Tensor]:
        if means2d.device.type != "cpu":
            raise ValueError(f"the numba compositor runs on CPU tensors, got {means2d.device}")
        if means2d.dtype not in NUMPY_DTYPES or any(t.dtype != means2d.dtype for t in (conics, opacities, colors)):
            raise TypeError("the numba compositor needs float32 or float64 inputs of one dtype")
        n_cams, _, channels = colors.shape
        render = means2d.new_zeros(n_cams, height, width, channels)
        alpha = means2d.new_zeros(n_cams, height, width, 1)
        limits = _limits(means2d.dtype)
        inputs, states = [], []
        for cam, cam_bins in enumerate(bins):
            if cam_bins.tile_size > MAX_TILE_SIZE:
                raise ValueError(
                    f"the numba compositor supports tiles up to {MAX_TILE_SIZE} pixels, got {cam_bins.tile_size}"
                )
            gauss = _pack_gaussians(*(as_numpy(t[cam]) for t in (means2d, conics, opacities, colors)), limits[0])
            cam_inputs = (gauss, *_bins_arrays(cam_bins))
            n_tiles = int(cam_bins.tile_ids.numel())
            t_final = np.empty((n_tiles, _padded_pixels(cam_bins.tile_size)), NUMPY_DTYPES[means2d.dtype])
            last = np.empty(t_final.shape, np.int32)
            spans = np.empty((cam_bins.num_intersections, 2), np.uint16)
            if n_tiles:
                launch(
                    _forward_kernel, *cam_inputs, cam_bins.tile_size, cam_bins.tiles_x, limits,
                    render[cam].numpy(), alpha[cam].numpy(), t_final, last, spans,
                    chunksize=1,
                )  # fmt: skip
            inputs.append(cam_inputs)
            states.append((t_final, last, spans))
        ctx.bins, ctx.inputs, ctx.states, ctx.absgrad, ctx.means2d = bins, inputs, states, absgrad, means2d
        return render, alpha

    @staticmethod
    def backward(ctx, grad_render: Tensor, grad_alpha: Tensor):  # type: ignore[override]
        n_cams, n, channels = len(ctx.bins), ctx.means2d.shape[1], grad_render.shape[-1]
        grads = grad_render.new_zeros(n_cams, n, NUM_PARTIALS + channels)
        limits = _limits(grad_render.dtype)
        grad_render, grad_alpha = grad_render.contiguous(), grad_alpha.contiguous()
        for cam, cam_bins in enumerate(ctx.bins):
            t_final, last, spans = ctx.states[cam]
            if not t_final.shape[0]:
                continue
            partials = np.empty((cam_bins.num_intersections, NUM_PARTIALS + channels), t_final.dtype)
            launch(
                _backward_kernel, *ctx.inputs[cam], cam_bins.tile_size, cam_bins.tiles_x, limits, t_final, last,
                spans, grad_render[cam].numpy(), grad_alpha[cam].numpy(), partials, chunksize=1,
            )  # fmt: skip
            _reduce_partials(ctx.inputs[cam][4], partials, grads[cam].numpy())
        ctx.inputs = ctx.states = None
        if ctx.absgrad:
            ctx.means2d.absgrad = grads[..., 6:8].contiguous()
        return (
            grads[..., 0:2].contiguous(),
            grads[..., 2:5].contiguous(),
            grads[..., 5].contiguous(),
            grads[..., NUM_PARTIALS:].contiguous(),
            None,
            None,
            None,
            None,
        )


def _limits(dtype: torch.dtype) -> Tuple[np.floating, np.floating, np.floating]:
    """gsplat's thresholds in the working precision (typed scalars keep float32 kernels in float32)."""
    cast = NUMPY_DTYPES[dtype]
    return cast(ALPHA_MIN), cast(ALPHA_MAX), cast(T_MIN)


def rasterize_tiles_numba(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    bins: List[TileBins],
    width: int,
    height: int,
    absgrad: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Blend projected Gaussians ([C, N, ...], CPU) into images [C, H, W, D] and alphas [C, H, W, 1].

    After backward, `means2d.absgrad` holds the per-pixel absolute gradient sums when `absgrad` is set.
    """
    return _RasterizeTilesNumba.apply(means2d, conics, opacities, colors, bins, width, height, absgrad)
