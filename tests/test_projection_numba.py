"""The compiled projection and SH colours against gsplat's PyTorch reference (projection.py)."""

from __future__ import annotations

import math
from typing import Dict

import pytest
import torch

from distilled_gs_ns.rendering.numba_projection import colors_from_sh_numba, project_gaussians_numba
from distilled_gs_ns.rendering.projection import colors_from_sh, project_gaussians

W, H = 37, 23


def look_at(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """World-to-camera matrix (OpenCV axes: x right, y down, z forward)."""
    eye, target = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    forward = (target - eye) / (target - eye).norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ eye
    return view


def scene(dtype: torch.dtype, n: int = 400, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Gaussians around the origin seen by two cameras; some behind a camera, some straddling its near
    plane, some far outside the field of view (clamped Jacobian), some off-screen, a few huge."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.5
    means[:10] = torch.tensor([0.0, -4.5, 0.0], dtype=torch.float64) + 0.1 * torch.randn(10, 3, generator=g, dtype=torch.float64)
    means[10:20, 1] = -3.995  # just before camera 0's near plane (0.01)
    means[20:25, 1] = -3.95  # just beyond it, large: they straddle it
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.2 + 0.005
    scales[20:30] = 3.0
    viewmats = torch.stack([look_at((0.0, -4.0, 0.0)), look_at((3.0, 2.0, 1.0))])
    Ks = torch.tensor([[[30.0, 0.0, 18.0], [0.0, 32.0, 11.0], [0.0, 0.0, 1.0]],
                       [[25.0, 0.5, 20.0], [0.0, 26.0, 12.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)  # fmt: skip
    tensors = {
        "means": means,
        "quats": torch.randn(n, 4, generator=g, dtype=torch.float64) * 2.0,  # not normalised
        "scales": scales,
        "opacities": torch.rand(n, generator=g, dtype=torch.float64),
        "viewmats": viewmats,
        "Ks": Ks,
    }
    return {k: v.to(dtype) for k, v in tensors.items()}


def projected_loss(proj, weights) -> torch.Tensor:
    return sum((getattr(proj, name) * w).sum() for name, w in weights.items())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_matches_the_reference_with_gradients(dtype: torch.dtype, antialiased: bool) -> None:
    inputs = scene(dtype)
    results = []
    for project in (project_gaussians, project_gaussians_numba):
        leaves = {k: v.clone().requires_grad_(k in ("means", "quats", "scales", "opacities")) for k, v in inputs.items()}
        proj = project(**leaves, width=W, height=H, antialiased=antialiased, radius_clip=0.5)
        g = torch.Generator().manual_seed(1)
        weights = {name: torch.randn(getattr(proj, name).shape, generator=g, dtype=dtype)
                   for name in ("means2d", "conics", "depths", "opacities")}  # fmt: skip
        # Culled entries get no gradient downstream in a real render; keep the comparison to the
        # entries a Gaussian can actually be drawn from, as the compositor does.
        weights = {k: w * (proj.radii > 0).reshape(*proj.radii.shape, *([1] * (w.dim() - 2))) for k, w in weights.items()}
        projected_loss(proj, weights).backward()
        results.append((proj, {k: leaves[k].grad for k in ("means", "quats", "scales", "opacities")}))
    (ref, ref_grads), (out, out_grads) = results
    visible = ref.radii > 0
    assert torch.equal(out.radii, ref.radii)
    assert 0.3 < visible.float().mean() < 0.9, "the scene should mix visible and culled Gaussians"
    assert not visible[0, :10].any() and not visible[0, 10:20].any()  # behind / at the near plane
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=1e-5)
    for name in ("means2d", "conics", "depths", "opacities"):
        torch.testing.assert_close(getattr(out, name)[visible], getattr(ref, name)[visible], **tol)
    for name, grad in ref_grads.items():
        scale = grad.abs().max()
        torch.testing.assert_close(out_grads[name] / scale, grad / scale, **tol, msg=f"d/d{name}")


def test_projection_gradient_reaches_conics_through_the_clamped_fov() -> None:
    """A Gaussian far outside the field of view uses the clamped Jacobian; it can still overlap the
    image when it is huge, and its gradients then follow the clamp as the reference's do."""
    inputs = {k: v[:3] if k in ("quats", "opacities") else v for k, v in scene(torch.float64).items()}
    inputs["means"] = torch.tensor([[8.0, 0.0, 0.0], [-9.0, 0.0, 2.0], [0.0, 0.0, 7.0]], dtype=torch.float64)
    inputs["scales"] = torch.full((3, 3), 4.0, dtype=torch.float64)
    grads = []
    for project in (project_gaussians, project_gaussians_numba):
        means = inputs["means"].clone().requires_grad_()
        proj = project(**{**inputs, "means": means}, width=W, height=H)
        assert bool((proj.radii[0] > 0).all())
        (proj.conics.sum() + proj.means2d.sum()).backward()
        grads.append(means.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sh_colours_match_the_reference(degree: int, dtype: torch.dtype) -> None:
    inputs = scene(dtype)
    g = torch.Generator().manual_seed(2)
    coeffs = (torch.randn(inputs["means"].shape[0], 25, 3, generator=g) * 0.4).to(dtype)
    radii = project_gaussians(**inputs, width=W, height=H).radii
    outputs = []
    for colors_from in (colors_from_sh, colors_from_sh_numba):
        leaf, means = coeffs.clone().requires_grad_(), inputs["means"].clone().requires_grad_()
        colors = colors_from(means, leaf, inputs["viewmats"], degree, radii)
        weight = torch.randn(colors.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
        (colors * weight).sum().backward()
        outputs.append((colors, leaf.grad, torch.zeros_like(means) if means.grad is None else means.grad))
    (ref, ref_grad, ref_means), (out, out_grad, out_means) = outputs
    assert (ref == 0).any(), "some colours should be clamped at 0 (and culled Gaussians are 0)"
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(out_grad, ref_grad, **tol)
    assert float(out_grad[:, (degree + 1) ** 2 :].abs().sum()) == 0.0
    # The view direction's gradient (zero for degree 0, whose basis is constant).
    assert (float(ref_means.abs().max()) > 0) == (degree > 0)
    scale = float(ref_means.abs().max()) or 1.0
    torch.testing.assert_close(out_means / scale, ref_means / scale, **tol)


def test_empty_inputs_and_bad_degree() -> None:
    inputs = {k: v[:0] if k in ("means", "quats", "scales", "opacities") else v for k, v in scene(torch.float32).items()}
    proj = project_gaussians_numba(**inputs, width=W, height=H)
    assert proj.means2d.shape == (2, 0, 2) and proj.radii.dtype == torch.int32
    with pytest.raises(ValueError, match="sh_degree 3 needs 16 coefficients"):
        colors_from_sh_numba(torch.zeros(4, 3), torch.zeros(4, 9, 3), inputs["viewmats"], 3)
    assert math.isfinite(float(colors_from_sh_numba(torch.zeros(0, 3), torch.zeros(0, 16, 3), inputs["viewmats"], 3).sum()))
