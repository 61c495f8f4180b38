"""Importance of each Gaussian: its accumulated alpha-blending weight over the training views.

The blending weight of Gaussian i at a pixel is T_i * alpha_i, the share of that pixel's colour it
contributes. Rendering constant per-Gaussian colours c_i gives pixel = sum_i T_i alpha_i c_i, so
d(sum of pixels)/d c_i is exactly the sum of i's weights over the image. One forward and backward
pass per view therefore measures importance with either rasteriser (gsplat's CUDA kernels or the
PyTorch one), without a special kernel.

The 'consensus' variant leaves out each Gaussian's largest single view: a floater close to one
camera covers much of that view (a large blending weight there) but little of the others, while a
surface Gaussian is weighted in many views and keeps almost all of its score.
"""

from __future__ import annotations

import torch
from dataclasses import replace

from rich.progress import track
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from distilled_gs_ns.distillation.renderer import SplatRenderer


def blending_importance(
    model: SplatRenderer, cameras: Cameras, description: str = "importance", consensus: bool = False
) -> Tensor:
    """[N] accumulated blending weight of each of `model`'s Gaussians over all `cameras` (with
    `consensus`, less its largest single view's).

    Renders at each camera's full resolution with the model's current Gaussians (no dropout or
    other training-only changes: the model is put in eval mode for the pass).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base = model.gaussians_for_render(None)
        importance = torch.zeros(base.means.shape[0], device=base.means.device)
        largest = torch.zeros_like(importance)
        for index in track(range(cameras.shape[0]), description=description, transient=True):
            probe = torch.zeros(base.means.shape[0], 3, device=base.means.device, requires_grad=True)
            gaussians = replace(base, colors=probe, sh_degree=None)
            with torch.enable_grad():  # also when called from a no_grad context (training callbacks)
                render, _, _ = model.rasterize_view(gaussians, cameras[index : index + 1].to(model.device))
                (grad,) = torch.autograd.grad(render[..., 0].sum(), probe)
            importance += grad[:, 0]
            torch.maximum(largest, grad[:, 0], out=largest)
    finally:
        model.train(was_training)
    return importance - largest if consensus else importance

