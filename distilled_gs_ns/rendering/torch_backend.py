"""gsplat-compatible `rasterization` for tensors on the CPU (or any device), built on the tile rasteriser.

The `info` dict is shared. `compositor="torch"` runs projection, SH colours, binning and compositing
in plain PyTorch (any device; the reference); `compositor="numba"` runs all four compiled (CPU only,
much faster, same results to float rounding; binning identical), except that projection and SH fall
back to PyTorch when a camera pose needs a gradient (camera optimisation), which the compiled
kernels do not give.
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

from distilled_gs_ns.rendering.numba_binning import bin_gaussians_numba
from distilled_gs_ns.rendering.numba_projection import colors_from_sh_numba, project_gaussians_numba
from distilled_gs_ns.rendering.numba_rasterizer import rasterize_tiles_numba
from distilled_gs_ns.rendering.projection import colors_from_sh, project_gaussians
from distilled_gs_ns.rendering.tile_rasterizer import rasterize_tiles
from distilled_gs_ns.rendering.tiles import bin_gaussians

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
Compositor = Literal["torch", "numba"]
_COMPOSITORS = {"torch": rasterize_tiles, "numba": rasterize_tiles_numba}


def torch_rasterization(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    tile_size: int = 8,
    backgrounds: Optional[Tensor] = None,
    render_mode: RenderMode = "RGB",
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    compositor: Compositor = "torch",
) -> Tuple[Tensor, Tensor, Dict]:
    """Same inputs, outputs and `info` keys as `gsplat.rasterization(..., packed=False)`.

    `info` carries what gsplat's DefaultStrategy reads (means2d with gradient and, with `absgrad`,
    `means2d.absgrad` after backward; radii; width; height; n_cameras), so densification works.
    `compositor` picks the alpha-compositing implementation (same semantics and gradients).
    """
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"Unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"Unknown rasterize_mode {rasterize_mode!r}")
    if compositor not in _COMPOSITORS:
        raise ValueError(f"Unknown compositor {compositor!r}; expected 'torch' or 'numba'")
    n_cams = viewmats.shape[0]
    compiled = compositor == "numba" and not viewmats.requires_grad
    proj = (project_gaussians_numba if compiled else project_gaussians)(
        means,
        quats,
        scales,
        opacities,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        radius_clip=radius_clip,
        antialiased=rasterize_mode == "antialiased",
    )
    if sh_degree is None:
        cam_colors = colors if colors.dim() == 3 else colors.unsqueeze(0).expand(n_cams, -1, -1)
    else:
        cam_colors = (colors_from_sh_numba if compiled else colors_from_sh)(means, colors, viewmats, sh_degree, proj.radii)
    if render_mode in ("RGB+D", "RGB+ED"):
        cam_colors = torch.cat([cam_colors, proj.depths[..., None]], dim=-1)
    elif render_mode in ("D", "ED"):
        cam_colors = proj.depths[..., None]

    binning = bin_gaussians_numba if compositor == "numba" else bin_gaussians
    bins = [binning(proj.means2d[c], proj.radii[c], proj.depths[c], width, height, tile_size) for c in range(n_cams)]
    render, alpha = _COMPOSITORS[compositor](
        proj.means2d, proj.conics, proj.opacities, cam_colors, bins, width, height, absgrad=absgrad
    )
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], dim=-1)
    if backgrounds is not None:
        if render_mode in ("RGB+D", "RGB+ED"):
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(n_cams, 1)], dim=-1)
        elif render_mode in ("D", "ED"):
            backgrounds = backgrounds.new_zeros(n_cams, 1)
        render = render + (1.0 - alpha) * backgrounds[:, None, None, :]

    info = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": proj.opacities,
        "tile_width": bins[0].tiles_x,
        "tile_height": bins[0].tiles_y,
        "tiles_per_gauss": None,
        "isect_ids": None,
        "flatten_ids": None,
        "isect_offsets": None,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": n_cams,
        "num_intersections": sum(b.num_intersections for b in bins),
    }
    return render, alpha, info
