"""CPU tests of the compiled (numba) tile compositor against the PyTorch one and the dense reference.

The two compositors share projection, SH and binning (`torch_rasterization(compositor=...)`) and
must agree on images, alphas, radii, `means2d.grad`, `means2d.absgrad` and the gradients w.r.t. every
3D input: in float64 to ~1e-10 (they differ only in the order of float operations), in float32 to
float32 accuracy. The numba kernels are also checked against the dense reference directly, in
float64, including early termination and clamped alphas.

The first run on a machine compiles the kernels (about a minute for float32 and float64 together);
later runs load them from numba's cache.
"""

from __future__ import annotations

from typing import Dict, Optional

import numba
import pytest
import torch

from distilled_gs_ns.rendering import rasterize, resolve_backend
from distilled_gs_ns.rendering.numba_rasterizer import MAX_TILE_SIZE, rasterize_tiles_numba
from distilled_gs_ns.rendering.tile_rasterizer import rasterize_tiles
from distilled_gs_ns.rendering.tiles import bin_gaussians
from distilled_gs_ns.rendering.torch_backend import torch_rasterization
from tests.test_rasterizer import (
    F64,
    Scene2D,
    _random_splats,
    assert_matches_dense,
    make_scene_2d,
    max_rel_err,
    opaque_stack_scene,
    pinhole,
    render_dense,
    two_cameras,
)

F32 = torch.float32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread (and hence one numba thread): the tensors are small and the machine shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def composite_2d(fn, scene: Scene2D, tile_size: int = 8, absgrad: bool = True) -> Dict[str, torch.Tensor]:
    """Run one compositor on a screen-space scene; image, alpha and gradients w.r.t. its inputs."""
    leaves = {
        name: getattr(scene, name)[None].clone().requires_grad_(True)
        for name in ("means2d", "conics", "opacities", "colors")
    }
    bins = [bin_gaussians(scene.means2d, scene.radii, scene.depths, scene.width, scene.height, tile_size)]
    img, alpha = fn(*leaves.values(), bins, scene.width, scene.height, absgrad=absgrad)
    ((img[0] * scene.g_img).sum() + (alpha[0] * scene.g_alpha).sum()).backward()
    out = {"image": img[0].detach(), "alpha": alpha[0].detach()}
    out.update({"g_" + k: v.grad[0] for k, v in leaves.items()})
    if absgrad:
        out["absgrad"] = leaves["means2d"].absgrad[0]
    return out


