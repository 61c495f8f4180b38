"""CPU tests of the PyTorch tile rasteriser (`distilled_gs_ns.rendering`).

The tile rasteriser (hand-written backward, blocks, chunks, cache) is checked against the dense
reference (all pixels x all Gaussians, autograd), against closed-form renders of single Gaussians,
and against gsplat's own densification strategy consuming its `info` dict.

A note on the 2D scenes below: gsplat (and the tile rasteriser) only blend a Gaussian into the tiles
its 3-sigma square touches, while the dense reference blends it everywhere. A Gaussian can exceed
1/255 alpha a little beyond 3 sigma when its opacity is above exp(4.5)/255 ~= 0.35, so where the two
are compared the scenes either give radii of 3.5 sigma (beyond which alpha < 1/255 for any opacity
<= 1: sigma_maha^2 > 2 ln 255 ~= 11.1 > 3.33^2) or keep opacities below 0.35.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, Optional

import pytest
import torch

from distilled_gs_ns.rendering import rasterize, resolve_backend
from distilled_gs_ns.rendering.dense_reference import rasterize_dense
from distilled_gs_ns.rendering.projection import colors_from_sh, project_gaussians
from distilled_gs_ns.rendering.tile_rasterizer import (
    ALPHA_MAX,
    ALPHA_MIN,
    T_MIN,
    _tile_batches,
    rasterize_tiles,
)
from distilled_gs_ns.rendering.tiles import bin_gaussians
from distilled_gs_ns.rendering.torch_backend import torch_rasterization

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run single-threaded: these tensors are small, and intra-op OpenMP threads on a machine shared
    with other jobs (2 cores here) slow things down by an order of magnitude instead of helping."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


@dataclass
class Scene2D:
    """One camera's screen-space Gaussians plus fixed random output cotangents."""

    means2d: torch.Tensor  # [N, 2]
    conics: torch.Tensor  # [N, 3]
    opacities: torch.Tensor  # [N]
    colors: torch.Tensor  # [N, D]
    depths: torch.Tensor  # [N]
    radii: torch.Tensor  # [N] int32
    width: int
    height: int
    g_img: torch.Tensor  # [H, W, D] dL/dimage
    g_alpha: torch.Tensor  # [H, W, 1] dL/dalpha


def make_scene_2d(
    n: int,
    width: int,
    height: int,
    seed: int,
    dtype: torch.dtype = F64,
    channels: int = 3,
    sigma_range=(0.6, 4.0),
    opacity_range=(0.05, 0.99),
    margin: float = 4.0,
) -> Scene2D:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=F64)

    means = rand(n, 2) * torch.tensor([width + 2 * margin, height + 2 * margin], dtype=F64) - margin
    theta = rand(n) * math.pi
    s = sigma_range[0] + rand(n, 2) * (sigma_range[1] - sigma_range[0])
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    cov = rot @ torch.diag_embed(s**2) @ rot.transpose(-1, -2)
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    conics = torch.stack([cov[:, 1, 1] / det, -cov[:, 0, 1] / det, cov[:, 0, 0] / det], -1)
    radii = torch.ceil(3.5 * s.max(-1).values).to(torch.int32)
    opac = opacity_range[0] + rand(n) * (opacity_range[1] - opacity_range[0])
    depths = 1.0 + torch.randperm(n, generator=g).to(F64) + 0.5 * rand(n)  # distinct, shuffled
    colors = rand(n, channels)
    g_img = torch.randn(height, width, channels, generator=g, dtype=F64)
    g_alpha = torch.randn(height, width, 1, generator=g, dtype=F64)
    cast = lambda t: t.to(dtype)  # noqa: E731
    return Scene2D(
        cast(means), cast(conics), cast(opac), cast(colors), cast(depths), radii, width, height, cast(g_img), cast(g_alpha)
    )


def render_tiles(scene: Scene2D, tile_size: int = 8, absgrad: bool = False, **limits) -> Dict[str, torch.Tensor]:
    leaves = {
        "means2d": scene.means2d[None].clone().requires_grad_(True),
        "conics": scene.conics[None].clone().requires_grad_(True),
        "opacities": scene.opacities[None].clone().requires_grad_(True),
        "colors": scene.colors[None].clone().requires_grad_(True),
    }
    bins = [bin_gaussians(scene.means2d, scene.radii, scene.depths, scene.width, scene.height, tile_size)]
    img, alpha = rasterize_tiles(
        leaves["means2d"],
        leaves["conics"],
        leaves["opacities"],
        leaves["colors"],
        bins,
        scene.width,
        scene.height,
        absgrad=absgrad,
        **limits,
    )
    ((img[0] * scene.g_img).sum() + (alpha[0] * scene.g_alpha).sum()).backward()
    out = {"image": img[0].detach(), "alpha": alpha[0].detach(), "bins": bins[0]}
    for k, v in leaves.items():
        out["g_" + k] = v.grad[0]
    if absgrad:
        out["absgrad"] = leaves["means2d"].absgrad[0]
    return out


