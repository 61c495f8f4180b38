"""How faithfully an exported splat reproduces the model it was exported from.

Anchor models decode their Gaussians per view, a PLY holds one bake: comparing the two renders from
training cameras measures what the bake loses.
"""

from __future__ import annotations

from typing import List

import torch
from nerfstudio.cameras.cameras import Cameras

from distilled_gs_ns.models.splat_render import SplatRenderModel
from distilled_gs_ns.rendering.gaussians import RenderGaussians


@torch.no_grad()
def export_psnr(model: SplatRenderModel, exported: RenderGaussians, cameras: Cameras) -> List[float]:
    """Per camera: PSNR (dB) of the exported Gaussians' render against the model's own render."""
    model.eval()
    values = []
    for index in range(cameras.shape[0]):
        camera = cameras[index : index + 1].to(model.device)
        own = model.get_outputs(camera)["rgb"]
        baked = model.render_rgb(exported, camera)
        mse = torch.mean((own - baked) ** 2).clamp(min=1e-10)
        values.append(float(-10.0 * torch.log10(mse)))
    return values