def render_3d(compositor: str, splats: Dict[str, torch.Tensor], seed: int = 0, **kwargs) -> Dict[str, torch.Tensor]:
    """`torch_rasterization` forward + backward of a fixed random linear loss; everything to compare."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in splats.items()}
    render, alpha, info = torch_rasterization(**leaves, compositor=compositor, absgrad=True, **kwargs)
    info["means2d"].retain_grad()
    g = torch.Generator().manual_seed(seed)
    loss = (render * torch.randn(render.shape, generator=g, dtype=render.dtype)).sum()
    loss = loss + (alpha * torch.randn(alpha.shape, generator=g, dtype=alpha.dtype)).sum()
    loss.backward()
    out = {"render": render.detach(), "alpha": alpha.detach(), "radii": info["radii"]}
    out.update({"g_" + k: v.grad for k, v in leaves.items()})
    out["g_means2d"] = info["means2d"].grad
    out["absgrad"] = info["means2d"].absgrad
    out["num_intersections"] = torch.tensor(info["num_intersections"])
    return out


def assert_backends_agree(numba_out: Dict, torch_out: Dict, grad_tol: float) -> None:
    assert torch.equal(numba_out["radii"], torch_out["radii"])
    images_tol = dict(rtol=1e-4, atol=1e-5) if numba_out["render"].dtype == F32 else dict(rtol=1e-10, atol=1e-12)
    for key in ("render", "alpha"):
        assert torch.allclose(numba_out[key], torch_out[key], **images_tol), key
    for key in torch_out:
        if (key.startswith("g_") or key == "absgrad") and torch_out[key] is None:  # input not used
            assert numba_out[key] is None, key
        elif key.startswith("g_") or key == "absgrad":
            err = max_rel_err(numba_out[key], torch_out[key])
            assert err <= grad_tol, f"{key}: relative error {err:.3g} > {grad_tol:.1g}"


def compare_3d(splats, grad_tol: Optional[float] = None, **kwargs) -> Dict[str, torch.Tensor]:
    dtype = splats["means"].dtype
    tol = grad_tol if grad_tol is not None else (1e-3 if dtype == F32 else 1e-9)
    a = render_3d("numba", splats, **kwargs)
    b = render_3d("torch", splats, **kwargs)
    assert_backends_agree(a, b, tol)
    return a


# ----------------------------------------------------------------------------------------------
# screen space: numba vs dense reference (float64) and vs torch (float32)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile_size", [4, 5, 8, 16])
def test_matches_dense_float64(tile_size):
    scene = make_scene_2d(160, 37, 29, seed=1)
    out = composite_2d(rasterize_tiles_numba, scene, tile_size=tile_size)
    dense = render_dense(scene)
    assert float(dense["alpha"].max()) > 0.5
    assert_matches_dense(out, dense, 1e-10)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_needles_match(dtype):
    """Very elongated rotated Gaussians (conic correlation near 1), where the row culling's rounding
    margin matters: numba vs dense (float64) and vs torch (float32)."""
    scene = make_scene_2d(40, 48, 40, seed=9, dtype=dtype, sigma_range=(0.3, 40.0), opacity_range=(0.2, 0.9))
    out = composite_2d(rasterize_tiles_numba, scene)
    if dtype == F64:
        assert_matches_dense(out, render_dense(scene), 1e-10)
    else:
        ref = composite_2d(rasterize_tiles, scene)
        assert torch.allclose(out["image"], ref["image"], rtol=1e-4, atol=1e-5)
        for key in ("g_means2d", "g_conics", "g_opacities", "g_colors", "absgrad"):
            assert max_rel_err(out[key], ref[key]) <= 1e-3, key


def test_termination_and_clamp_match_dense_float64():
    stack = opaque_stack_scene()
    out = composite_2d(rasterize_tiles_numba, stack)
    assert_matches_dense(out, render_dense(stack), 1e-10)
    assert float((1.0 - out["alpha"]).max()) < 1e-2  # every pixel stopped early
    clamped = make_scene_2d(60, 30, 24, seed=6, opacity_range=(0.9992, 1.0), sigma_range=(1.0, 4.0))
    clamped.means2d[::2] = torch.floor(clamped.means2d[::2]) + 0.5
    assert_matches_dense(composite_2d(rasterize_tiles_numba, clamped), render_dense(clamped), 1e-10)


@pytest.mark.parametrize("channels", [1, 3, 4, 7])
def test_matches_torch_float32(channels):
    scene = make_scene_2d(500, 100, 96, seed=7, dtype=F32, channels=channels, sigma_range=(0.6, 3.0))
    a = composite_2d(rasterize_tiles_numba, scene)
    b = composite_2d(rasterize_tiles, scene)
    assert a["image"].dtype == F32 and a["g_means2d"].dtype == F32
    assert torch.allclose(a["image"], b["image"], rtol=1e-4, atol=1e-5)
    assert torch.allclose(a["alpha"], b["alpha"], rtol=1e-4, atol=1e-5)
    for key in ("g_means2d", "g_conics", "g_opacities", "g_colors", "absgrad"):
        assert max_rel_err(a[key], b[key]) <= 1e-4, key


def test_long_tile_list():
    """1500 Gaussians over one 8x8 tile: lists longer than the torch compositor's 1024 chunk, and
    than the numba kernels' fetch chunk, with transmittance carried across."""
    n = 1500
    g = torch.Generator().manual_seed(4)
    means = torch.tensor([4.0, 4.0], dtype=F64) + 3.0 * (torch.rand(n, 2, generator=g, dtype=F64) - 0.5)
    s = 1.0 + 2.0 * torch.rand(n, generator=g, dtype=F64)
    conics = torch.stack([1 / s**2, torch.zeros_like(s), 1 / s**2], -1)
    scene = Scene2D(
        means2d=means,
        conics=conics,
        opacities=0.004 + 0.01 * torch.rand(n, generator=g, dtype=F64),  # faint: no early stop
        colors=torch.rand(n, 3, generator=g, dtype=F64),
        depths=torch.randperm(n, generator=g).to(F64),
        radii=torch.full((n,), 3, dtype=torch.int32),
        width=8,
        height=8,
        g_img=torch.randn(8, 8, 3, generator=g, dtype=F64),
        g_alpha=torch.randn(8, 8, 1, generator=g, dtype=F64),
    )
    assert int(bin_gaussians(means, scene.radii, scene.depths, 8, 8, 8).counts[0]) == n
    out = composite_2d(rasterize_tiles_numba, scene)
    assert_matches_dense(out, render_dense(scene), 1e-10)
    assert float(out["alpha"].mean()) > 0.5  # no pixel stopped, yet the list adds up
    assert float((out["g_colors"].abs().sum(-1) > 0).double().mean()) > 0.99


