"""Projection of 3D Gaussians to the image plane, in plain PyTorch.

The maths is gsplat 1.4.0's own PyTorch reference (`gsplat.cuda._torch_impl`), reused so that the CPU
path follows the CUDA kernels' conventions exactly (EWA Jacobian clamping, eps2d blur, 3-sigma radius,
near/far culling, SH basis and the +0.5 colour offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)
from torch import Tensor


@dataclass
class ProjectedGaussians:
    """Per-camera screen-space Gaussians, shapes [C, N, ...]; entries with radii == 0 are culled."""

    means2d: Tensor  # [C, N, 2] pixel coordinates
    conics: Tensor  # [C, N, 3] upper triangle of the inverse 2D covariance
    depths: Tensor  # [C, N] camera-space z
    radii: Tensor  # [C, N] int32, 3-sigma radius in pixels
    opacities: Tensor  # [C, N] opacity after the antialiasing compensation


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> ProjectedGaussians:
    """Project world-space Gaussians into C pinhole cameras (world-to-camera `viewmats`, intrinsics `Ks`)."""
    quats = quats / quats.norm(dim=-1, keepdim=True)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means,
        covars,
        viewmats,
        Ks,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        calc_compensations=antialiased,
    )
    if radius_clip > 0:
        radii = torch.where(radii.float() <= radius_clip, torch.zeros_like(radii), radii)
    opac = opacities.unsqueeze(0).expand(viewmats.shape[0], -1)
    if compensations is not None:
        opac = opac * compensations
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=depths, radii=radii, opacities=opac)


def colors_from_sh(
    means: Tensor, coeffs: Tensor, viewmats: Tensor, sh_degree: int, radii: Optional[Tensor] = None
) -> Tensor:
    """View-dependent RGB [C, N, 3] from SH coefficients [N, K, 3], as gsplat computes it.

    Culled Gaussians (radii == 0) get colour 0, like gsplat's masked SH kernel.
    """
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = means[None, :, :] - campos[:, None, :]  # [C, N, 3]
    num_bases = (sh_degree + 1) ** 2
    coeffs = coeffs[:, :num_bases, :].unsqueeze(0).expand(viewmats.shape[0], -1, -1, -1)
    colors = torch.clamp_min(_spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)
    if radii is not None:
        colors = colors * (radii > 0).unsqueeze(-1).to(colors.dtype)
    return colors
