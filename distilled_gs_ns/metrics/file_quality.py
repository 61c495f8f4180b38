"""Held-out quality of a splat file: its Gaussians rendered in place of the model's own.

A compressed file loses precision, so its quality is measured where the user sees it: the decoded
Gaussians are rendered at every held-out view by the model's rasteriser and scored by the model's
own metric code (what ns-eval runs), so the file and the model it came from are compared on equal terms.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch

from distilled_gs_ns.rendering.gaussians import RenderGaussians


@contextmanager
def rendering(model: torch.nn.Module, gaussians: RenderGaussians) -> Iterator[None]:
    """Within the block, `model` renders `gaussians` (whatever the view) instead of its own."""
    model.gaussians_for_render = lambda crop_ids, camera=None, camera_to_world=None: gaussians
    try:
        yield
    finally:
        del model.gaussians_for_render


@torch.no_grad()
def heldout_metrics(pipeline, gaussians: RenderGaussians | None = None) -> Dict[str, float]:
    """ns-eval's averages over the held-out views, of `gaussians` if given, else of the model."""
    model = pipeline.model
    model.eval()
    if gaussians is None:
        return pipeline.get_average_eval_image_metrics()
    with rendering(model, gaussians):
        return pipeline.get_average_eval_image_metrics()
