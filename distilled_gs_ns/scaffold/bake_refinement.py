"""Fitting baked Gaussians to the renders of the model they were baked from.

The SH bake (`anchor_sh_bake`) fixes each neural Gaussian's opacity, shape and colour from the views
that see its anchor, one Gaussian at a time. But anchors change all three per view, including
dropping Gaussians entirely, and a single splat can only compromise. The compromise that
reproduces the model best is found by minimising render error: starting from the bake, the
opacities, scales, rotations and SH coefficients (positions stay) are optimised with Adam against the
model's own renders of its training views, at 3DGS's learning rates. The targets are the model's
renders, not photographs: this changes how faithfully the file shows the model, never what the model is.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from distilled_gs_ns.rendering.gaussians import RenderGaussians

LEARNING_RATES = {"opacity": 0.05, "log_scales": 0.005, "quats": 0.001, "sh_dc": 0.0025, "sh_rest": 0.0025 / 20}
"""3DGS's rates for these attributes (opacity logits, log scales, rotations, SH DC and higher bands)."""


def refine_bake(
    baked: RenderGaussians,
    render: Callable[[RenderGaussians, int], Tensor],
    targets: Sequence[Tensor],
    steps: int,
    seed: int = 0,
) -> RenderGaussians:
    """`baked` after `steps` Adam steps on the L1 error of `render(gaussians, view)` [H, W, 3]
    against `targets[view]`, one training view per step in shuffled epochs."""
    if steps <= 0 or baked.means.shape[0] == 0:
        return baked
    if baked.sh_degree is None:
        raise ValueError("refine_bake needs SH colours (sh_degree set)")
    params = {
        "opacity": torch.logit(baked.opacities.clamp(1e-4, 1 - 1e-4)),
        "log_scales": torch.log(baked.scales.clamp(min=1e-12)),
        "quats": baked.quats,
        "sh_dc": baked.colors[:, :1],
        "sh_rest": baked.colors[:, 1:],
    }
    params = {name: value.detach().clone().requires_grad_(True) for name, value in params.items()}
    optimizer = torch.optim.Adam([{"params": [p], "lr": LEARNING_RATES[n]} for n, p in params.items()], eps=1e-15)
    generator = torch.Generator().manual_seed(seed)
    order: list = []

    def current() -> RenderGaussians:
        return RenderGaussians(
            means=baked.means,
            quats=params["quats"],
            scales=torch.exp(params["log_scales"]),
            opacities=torch.sigmoid(params["opacity"]),
            colors=torch.cat([params["sh_dc"], params["sh_rest"]], dim=1),
            sh_degree=baked.sh_degree,
        )

    with torch.enable_grad():
        for _ in range(steps):
            if not order:
                order = torch.randperm(len(targets), generator=generator).tolist()
            view = order.pop()
            loss = (render(current(), view) - targets[view]).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        refined = current()
        return RenderGaussians(
            means=refined.means.detach(),
            quats=torch.nn.functional.normalize(refined.quats.detach(), dim=-1),
            scales=refined.scales.detach(),
            opacities=refined.opacities.detach(),
            colors=refined.colors.detach(),
            sh_degree=refined.sh_degree,
        )
