"""Reading a 3DGS PLY (as `ns-export gaussian-splat` writes it) back into renderable Gaussians.

Used to check an export against the model it came from: render both from the same camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData

from distilled_gs_ns.rendering.gaussians import RenderGaussians

SH_C0 = 0.28209479177387814


def load_splat_ply(path: Path, device: torch.device | str = "cpu") -> RenderGaussians:
    """Gaussians of a 3DGS PLY with RGB from the SH DC term (higher SH bands, if any, are ignored)."""
    vertex = PlyData.read(str(path))["vertex"]

    def columns(*names: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[name], dtype=np.float32) for name in names], axis=-1)).to(device)

    return RenderGaussians(
        means=columns("x", "y", "z"),
        quats=torch.nn.functional.normalize(columns("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1),
        scales=torch.exp(columns("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(columns("opacity")[:, 0]),
        colors=(columns("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5).clamp(0.0, 1.0),
        sh_degree=None,
    )