def test_deterministic():
    scene = make_scene_2d(500, 100, 96, seed=8, dtype=F32)
    a = composite_2d(rasterize_tiles_numba, scene)
    b = composite_2d(rasterize_tiles_numba, scene)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_no_absgrad_attribute_without_flag():
    scene = make_scene_2d(40, 20, 16, seed=2, dtype=F32)
    m2 = scene.means2d[None].clone().requires_grad_(True)
    bins = [bin_gaussians(scene.means2d, scene.radii, scene.depths, scene.width, scene.height, 8)]
    img, _ = rasterize_tiles_numba(m2, scene.conics[None], scene.opacities[None], scene.colors[None], bins, 20, 16)
    img.sum().backward()
    assert m2.grad is not None and not hasattr(m2, "absgrad")


def test_rejects_large_tiles_and_other_devices():
    scene = make_scene_2d(10, 40, 40, seed=3, dtype=F32)
    bins = [bin_gaussians(scene.means2d, scene.radii, scene.depths, 40, 40, MAX_TILE_SIZE + 1)]
    args = (scene.means2d[None], scene.conics[None], scene.opacities[None], scene.colors[None], bins, 40, 40)
    with pytest.raises(ValueError, match="tiles up to"):
        rasterize_tiles_numba(*args)
    with pytest.raises(TypeError, match="float32 or float64"):
        rasterize_tiles_numba(*(t.half() for t in args[:4]), *args[4:])


# ----------------------------------------------------------------------------------------------
# end to end from 3D: torch_rasterization with compositor "numba" vs "torch"
# ----------------------------------------------------------------------------------------------

W, H = 40, 32


def one_camera(dtype=F64, f: float = 38.0):
    return dict(viewmats=torch.eye(4, dtype=dtype)[None], Ks=pinhole(f, W / 2, H / 2, dtype), width=W, height=H)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(
    "render_mode, sh_degree",
    [("RGB", 3), ("D", 3), ("RGB+D", None), ("RGB+ED", 1)],
    ids=["RGB", "D", "RGB+D", "RGB+ED"],
)
def test_two_cameras_match_torch(dtype, render_mode, sh_degree):
    sh_bases = None if sh_degree is None else 16
    splats = _random_splats(150, seed=8, dtype=dtype, opacity_range=(0.05, 0.95), sh_bases=sh_bases)
    viewmats, Ks = two_cameras(dtype)
    out = compare_3d(splats, viewmats=viewmats, Ks=Ks, width=W, height=H, sh_degree=sh_degree, render_mode=render_mode)
    assert out["render"].shape == (2, H, W, 1 if render_mode == "D" else 4 if "D" in render_mode else 3)
    assert int((out["radii"] > 0).sum()) > 200 and float(out["alpha"].max()) > 0.5


def test_non_multiple_image_size_and_background():
    splats = _random_splats(120, seed=9, dtype=F32, opacity_range=(0.1, 0.9))
    bg = torch.tensor([[0.25, 0.5, 0.75]])
    kw = dict(viewmats=torch.eye(4)[None], Ks=pinhole(25.0, 18.5, 11.5, F32), width=37, height=23)
    out = compare_3d(splats, **kw, sh_degree=3, backgrounds=bg)
    assert out["render"].shape == (1, 23, 37, 3)
    empty = out["alpha"][0, ..., 0] == 0
    assert 0 < int(empty.sum()) < empty.numel()
    assert torch.allclose(out["render"][0][empty], bg.expand(int(empty.sum()), 3))


def test_behind_camera_and_near_plane():
    """Gaussians behind the camera or before the near plane are culled by the projection; those just
    beyond it are huge on screen. The rest renders the same with both compositors."""
    splats = _random_splats(200, seed=10, dtype=F64, opacity_range=(0.1, 0.9))
    splats["means"][:40, 2] = torch.linspace(-2.0, 0.18, 40, dtype=F64)
    splats["means"][40:60, :2] *= 0.1
    splats["means"][40:60, 2] = torch.linspace(0.22, 0.4, 20, dtype=F64)
    out = compare_3d(splats, **one_camera(), sh_degree=3, near_plane=0.2)
    assert int(out["radii"][0, :40].max()) == 0 and float(out["g_means"][:40].abs().max()) == 0.0
    assert int(out["radii"][0, 40:60].min()) > 5 and int((out["radii"][0, 60:] > 0).sum()) > 100


