"""What distillation needs from a splat model: render a view from its Gaussians.

Importance and pseudo-labels are typed against this protocol instead of the model classes, so
`distillation/` sits below `models/` (the student model uses it; nothing here imports a model).
"""

from __future__ import annotations

from typing import Dict, Literal, Optional, Protocol, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from distilled_gs_ns.rendering.gaussians import RenderGaussians


class SplatRenderer(Protocol):
    training: bool

    @property
    def device(self) -> torch.device: ...

    def gaussians_for_render(self, crop_ids: Optional[Tensor]) -> RenderGaussians:
        """The Gaussians of the whole scene (crop_ids None) as the rasteriser takes them."""
        ...

    def rasterize_view(
        self, gaussians: RenderGaussians, camera: Cameras, *, render_mode: Literal["RGB", "RGB+ED"] = "RGB"
    ) -> Tuple[Tensor, Tensor, Dict]:
        """[1, H, W, C] render (premultiplied; "RGB+ED" adds the expected depth as a 4th channel),
        [1, H, W, 1] alpha and the rasteriser's info for one camera."""
        ...

    def train(self, mode: bool = True) -> "SplatRenderer": ...

    def eval(self) -> "SplatRenderer": ...
