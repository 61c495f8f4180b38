"""Importance of each Gaussian: its accumulated alpha-blending weight over the training views.

The blending weight of Gaussian i at a pixel is T_i * alpha_i, the share of that pixel's colour it
contributes. Rendering constant per-Gaussian colours c_i gives pixel = sum_i T_i alpha_i c_i, so
d(sum of pixels)/d c_i is exactly the sum of i's weights over the image. One forward and backward
pass per view therefore measures importance with either rasteriser (gsplat's CUDA kernels or the
PyTorch one), without a special kernel.
"""

from __future__ import annotations

import torch
from dataclasses import replace

from rich.progress import track
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from distilled_gs_ns.distillation.renderer import SplatRenderer


def blending_importance(model: SplatRenderer, cameras: Cameras, description: str = "importance") -> Tensor:
    """[N] accumulated blending weight of each of `model`'s Gaussians over all `cameras`.

    Renders at each camera's full resolution with the model's current Gaussians (no dropout or
    other training-only changes: the model is put in eval mode for the pass).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base = model.gaussians_for_render(None)
        importance = torch.zeros(base.means.shape[0], device=base.means.device)
        for index in track(range(cameras.shape[0]), description=description, transient=True):
            probe = torch.zeros(base.means.shape[0], 3, device=base.means.device, requires_grad=True)
            gaussians = replace(base, colors=probe, sh_degree=None)
            with torch.enable_grad():  # also when called from a no_grad context (training callbacks)
                render, _, _ = model.rasterize_view(gaussians, cameras[index : index + 1].to(model.device))
                (grad,) = torch.autograd.grad(render[..., 0].sum(), probe)
            importance += grad[:, 0]
    finally:
        model.train(was_training)
    return importance