def test_nothing_visible():
    splats = _random_splats(6, seed=15, sh_bases=16)
    splats["means"][:, 2] = -3.0
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=F64)
    out = render_3d("numba", splats, **one_camera(), sh_degree=3, backgrounds=bg)
    assert int(out["num_intersections"]) == 0 and float(out["alpha"].abs().max()) == 0.0
    assert torch.equal(out["render"], bg[:, None, None, :].expand(1, H, W, 3))
    for key in ("g_means", "g_quats", "g_scales", "g_opacities", "g_colors", "absgrad"):
        assert float(out[key].abs().max()) == 0.0, key


def test_early_termination_many_opaque():
    """400 nearly opaque Gaussians over the view: most pixels stop early."""
    splats = _random_splats(400, seed=11, dtype=F32, opacity_range=(0.9, 0.999))
    splats["scales"] = splats["scales"] * 5.0
    out = compare_3d(splats, **one_camera(F32), sh_degree=3)
    assert float((out["alpha"] > 0.999).double().mean()) > 0.5


def test_large_gaussians_many_tiles():
    """A 160x120 image (300 tiles) with a few Gaussians spanning most of it among small ones."""
    splats = _random_splats(600, seed=12, dtype=F32, opacity_range=(0.05, 0.6))
    splats["scales"][:8] = 0.6
    kw = dict(viewmats=torch.eye(4)[None], Ks=pinhole(150.0, 80.0, 60.0, F32), width=160, height=120)
    out = compare_3d(splats, **kw, sh_degree=3)
    assert int(out["radii"][0, :8].min()) > 40


def test_tile_sizes_match_torch():
    splats = _random_splats(150, seed=13, dtype=F64, opacity_range=(0.1, 0.9))
    for tile_size in (4, 16):
        compare_3d(splats, **one_camera(), sh_degree=3, tile_size=tile_size)


def test_default_strategy_sees_the_same_info():
    """gsplat's DefaultStrategy reads means2d.grad / absgrad, radii and the sizes from `info`."""
    splats = _random_splats(80, seed=14, dtype=F32)
    a = render_3d("numba", splats, **one_camera(F32), sh_degree=3)
    b = render_3d("torch", splats, **one_camera(F32), sh_degree=3)
    assert a["g_means2d"].shape == a["absgrad"].shape == (1, 80, 2)
    assert bool((a["absgrad"] >= a["g_means2d"].abs() - 1e-6).all())
    assert max_rel_err(a["absgrad"], b["absgrad"]) <= 1e-4


# ----------------------------------------------------------------------------------------------
# dispatch, threads
# ----------------------------------------------------------------------------------------------


def test_resolve_backend():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "numba"
    assert resolve_backend("numba", cpu) == "numba"
    assert resolve_backend("torch", cpu) == "torch"
    assert resolve_backend("auto", torch.device("mps")) == "torch"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "gsplat"
    for device in ("cuda", "mps"):
        with pytest.raises(ValueError, match="'numba' needs CPU tensors"):
            resolve_backend("numba", torch.device(device))


def test_rasterize_dispatches_numba():
    splats = _random_splats(30, seed=16, sh_bases=16)
    kw = dict(**splats, **one_camera(), sh_degree=2)
    a = rasterize("numba", **kw)
    b = torch_rasterization(**kw, compositor="numba")
    c = torch_rasterization(**kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and torch.allclose(a[0], c[0], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="Unknown compositor"):
        torch_rasterization(**kw, compositor="cuda")  # type: ignore[arg-type]


def test_threads_follow_torch():
    """numba uses torch's thread count, and leaves it alone (its OpenMP pool shares libgomp with
    torch, and starting the pool once reset torch's count to all cores)."""
    scene = make_scene_2d(50, 24, 24, seed=5, dtype=F32)
    torch.set_num_threads(1)
    composite_2d(rasterize_tiles_numba, scene)
    assert numba.get_num_threads() == 1 and torch.get_num_threads() == 1
    if numba.config.NUMBA_NUM_THREADS > 1:
        torch.set_num_threads(2)
        try:
            composite_2d(rasterize_tiles_numba, scene)
            assert numba.get_num_threads() == 2 and torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(1)
        composite_2d(rasterize_tiles_numba, scene)
        assert numba.get_num_threads() == 1 and torch.get_num_threads() == 1