def render_dense(scene: Scene2D) -> Dict[str, torch.Tensor]:
    leaves = {
        "means2d": scene.means2d.clone().requires_grad_(True),
        "conics": scene.conics.clone().requires_grad_(True),
        "opacities": scene.opacities.clone().requires_grad_(True),
        "colors": scene.colors.clone().requires_grad_(True),
    }
    img, alpha = rasterize_dense(
        leaves["means2d"],
        leaves["conics"],
        leaves["opacities"],
        leaves["colors"],
        scene.depths,
        scene.radii,
        scene.width,
        scene.height,
    )
    ((img * scene.g_img).sum() + (alpha * scene.g_alpha).sum()).backward()
    out = {"image": img.detach(), "alpha": alpha.detach()}
    for k, v in leaves.items():
        out["g_" + k] = v.grad
    return out


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max(1, max |b|)."""
    a, b = a.detach().to(F64), b.detach().to(F64)
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def assert_matches_dense(tiles: Dict, dense: Dict, tol: float) -> None:
    for key in ("image", "alpha", "g_means2d", "g_conics", "g_opacities", "g_colors"):
        err = max_rel_err(tiles[key], dense[key])
        assert err <= tol, f"{key}: relative error {err:.3g} > {tol:.1g}"


def total_block_elements(bins, max_block_elements: int, max_chunk: int) -> int:
    """Elements B*P*K over all blocks the rasteriser walks with these limits (one camera)."""
    pixels = bins.tile_size**2
    total = 0
    for start, stop, _chunk in _tile_batches(bins, pixels, max_block_elements, max_chunk):
        length = int(bins.counts[start])
        total += (stop - start) * pixels * length
    return total


# ----------------------------------------------------------------------------------------------
# tile rasteriser vs dense reference, float64
# ----------------------------------------------------------------------------------------------

SMALL_BLOCKS = dict(max_block_elements=3000, max_chunk=5)


@pytest.fixture(scope="module")
def scene64() -> Scene2D:
    return make_scene_2d(160, 37, 29, seed=1)


@pytest.mark.parametrize(
    "limits",
    [
        {},
        SMALL_BLOCKS,
        dict(max_cached_elements=0),
        dict(SMALL_BLOCKS, max_cached_elements=0),
        dict(tile_size=16),
        dict(tile_size=4, max_chunk=3),
    ],
    ids=["default", "small-blocks", "no-cache", "small-blocks-no-cache", "tile16", "tile4-chunk3"],
)
@pytest.mark.parametrize("absgrad", [False, True])
def test_tiles_match_dense_float64(scene64, limits, absgrad):
    limits = dict(limits)
    tile_size = limits.pop("tile_size", 8)
    tiles = render_tiles(scene64, tile_size=tile_size, absgrad=absgrad, **limits)
    dense = render_dense(scene64)
    assert float(dense["alpha"].max()) > 0.5 and float(dense["g_means2d"].abs().max()) > 1e-3  # not trivial
    assert_matches_dense(tiles, dense, 1e-10)
    if "max_chunk" in limits:
        # The walk really is chunked: some tile lists are longer than one chunk.
        assert int(tiles["bins"].counts.max()) > limits["max_chunk"]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6, 0.9])
def test_partial_cache_matches_dense(scene64, fraction):
    """Some blocks cached, later ones of the same tile batch recomputed in backward.

    The recomputed blocks need the transmittance left by the cached blocks in front of them.
    """
    bins = bin_gaussians(scene64.means2d, scene64.radii, scene64.depths, scene64.width, scene64.height, 8)
    total = 3 * total_block_elements(bins, SMALL_BLOCKS["max_block_elements"], SMALL_BLOCKS["max_chunk"])
    budget = int(fraction * total)
    tiles = render_tiles(scene64, max_cached_elements=budget, **SMALL_BLOCKS)
    assert_matches_dense(tiles, render_dense(scene64), 1e-10)


def test_several_cameras_match_dense():
    scenes = [make_scene_2d(90, 26, 21, seed=s) for s in (11, 12)]
    leaves = [
        torch.stack([getattr(s, name) for s in scenes]).requires_grad_(True)
        for name in ("means2d", "conics", "opacities", "colors")
    ]
    bins = [bin_gaussians(s.means2d, s.radii, s.depths, s.width, s.height, 8) for s in scenes]
    img, alpha = rasterize_tiles(*leaves, bins, 26, 21, absgrad=True, **SMALL_BLOCKS)
    loss = sum((img[i] * s.g_img).sum() + (alpha[i] * s.g_alpha).sum() for i, s in enumerate(scenes))
    loss.backward()
    for i, s in enumerate(scenes):
        dense = render_dense(s)
        tiles = {"image": img[i], "alpha": alpha[i]}
        tiles.update({"g_" + k: leaf.grad[i] for k, leaf in zip(("means2d", "conics", "opacities", "colors"), leaves)})
        assert_matches_dense(tiles, dense, 1e-10)


def test_clamped_alpha_matches_dense():
    """Opacities up to 1: where opacity * exp(-sigma) > 0.999 alpha is clamped and, as in gsplat,
    passes no gradient to opacity, mean or conic (colour still gets one)."""
    scene = make_scene_2d(60, 30, 24, seed=6, opacity_range=(0.9992, 1.0), sigma_range=(1.0, 4.0))
    scene.means2d[::2] = torch.floor(scene.means2d[::2]) + 0.5  # half of them centred on a pixel
    sigma = _dense_sigma(scene)
    raw = scene.opacities * torch.exp(-sigma)
    assert int((raw > ALPHA_MAX).sum()) > 10  # the clamp is really hit
    assert_matches_dense(render_tiles(scene, **SMALL_BLOCKS), render_dense(scene), 1e-10)


def test_more_channels_match_dense():
    scene = make_scene_2d(70, 20, 18, seed=5, channels=7)
    assert_matches_dense(render_tiles(scene, **SMALL_BLOCKS), render_dense(scene), 1e-10)


# ----------------------------------------------------------------------------------------------
# early termination (transmittance <= 1e-4)
# ----------------------------------------------------------------------------------------------


def opaque_stack_scene(n: int = 24, seed: int = 3) -> Scene2D:
    """n large, nearly opaque Gaussians over the whole 24x20 image: every pixel terminates."""
    g = torch.Generator().manual_seed(seed)
    width, height = 24, 20
    means = torch.tensor([12.0, 10.0], dtype=F64) + 2.0 * (torch.rand(n, 2, generator=g, dtype=F64) - 0.5)
    s = 30.0 + 20.0 * torch.rand(n, generator=g, dtype=F64)  # isotropic sigma in pixels
    conics = torch.stack([1 / s**2, torch.zeros_like(s), 1 / s**2], -1)
    radii = torch.full((n,), 60, dtype=torch.int32)
    opac = 0.9 + 0.09 * torch.rand(n, generator=g, dtype=F64)
    depths = 1.0 + torch.randperm(n, generator=g).to(F64)  # given in shuffled depth order
    colors = torch.rand(n, 3, generator=g, dtype=F64)
    g_img = torch.randn(height, width, 3, generator=g, dtype=F64)
    g_alpha = torch.randn(height, width, 1, generator=g, dtype=F64)
    return Scene2D(means, conics, opac, colors, depths, radii, width, height, g_img, g_alpha)


@pytest.mark.parametrize("limits", [{}, dict(max_chunk=2, max_block_elements=1000), dict(max_cached_elements=0, max_chunk=3)])
def test_termination_matches_dense(limits):
    scene = opaque_stack_scene()
    tiles = render_tiles(scene, absgrad=True, **limits)
    dense = render_dense(scene)
    assert_matches_dense(tiles, dense, 1e-10)

    # Every pixel stopped: alpha is close to 1, but the transmittance left stays above 1e-4 because
    # the Gaussian that would take it to 1e-4 or below is left out.
    t_final = 1.0 - tiles["alpha"]
    assert float(t_final.max()) < 1e-2
    assert float(t_final.min()) > T_MIN

    # Without termination every Gaussian would get weight T * alpha > 0 at every pixel. With it,
    # the far half of the stack gets no weight anywhere, hence exactly zero gradients.
    order = torch.argsort(scene.depths)
    front, back = order[:3], order[len(order) // 2 :]
    assert bool((tiles["g_colors"][front].abs().sum(-1) > 0).all())
    for key in ("g_colors", "g_means2d", "g_conics"):
        assert float(tiles[key][back].abs().max()) == 0.0, key
    assert float(tiles["g_opacities"][back].abs().max()) == 0.0
    assert float(tiles["absgrad"][back].abs().max()) == 0.0

    # A compositor without the stop rule would have blended far more: its transmittance goes way
    # below 1e-4 at every pixel.
    sigma = _dense_sigma(scene)
    a = torch.clamp(scene.opacities * torch.exp(-sigma), max=ALPHA_MAX)
    a = torch.where(a >= ALPHA_MIN, a, torch.zeros_like(a))
    t_no_stop = torch.prod(1.0 - a, dim=-1)  # order does not matter for the product
    assert float(t_no_stop.max()) < T_MIN * 1e-3  # all Gaussians would have kept blending


def _dense_sigma(scene: Scene2D) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(scene.height, dtype=F64) + 0.5, torch.arange(scene.width, dtype=F64) + 0.5, indexing="ij"
    )
    dx = scene.means2d[:, 0] - xs[..., None]
    dy = scene.means2d[:, 1] - ys[..., None]
    a, b, c = scene.conics.unbind(-1)
    return 0.5 * (a * dx**2 + c * dy**2) + b * dx * dy  # [H, W, N]


# ----------------------------------------------------------------------------------------------
# float32
# ----------------------------------------------------------------------------------------------


def test_float32_matches_float64_dense():
    scene32 = make_scene_2d(500, 100, 96, seed=7, dtype=torch.float32, sigma_range=(0.6, 3.0))
    scene64 = replace(
        scene32,
        **{k: getattr(scene32, k).to(F64) for k in ("means2d", "conics", "opacities", "colors", "depths", "g_img", "g_alpha")},
    )
    tiles = render_tiles(scene32, absgrad=True)
    dense = render_dense(scene64)
    assert tiles["image"].dtype == torch.float32 and tiles["g_means2d"].dtype == torch.float32
    assert_matches_dense(tiles, dense, 1e-4)


# ----------------------------------------------------------------------------------------------
# closed-form checks through torch_rasterization (from 3D)
# ----------------------------------------------------------------------------------------------


def pinhole(f: float, cx: float, cy: float, dtype=F64) -> torch.Tensor:
    return torch.tensor([[[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]], dtype=dtype)


def single_gaussian(xyz, scale, opacity, color=(0.2, 0.5, 0.9), dtype=F64):
    return dict(
        means=torch.tensor([xyz], dtype=dtype),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        scales=torch.full((1, 3), scale, dtype=dtype),
        opacities=torch.tensor([opacity], dtype=dtype),
        colors=torch.tensor([color], dtype=dtype),
    )


@pytest.mark.parametrize(
    "opacity, cx",
    [(0.3, 16.0), (0.3, 16.5), (0.9995, 16.5), (0.8, 16.0)],
    ids=["faint-offset", "faint-centred", "clamped-centred", "opaque-offset"],
)
def test_single_isotropic_gaussian_closed_form(opacity, cx):
    width = height = 32
    f, z, s = 40.0, 3.0, 0.15  # screen sigma^2 = (f s / z)^2 + eps2d = 4 + 0.3
    g = single_gaussian((0.0, 0.0, z), s, opacity)
    render, alpha, info = torch_rasterization(
        **g, viewmats=torch.eye(4, dtype=F64)[None], Ks=pinhole(f, cx, cx), width=width, height=height
    )
    var = (f * s / z) ** 2 + 0.3
    radius = int(info["radii"][0, 0])
    assert radius == math.ceil(3.0 * math.sqrt(var + 0.1))  # gsplat: v1 = b + sqrt(max(0.01, b^2 - det))
    assert torch.allclose(info["means2d"][0, 0], torch.tensor([cx, cx], dtype=F64))

    # Centre pixel (16, 16) has its centre at (16.5, 16.5).
    off = 16.5 - cx
    expected = min(ALPHA_MAX, opacity * math.exp(-0.5 * (2 * off * off) / var))
    assert float(alpha[0, 16, 16, 0]) == pytest.approx(expected, rel=1e-12)
    if opacity > ALPHA_MAX:
        assert float(alpha[0, 16, 16, 0]) == pytest.approx(ALPHA_MAX, rel=1e-12)

    # Whole image: analytic alpha inside the tiles the 3-sigma square touches, zero elsewhere.
    ys, xs = torch.meshgrid(torch.arange(height, dtype=F64) + 0.5, torch.arange(width, dtype=F64) + 0.5, indexing="ij")
    d2 = (xs - cx) ** 2 + (ys - cx) ** 2
    analytic = torch.clamp(opacity * torch.exp(-0.5 * d2 / var), max=ALPHA_MAX)
    analytic = torch.where(analytic >= ALPHA_MIN, analytic, torch.zeros_like(analytic))
    ts = 8
    t0, t1 = math.floor((cx - radius) / ts), math.ceil((cx + radius) / ts)
    in_tiles = torch.zeros(height, width, dtype=torch.bool)
    in_tiles[t0 * ts : t1 * ts, t0 * ts : t1 * ts] = True
    analytic = torch.where(in_tiles, analytic, torch.zeros_like(analytic))
    assert torch.allclose(alpha[0, ..., 0], analytic, rtol=1e-12, atol=1e-15)
    assert torch.allclose(render[0], alpha[0] * g["colors"][0], rtol=1e-12, atol=1e-15)

    footprint = alpha[0, ..., 0] >= ALPHA_MIN
    assert int(footprint.sum()) > 20
    if opacity < math.exp(4.5) / 255.0:
        # Below ~0.353 opacity, alpha falls under 1/255 before 3 sigma: the footprint is in the radius.
        assert bool((d2[footprint] <= radius**2).all())


@pytest.mark.parametrize("swap_inputs", [False, True])
@pytest.mark.parametrize("red_in_front", [True, False])
def test_nearer_gaussian_dominates(swap_inputs, red_in_front):
    # Same screen footprint: scale proportional to depth.
    z_red, z_green = (2.0, 4.0) if red_in_front else (4.0, 2.0)
    means = torch.tensor([[0.0, 0.0, z_red], [0.0, 0.0, z_green]], dtype=F64)
    scales = torch.tensor([[0.05 * z_red] * 3, [0.05 * z_green] * 3], dtype=F64)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    opac = torch.tensor([0.9, 0.9], dtype=F64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=F64)
    idx = [1, 0] if swap_inputs else [0, 1]
    render, alpha, _ = torch_rasterization(
        means[idx], quats[idx], scales[idx], opac[idx], colors[idx],
        torch.eye(4, dtype=F64)[None], pinhole(30.0, 12.0, 12.0), 24, 24,
    )  # fmt: skip
    red, green = render[0, 12, 12, 0].item(), render[0, 12, 12, 1].item()
    front, back = (red, green) if red_in_front else (green, red)
    a = 0.9 * math.exp(-0.5 * 0.5 / ((30 * 0.05) ** 2 + 0.3))
    assert front == pytest.approx(a, rel=1e-12)
    assert back == pytest.approx(a * (1 - a), rel=1e-12)
    assert front > 5 * back


def _random_splats(n: int, seed: int, dtype=F64, opacity_range=(0.05, 0.35), sh_bases: Optional[int] = 16):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=F64) * torch.tensor([0.7, 0.55, 0.3], dtype=F64)
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = torch.exp(math.log(0.015) + math.log(5.0) * torch.rand(n, 3, generator=g, dtype=F64))
    opac = opacity_range[0] + (opacity_range[1] - opacity_range[0]) * torch.rand(n, generator=g, dtype=F64)
    if sh_bases is None:
        colors = torch.rand(n, 3, generator=g, dtype=F64)
    else:
        colors = 0.3 * torch.randn(n, sh_bases, 3, generator=g, dtype=F64)
    out = dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors)
    return {k: v.to(dtype) for k, v in out.items()}


def test_backgrounds():
    splats = _random_splats(40, seed=4, sh_bases=None)
    common = dict(
        **splats, viewmats=torch.eye(4, dtype=F64)[None], Ks=pinhole(30.0, 20.0, 15.0), width=40, height=30
    )
    bg = torch.tensor([[0.25, 0.5, 0.75]], dtype=F64)
    plain, alpha, _ = torch_rasterization(**common)
    with_bg, alpha_bg, _ = torch_rasterization(**common, backgrounds=bg)
    assert torch.equal(alpha, alpha_bg)
    empty = alpha[0, ..., 0] == 0
    assert 0 < int(empty.sum()) < empty.numel()  # both kinds of pixels present
    assert torch.allclose(with_bg[0][empty], bg.expand(int(empty.sum()), 3), rtol=0, atol=1e-15)
    assert torch.allclose(with_bg, plain + (1 - alpha) * bg[:, None, None, :], rtol=1e-12, atol=1e-15)

    # The depth channel gets a zero background, as in gsplat.
    rgbd, alpha_d, _ = torch_rasterization(**common, backgrounds=bg, render_mode="RGB+D")
    d_plain, _, _ = torch_rasterization(**common, render_mode="D")
    assert torch.allclose(rgbd[..., :3], with_bg, rtol=1e-12, atol=1e-15)
    assert torch.allclose(rgbd[..., 3:], d_plain, rtol=1e-12, atol=1e-15)


def test_depth_render_modes_single_gaussian():
    z = 3.7
    g = single_gaussian((0.4, -0.3, z), 0.1, 0.8)
    common = dict(**g, viewmats=torch.eye(4, dtype=F64)[None], Ks=pinhole(35.0, 20.0, 16.0), width=40, height=32)
    rgb, alpha, _ = torch_rasterization(**common)
    for mode in ("RGB+ED", "ED", "D", "RGB+D"):
        out, alpha_m, _ = torch_rasterization(**common, render_mode=mode)
        assert torch.equal(alpha_m, alpha)
        fp = alpha[0, ..., 0] > 0
        assert int(fp.sum()) > 10
        depth = out[0, ..., -1]
        if mode.endswith("ED"):
            assert torch.allclose(depth[fp], torch.full_like(depth[fp], z), rtol=1e-12)
            assert float(depth[~fp].abs().max()) == 0.0
        else:
            assert torch.allclose(depth, z * alpha[0, ..., 0], rtol=1e-12, atol=1e-15)
        if mode.startswith("RGB"):
            assert torch.allclose(out[..., :3], rgb, rtol=1e-12, atol=1e-15)
        else:
            assert out.shape[-1] == 1


def test_expected_depth_between_two_depths():
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 5.0]], dtype=F64)
    common = dict(
        means=means, quats=torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=F64),
        scales=torch.tensor([[0.1] * 3, [0.25] * 3], dtype=F64), opacities=torch.tensor([0.5, 0.9], dtype=F64),
        colors=torch.ones(2, 3, dtype=F64), viewmats=torch.eye(4, dtype=F64)[None], Ks=pinhole(30.0, 12.0, 12.0),
        width=24, height=24,
    )  # fmt: skip
    out, alpha, _ = torch_rasterization(**common, render_mode="ED")
    fp = alpha[0, ..., 0] > 0
    d = out[0, ..., 0][fp]
    assert float(d.min()) >= 2.0 - 1e-12 and float(d.max()) <= 5.0 + 1e-12
    # Centre pixel: weights a1 and a2 (1 - a1).
    a1 = 0.5 * math.exp(-0.25 / ((30 * 0.1 / 2) ** 2 + 0.3))
    a2 = 0.9 * math.exp(-0.25 / ((30 * 0.25 / 5) ** 2 + 0.3))
    w1, w2 = a1, a2 * (1 - a1)
    assert float(out[0, 12, 12, 0]) == pytest.approx((2.0 * w1 + 5.0 * w2) / (w1 + w2), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# absgrad
# ----------------------------------------------------------------------------------------------


def test_absgrad_matches_per_pixel_dense():
    scene = make_scene_2d(7, 14, 11, seed=21, sigma_range=(0.8, 3.0), margin=1.0)
    tiles = render_tiles(scene, absgrad=True, max_chunk=2, max_block_elements=400)

    def per_pixel_loss(m2):
        img, alpha = rasterize_dense(
            m2, scene.conics, scene.opacities, scene.colors, scene.depths, scene.radii, scene.width, scene.height
        )
        return ((img * scene.g_img).sum(-1) + (alpha * scene.g_alpha).sum(-1)).reshape(-1)  # [H*W]

    jac = torch.autograd.functional.jacobian(per_pixel_loss, scene.means2d)  # [H*W, N, 2]
    ref_abs = jac.abs().sum(0)
    ref_grad = jac.sum(0)
    assert float(ref_abs.min()) > 0  # every Gaussian reaches some pixel
    assert float((ref_abs - ref_grad.abs()).max()) > 1e-3  # signs really cancel somewhere
    assert max_rel_err(tiles["g_means2d"], ref_grad) <= 1e-10
    assert max_rel_err(tiles["absgrad"], ref_abs) <= 1e-10


def test_absgrad_bounds_grad(scene64):
    tiles = render_tiles(scene64, absgrad=True, **SMALL_BLOCKS)
    ab, gr = tiles["absgrad"], tiles["g_means2d"]
    assert ab.shape == gr.shape
    assert bool((ab >= gr.abs() - 1e-12).all())
    assert float((ab - gr.abs()).max()) > 1e-3


def test_no_absgrad_attribute_without_flag(scene64):
    m2 = scene64.means2d[None].clone().requires_grad_(True)
    bins = [bin_gaussians(scene64.means2d, scene64.radii, scene64.depths, scene64.width, scene64.height, 8)]
    img, _ = rasterize_tiles(
        m2, scene64.conics[None], scene64.opacities[None], scene64.colors[None], bins, scene64.width, scene64.height
    )
    img.sum().backward()
    assert not hasattr(m2, "absgrad")


# ----------------------------------------------------------------------------------------------
# end to end from 3D vs projection + SH + dense reference
# ----------------------------------------------------------------------------------------------


def two_cameras(dtype=F64):
    ang = 0.15
    rot = torch.tensor(
        [[math.cos(ang), 0.0, math.sin(ang)], [0.0, 1.0, 0.0], [-math.sin(ang), 0.0, math.cos(ang)]], dtype=dtype
    )
    v1 = torch.eye(4, dtype=dtype)
    v1[:3, :3] = rot
    v1[:3, 3] = torch.tensor([0.2, -0.1, 0.3], dtype=dtype)
    viewmats = torch.stack([torch.eye(4, dtype=dtype), v1])
    Ks = torch.cat([pinhole(38.0, 20.0, 16.0, dtype), pinhole(42.0, 19.0, 17.0, dtype)])
    return viewmats, Ks


@pytest.mark.parametrize(
    "sh_degree, rasterize_mode, render_mode",
    [(3, "classic", "RGB"), (1, "antialiased", "RGB+D"), (None, "classic", "RGB+ED")],
)
def test_end_to_end_matches_dense(sh_degree, rasterize_mode, render_mode):
    width, height = 40, 32
    splats = _random_splats(80, seed=8, sh_bases=None if sh_degree is None else 16)
    viewmats, Ks = two_cameras()
    g = torch.Generator().manual_seed(9)
    channels = 4 if "D" in render_mode else 3
    g_img = torch.randn(2, height, width, channels, generator=g, dtype=F64)
    g_alpha = torch.randn(2, height, width, 1, generator=g, dtype=F64)

    def loss_of(render, alpha):
        return (render * g_img).sum() + (alpha * g_alpha).sum()

    leaves_t = {k: v.clone().requires_grad_(True) for k, v in splats.items()}
    render, alpha, info = torch_rasterization(
        **leaves_t, viewmats=viewmats, Ks=Ks, width=width, height=height, sh_degree=sh_degree,
        render_mode=render_mode, rasterize_mode=rasterize_mode, absgrad=True,
    )  # fmt: skip
    loss_of(render, alpha).backward()

    leaves_d = {k: v.clone().requires_grad_(True) for k, v in splats.items()}
    proj = project_gaussians(
        leaves_d["means"], leaves_d["quats"], leaves_d["scales"], leaves_d["opacities"], viewmats, Ks, width, height,
        antialiased=rasterize_mode == "antialiased",
    )  # fmt: skip
    if sh_degree is None:
        cols = leaves_d["colors"][None].expand(2, -1, -1)
    else:
        cols = colors_from_sh(leaves_d["means"], leaves_d["colors"], viewmats, sh_degree, proj.radii)
    if "D" in render_mode:
        cols = torch.cat([cols, proj.depths[..., None]], -1)
    imgs, alphas = [], []
    for c in range(2):
        im, al = rasterize_dense(
            proj.means2d[c], proj.conics[c], proj.opacities[c], cols[c], proj.depths[c], proj.radii[c], width, height
        )
        if render_mode == "RGB+ED":
            im = torch.cat([im[..., :3], im[..., 3:] / al.clamp(min=1e-10)], -1)
        imgs.append(im)
        alphas.append(al)
    render_d, alpha_d = torch.stack(imgs), torch.stack(alphas)
    loss_of(render_d, alpha_d).backward()

    visible = int((info["radii"] > 0).sum())
    assert visible > 100 and float(alpha.detach().max()) > 0.3
    assert torch.equal(info["radii"], proj.radii)
    assert max_rel_err(render, render_d) <= 1e-10
    assert max_rel_err(alpha, alpha_d) <= 1e-10
    for k in leaves_t:
        assert float(leaves_d[k].grad.abs().max()) > 0, k
        err = max_rel_err(leaves_t[k].grad, leaves_d[k].grad)
        assert err <= 1e-9, f"grad {k}: {err:.3g}"


def test_nothing_visible():
    """All Gaussians behind the camera: background everywhere, zero gradients, no errors."""
    splats = _random_splats(6, seed=15, sh_bases=16)
    splats["means"][:, 2] = -3.0
    leaves = {k: v.requires_grad_(True) for k, v in splats.items()}
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=F64)
    render, alpha, info = torch_rasterization(
        **leaves, viewmats=torch.eye(4, dtype=F64)[None], Ks=pinhole(30.0, 16.0, 12.0), width=32, height=24,
        sh_degree=3, absgrad=True, backgrounds=bg,
    )  # fmt: skip
    assert info["num_intersections"] == 0 and int(info["radii"].max()) == 0
    assert float(alpha.detach().abs().max()) == 0.0
    assert torch.equal(render.detach(), bg[:, None, None, :].expand(1, 24, 32, 3))
    info["means2d"].retain_grad()
    render.sum().backward()
    for k, v in leaves.items():
        assert float(v.grad.abs().max()) == 0.0, k
    assert float(info["means2d"].absgrad.abs().max()) == 0.0


def test_rasterize_dispatch_cpu_matches_torch_backend():
    splats = _random_splats(30, seed=12, sh_bases=16)
    kw = dict(**splats, viewmats=torch.eye(4, dtype=F64)[None], Ks=pinhole(30.0, 16.0, 12.0), width=32, height=24, sh_degree=2)
    backend = resolve_backend("auto", splats["means"].device)
    a = rasterize(backend, **kw)
    b = torch_rasterization(**kw, compositor="numba")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------------------------
# info dict and gsplat's DefaultStrategy
# ----------------------------------------------------------------------------------------------


def test_info_dict_keys_and_means2d_grad():
    splats = _random_splats(50, seed=13, sh_bases=16, dtype=torch.float32)
    leaves = {k: v.requires_grad_(True) for k, v in splats.items()}
    viewmats, Ks = two_cameras(torch.float32)
    render, alpha, info = torch_rasterization(
        **leaves, viewmats=viewmats, Ks=Ks, width=40, height=32, sh_degree=3, absgrad=True
    )
    assert render.shape == (2, 32, 40, 3) and alpha.shape == (2, 32, 40, 1)
    assert info["width"] == 40 and info["height"] == 32 and info["n_cameras"] == 2
    assert info["radii"].shape == (2, 50) and info["radii"].dtype == torch.int32
    assert info["means2d"].shape == (2, 50, 2)
    assert info["gaussian_ids"] is None and info["camera_ids"] is None
    for key in ("depths", "conics", "opacities", "tile_width", "tile_height", "tile_size"):
        assert key in info
    info["means2d"].retain_grad()
    render.sum().backward()
    g = info["means2d"].grad
    assert g is not None and g.shape == (2, 50, 2)
    assert float(g[info["radii"] > 0].abs().sum()) > 0
    assert int((info["radii"] == 0).sum()) > 0
    assert float(g[info["radii"] == 0].abs().sum()) == 0.0
    assert info["means2d"].absgrad.shape == (2, 50, 2)


@pytest.mark.parametrize("absgrad", [True, False])
def test_default_strategy_densifies_and_prunes(absgrad):
    from gsplat.strategy import DefaultStrategy

    torch.manual_seed(0)  # split() samples positions with the global generator
    n, width, height = 240, 48, 40
    raw = _random_splats(n, seed=14, dtype=torch.float32, opacity_range=(0.3, 0.9))
    scales = raw["scales"].clone()
    scales[: n // 2] = 0.006  # <= grow_scale3d * scene_scale: duplicated
    scales[n // 2 :] = 0.03  # larger: split
    opac = raw["opacities"].clone()
    low = torch.arange(n) % 10 == 3
    opac[low] = 0.003  # below prune_opa = 0.005 (and below 1/255, so never grown)
    params = torch.nn.ParameterDict(
        {
            "means": raw["means"],
            "scales": scales.log(),
            "quats": raw["quats"],
            "opacities": torch.logit(opac),
            "sh0": raw["colors"][:, :1].clone(),
            "shN": raw["colors"][:, 1:].clone(),
        }
    )
    optimizers = {k: torch.optim.Adam([p], lr=1e-4) for k, p in params.items()}
    strategy = DefaultStrategy(
        refine_start_iter=0, refine_every=100, reset_every=10_000, grow_grad2d=1e-7, absgrad=absgrad
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats, Ks = two_cameras(torch.float32)
    target = torch.rand(2, height, width, 3, generator=torch.Generator().manual_seed(3))

    def train_step(step):
        render, alpha, info = torch_rasterization(
            params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]),
            torch.cat([params["sh0"], params["shN"]], 1), viewmats, Ks, width, height, sh_degree=3, absgrad=absgrad,
        )  # fmt: skip
        strategy.step_pre_backward(params, optimizers, state, step, info)
        (render - target).abs().mean().backward()
        for opt in optimizers.values():
            opt.step()
        return info

    info = train_step(99)
    strategy.step_post_backward(params, optimizers, state, 99, info)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    assert len(params["means"]) == n  # not a refine step: only statistics were gathered

    info = train_step(100)
    # What the strategy will see: per-Gaussian mean over the two steps and cameras of |grad| norms.
    grads2d = state["grad2d"].clone()
    counts = state["count"].clone()
    new = (info["means2d"].absgrad if absgrad else info["means2d"].grad).clone()
    new[..., 0] *= width / 2.0 * 2
    new[..., 1] *= height / 2.0 * 2
    sel = info["radii"] > 0
    grads2d.index_add_(0, torch.where(sel)[1], new[sel].norm(dim=-1))
    counts.index_add_(0, torch.where(sel)[1], torch.ones(int(sel.sum())))
    high = grads2d / counts.clamp_min(1) > strategy.grow_grad2d
    small = params["scales"].exp().max(-1).values <= strategy.grow_scale3d
    n_dupli, n_split, n_low = int((high & small).sum()), int((high & ~small).sum()), int(low.sum())
    assert n_dupli > 20 and n_split > 20 and n_low > 10
    assert not bool((high & low).any())

    strategy.step_post_backward(params, optimizers, state, 100, info)
    assert len(params["means"]) == n + n_dupli + n_split - n_low
    for k, p in params.items():
        assert p.shape[0] == len(params["means"])
        opt_state = optimizers[k].state[optimizers[k].param_groups[0]["params"][0]]
        assert opt_state["exp_avg"].shape == p.shape
    assert state["grad2d"].shape[0] == len(params["means"])

    # Training goes on with the new set.
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    info = train_step(101)
    assert info["radii"].shape == (2, len(params["means"]))
    assert params["means"].grad is not None and bool(torch.isfinite(params["means"].grad).all())


# ----------------------------------------------------------------------------------------------
# backend resolution
# ----------------------------------------------------------------------------------------------


def test_resolve_backend_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "numba"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_backend("gsplat", cpu)
    with pytest.raises(ValueError, match="Unknown rasterizer backend"):
        resolve_backend("vulkan", cpu)  # type: ignore[arg-type]


def test_resolve_backend_on_cuda_device_object():
    # Resolution only looks at the device type, so this needs no GPU.
    cuda = torch.device("cuda", 0)
    assert resolve_backend("auto", cuda) == "gsplat"
    assert resolve_backend("gsplat", cuda) == "gsplat"
    assert resolve_backend("torch", cuda) == "torch"
