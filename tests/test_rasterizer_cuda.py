"""The PyTorch tile rasteriser against gsplat's CUDA kernels, on the same Gaussians on a GPU.

`torch_rasterization` (projection from gsplat's PyTorch reference + the tile rasteriser with its
hand-written backward) and `gsplat.rendering.rasterization(packed=False)` (fused CUDA kernels) get
identical inputs; images, alphas, radii, the gradients w.r.t. every input and `means2d.absgrad` must
agree to float32 accuracy.

Both sides are float32 but compute differently (a matmul of pixel features vs per-pixel arithmetic,
`__expf`, atomics in another order), so a few alpha values that sit exactly on a threshold (1/255, the
1e-4 transmittance stop, a radius at an integer) may fall on different sides. The checks therefore
ask for a tight match on almost every element plus a loose bound on all of them and on the overall
relative error, instead of a single tight `allclose`.

Skipped without CUDA; also skipped (with the reason) when gsplat's CUDA extension cannot be loaded.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import pytest
import torch

from distilled_gs_ns.rendering import rasterize, resolve_backend
from distilled_gs_ns.rendering.torch_backend import torch_rasterization

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]


def gsplat_rasterization(**kwargs):
    from gsplat.rendering import rasterization

    return rasterization(packed=False, sparse_grad=False, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def _gsplat_cuda_extension():
    from gsplat.cuda._backend import _C  # JIT-compiles the kernels on first use when nvcc is there

    if _C is None:
        pytest.skip("gsplat's CUDA extension is not available (no prebuilt kernels and no nvcc to build them)")


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def _ieee_float32_matmul():
    """The torch backend evaluates sigma with a matmul; TF32 would cost three decimal digits."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


# ----------------------------------------------------------------------------------------------
# scenes and comparison helpers
# ----------------------------------------------------------------------------------------------


def make_splats(n: int, seed: int, device, sh_bases: Optional[int] = 16) -> Dict[str, torch.Tensor]:
    """Gaussians in front of the cameras, screen radii of a few pixels, like a trained splat."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.8, 0.6, 0.4])
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(math.log(0.008) + math.log(6.0) * torch.rand(n, 3, generator=g))
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g)
    if sh_bases is None:
        colors = torch.rand(n, 3, generator=g)
    else:
        colors = 0.3 * torch.randn(n, sh_bases, 3, generator=g)
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    return {k: v.to(device) for k, v in out.items()}


def make_cameras(width: int, height: int, device):
    ang = 0.12
    rot = torch.tensor([[math.cos(ang), 0.0, math.sin(ang)], [0.0, 1.0, 0.0], [-math.sin(ang), 0.0, math.cos(ang)]])
    v1 = torch.eye(4)
    v1[:3, :3] = rot
    v1[:3, 3] = torch.tensor([0.15, -0.1, 0.2])
    viewmats = torch.stack([torch.eye(4), v1])
    f = 1.1 * width
    Ks = torch.tensor(
        [
            [[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]],
            [[0.95 * f, 0.0, width / 2 - 1.5], [0.0, 0.95 * f, height / 2 + 2.0], [0.0, 0.0, 1.0]],
        ]
    )
    return viewmats.to(device), Ks.to(device)


def run_backend(fn, splats, cotangents, **kwargs):
    """Render, backprop a fixed random linear loss, return outputs and gradients."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in splats.items()}
    render, alpha, info = fn(**leaves, **kwargs)
    info["means2d"].retain_grad()
    g_render, g_alpha = cotangents
    ((render * g_render).sum() + (alpha * g_alpha).sum()).backward()
    out = {"render": render.detach(), "alpha": alpha.detach(), "radii": info["radii"], "info": info}
    for k, v in leaves.items():
        out["grad_" + k] = v.grad
    out["grad_means2d"] = info["means2d"].grad
    if kwargs.get("absgrad"):
        out["absgrad"] = info["means2d"].absgrad
    return out


def assert_mostly_close(actual, expected, name, rtol, atol_rel, min_fraction, max_rel_l2):
    """Elementwise |a - e| <= atol_rel * max|e| + rtol * |e| on `min_fraction` of the elements, and
    ||a - e|| / ||e|| <= max_rel_l2 overall."""
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} vs {tuple(e.shape)}"
    assert bool(torch.isfinite(a).all()), f"{name}: non-finite values"
    scale = float(e.abs().max())
    assert scale > 0, f"{name}: reference is all zero"
    close = (a - e).abs() <= atol_rel * scale + rtol * e.abs()
    fraction = float(close.double().mean())
    rel_l2 = float((a - e).norm() / e.norm())
    assert fraction >= min_fraction, f"{name}: only {fraction:.5f} of elements close (rel. L2 error {rel_l2:.2e})"
    assert rel_l2 <= max_rel_l2, f"{name}: relative L2 error {rel_l2:.2e}"


