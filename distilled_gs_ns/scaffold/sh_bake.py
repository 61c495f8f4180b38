"""Anchors baked into explicit Gaussians whose colour keeps its view dependence as SH.

A splat file holds one opacity, shape and SH colour per Gaussian; anchors decode all of them per
view. Each neural Gaussian is looked at from every training camera that sees its anchor (the
nearest camera if none does), and:
- its colour becomes the SH coefficients (degree 0-3) that best fit the decoder's colours there, by
  least squares with the SH basis evaluated along the direction the rasteriser will use (camera to
  Gaussian), each view weighted by the Gaussian's decoded opacity in it (a view where it is dropped
  says nothing about its colour), with a small ridge on the bands above DC for anchors seen by few
  cameras;
- its opacity and scale come from one of two bakes (`BakeMode`):
  "export-direction" decodes them along the anchor's export direction (see `anchor_export`);
  "mean-visible" averages them over the same views (opacity counted as 0 where dropped, scales
  weighted by opacity), which is what the renders average to.
Rotations are taken along the export direction.
"""

from __future__ import annotations

from typing import Dict, Literal

import torch
import torch.nn.functional as F
from gsplat.cuda._torch_impl import _eval_sh_bases_fast
from torch import Tensor

from distilled_gs_ns.rendering.cameras import points_in_view, world_to_camera
from distilled_gs_ns.rendering.gaussians import RenderGaussians
from distilled_gs_ns.scaffold.anchors import Anchors
from distilled_gs_ns.scaffold.decoder import AnchorDecoder
from distilled_gs_ns.scaffold.export_directions import export_view_directions

BakeMode = Literal["export-direction", "mean-visible"]


@torch.no_grad()
def bake_anchors_with_sh(
    anchors: Anchors,
    decoder: AnchorDecoder,
    views: Dict[str, Tensor],
    sh_degree: int,
    mode: BakeMode = "mean-visible",
    ridge: float = 0.01,
    chunk: int = 256,
) -> RenderGaussians:
    """Explicit Gaussians of every anchor, colours as SH of `sh_degree` ([G, (d+1)^2, 3]).

    views: the training cameras, {"camera_to_worlds": [C, 3, 4], "Ks": [C, 3, 3], "sizes": [C, 2]}.
    Gaussians whose baked opacity is 0 are left out.
    """
    if not 0 <= sh_degree <= 3:
        raise ValueError(f"sh_degree must be 0-3, got {sh_degree}")
    device = anchors.positions.device
    c2w = views["camera_to_worlds"].to(device=device, dtype=anchors.positions.dtype)
    Ks = views["Ks"].to(device=device, dtype=c2w.dtype)
    sizes = views["sizes"]
    viewmats, centres = world_to_camera(c2w), c2w[:, :3, 3]
    export_dirs = export_view_directions(anchors.positions, c2w, Ks, sizes)
    parts = [
        _bake_chunk(anchors, decoder, ids, viewmats, Ks, sizes, centres, export_dirs[ids], sh_degree, mode, ridge)
        for ids in torch.arange(anchors.num_anchors, device=device).split(chunk)
    ]
    return RenderGaussians(
        means=torch.cat([p.means for p in parts]),
        quats=torch.cat([p.quats for p in parts]),
        scales=torch.cat([p.scales for p in parts]),
        opacities=torch.cat([p.opacities for p in parts]),
        colors=torch.cat([p.colors for p in parts]),
        sh_degree=sh_degree,
    )


def _bake_chunk(
    anchors: Anchors,
    decoder: AnchorDecoder,
    ids: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    sizes: Tensor,
    centres: Tensor,
    export_dirs: Tensor,
    sh_degree: int,
    mode: BakeMode,
    ridge: float,
) -> RenderGaussians:
    n, k, c = ids.shape[0], anchors.num_offsets, centres.shape[0]
    positions = anchors.positions[ids]
    scaling = torch.exp(anchors.log_scaling[ids])
    means = positions[:, None, :] + anchors.offsets[ids] * scaling[:, None, :3]  # [n, K, 3]

    seen = points_in_view(viewmats, Ks, sizes, positions)  # [C, n]
    nearest = (positions[None] - centres[:, None]).norm(dim=-1).argmin(dim=0)
    unseen = ~seen.any(dim=0)
    seen[nearest[unseen], unseen.nonzero().squeeze(1)] = True
    towards = F.normalize(positions[None] - centres[:, None], dim=-1)  # [C, n, 3]
    features = anchors.features[ids]
    decoded = decoder(features.repeat(c, 1), towards.reshape(c * n, 3))
    opacity = decoded["opacity"].reshape(c, n, k).clamp(min=0.0) * seen[..., None]
    colour = decoded["color"].reshape(c, n, k, 3)
    factors = decoded["scale"].reshape(c, n, k, 3)
    along_export = decoder(features, export_dirs)

    # Colour: weighted least squares per neural Gaussian; a view where it is dropped carries no weight.
    weights = torch.where(opacity.sum(0, keepdim=True) > 0, opacity, seen[..., None].to(opacity.dtype))
    num_bases = (sh_degree + 1) ** 2
    gaussian_dirs = F.normalize(means[None] - centres[:, None, None], dim=-1)  # [C, n, K, 3]
    basis = _eval_sh_bases_fast(num_bases, gaussian_dirs)  # [C, n, K, B]
    normal = torch.einsum("cnki,cnkj,cnk->nkij", basis, basis, weights)
    rhs = torch.einsum("cnki,cnkd,cnk->nkid", basis, colour - 0.5, weights)
    damping = torch.ones(num_bases, device=ids.device, dtype=normal.dtype) * ridge
    damping[0] = 1e-6
    normal = normal + torch.diag_embed(damping * weights.sum(0)[..., None].clamp(min=1e-6))
    coefficients = torch.linalg.solve(normal, rhs)  # [n, K, B, 3]

    if mode == "mean-visible":
        counts = seen.sum(0).clamp(min=1)[:, None]  # [n, 1]
        alpha = opacity.sum(0) / counts
        mass = opacity.sum(0)[..., None]
        mean_factors = (factors * opacity[..., None]).sum(0) / mass.clamp(min=1e-12)
        factor = torch.where(mass > 0, mean_factors, along_export["scale"])
    elif mode == "export-direction":
        alpha = along_export["opacity"].clamp(min=0.0)
        factor = along_export["scale"]
    else:
        raise ValueError(f"unknown bake mode {mode!r}")
    keep = (alpha > 0).reshape(-1)
    return RenderGaussians(
        means=means.reshape(-1, 3)[keep],
        quats=along_export["rotation"].reshape(-1, 4)[keep],
        scales=(scaling[:, None, 3:] * factor).reshape(-1, 3)[keep],
        opacities=alpha.reshape(-1)[keep],
        colors=coefficients.reshape(n * k, num_bases, 3)[keep],
        sh_degree=sh_degree,
    )