def compare(ours, ref, grads=("means", "quats", "scales", "opacities", "colors")):
    # Radii: integers from the same formula; at most a rare off-by-one at an exact integer.
    r_ours, r_ref = ours["radii"], ref["radii"]
    assert r_ours.shape == r_ref.shape and r_ours.dtype == r_ref.dtype == torch.int32
    diff = (r_ours - r_ref).abs()
    assert int(diff.max()) <= 1
    assert float((diff == 0).double().mean()) >= 0.999
    assert int((r_ref > 0).sum()) > 1000  # a real workload

    for key in ("render", "alpha"):
        assert_mostly_close(ours[key], ref[key], key, rtol=1e-4, atol_rel=1e-4, min_fraction=0.999, max_rel_l2=1e-3)
        assert float((ours[key] - ref[key]).abs().max()) < 0.05, key

    for key in ["grad_" + k for k in grads] + ["grad_means2d"]:
        assert_mostly_close(ours[key], ref[key], key, rtol=1e-3, atol_rel=1e-4, min_fraction=0.99, max_rel_l2=5e-3)
    if "absgrad" in ref:
        a, r = ours["absgrad"], ref["absgrad"]
        assert_mostly_close(a, r, "absgrad", rtol=1e-3, atol_rel=1e-4, min_fraction=0.99, max_rel_l2=5e-3)
        # absgrad bounds |grad| (up to float32 rounding of the two different reductions).
        g_abs = ours["grad_means2d"].abs()
        assert bool((a >= g_abs - (1e-4 * g_abs + 1e-5 * float(a.abs().max()))).all())


CONFIGS = [
    dict(sh_degree=3, render_mode="RGB", rasterize_mode="classic", backgrounds=False, tile_size=16),
    dict(sh_degree=1, render_mode="RGB+ED", rasterize_mode="antialiased", backgrounds=True, tile_size=16),
    dict(sh_degree=None, render_mode="RGB+D", rasterize_mode="classic", backgrounds=True, tile_size=8),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"sh{c['sh_degree']}-{c['render_mode']}-{c['rasterize_mode']}-t{c['tile_size']}")
def test_torch_backend_matches_gsplat_cuda(cfg, device):
    width, height = 96, 80
    splats = make_splats(4000, seed=0, device=device, sh_bases=None if cfg["sh_degree"] is None else 16)
    viewmats, Ks = make_cameras(width, height, device)
    channels = 4 if "D" in cfg["render_mode"] else 3
    g = torch.Generator().manual_seed(1)
    cot = (
        torch.randn(2, height, width, channels, generator=g).to(device),
        torch.randn(2, height, width, 1, generator=g).to(device),
    )
    kwargs = dict(
        viewmats=viewmats, Ks=Ks, width=width, height=height, sh_degree=cfg["sh_degree"],
        render_mode=cfg["render_mode"], rasterize_mode=cfg["rasterize_mode"], tile_size=cfg["tile_size"],
        absgrad=True,
        backgrounds=torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.1, 0.3]], device=device) if cfg["backgrounds"] else None,
    )  # fmt: skip
    ref = run_backend(gsplat_rasterization, splats, cot, **kwargs)
    ours = run_backend(torch_rasterization, splats, cot, **kwargs)
    assert ours["render"].device.type == device.type and ours["absgrad"].device.type == device.type
    compare(ours, ref)


def test_plain_grad_without_absgrad_matches_gsplat_cuda(device):
    width, height = 64, 64
    splats = make_splats(3000, seed=5, device=device, sh_bases=16)
    viewmats, Ks = make_cameras(width, height, device)
    g = torch.Generator().manual_seed(2)
    cot = (torch.rand(2, height, width, 3, generator=g).to(device), torch.zeros(2, height, width, 1, device=device))
    kwargs = dict(viewmats=viewmats, Ks=Ks, width=width, height=height, sh_degree=3, tile_size=16)
    ref = run_backend(gsplat_rasterization, splats, cot, **kwargs)
    ours = run_backend(torch_rasterization, splats, cot, **kwargs)
    compare(ours, ref)
    assert not hasattr(ours["info"]["means2d"], "absgrad")


def test_info_dict_shapes_match_gsplat_cuda(device):
    splats = make_splats(500, seed=3, device=device)
    viewmats, Ks = make_cameras(48, 40, device)
    kwargs = dict(viewmats=viewmats, Ks=Ks, width=48, height=40, sh_degree=3, tile_size=16)
    _, _, info_ref = gsplat_rasterization(**splats, **kwargs)
    _, _, info_ours = torch_rasterization(**splats, **kwargs)
    for key in ("width", "height", "n_cameras", "tile_size", "tile_width", "tile_height"):
        assert info_ours[key] == info_ref[key], key
    for key in ("radii", "means2d", "depths", "conics", "opacities"):
        assert info_ours[key].shape == info_ref[key].shape, key
        assert info_ours[key].dtype == info_ref[key].dtype, key
    assert info_ours["gaussian_ids"] is None and info_ref["gaussian_ids"] is None


def test_backend_dispatch_on_cuda(device):
    assert resolve_backend("auto", torch.device("cuda")) == "gsplat"
    splats = make_splats(500, seed=4, device=device)
    viewmats, Ks = make_cameras(48, 40, device)
    kwargs = dict(viewmats=viewmats, Ks=Ks, width=48, height=40, sh_degree=3, tile_size=16)
    r_g, a_g, _ = rasterize("gsplat", **splats, **kwargs)
    r_t, a_t, _ = rasterize("torch", **splats, **kwargs)
    assert r_g.device.type == r_t.device.type == device.type
    assert_mostly_close(r_t, r_g, "render", rtol=1e-4, atol_rel=1e-4, min_fraction=0.999, max_rel_l2=1e-3)
    assert_mostly_close(a_t, a_g, "alpha", rtol=1e-4, atol_rel=1e-4, min_fraction=0.999, max_rel_l2=1e-3)
