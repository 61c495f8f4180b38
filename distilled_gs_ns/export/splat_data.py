"""Gaussians as splat files hold them, independent of the model they came from.

Every file format stores the same seven quantities in the same parameterisation as a 3DGS PLY:
positions, log scales, rotation quaternions (w, x, y, z), opacity logits, the SH DC term and the
higher SH bands. `SplatData` holds them as numpy arrays, `from_model` takes them from any splat
model the way `ns-export gaussian-splat` does, and `render_gaussians` turns them back into
rasteriser input so a decoded file can be rendered with the project's rasteriser.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.rendering.gaussians import RenderGaussians

MIN_OPACITY_LOGIT = -5.5373
"""logit(1/255): ns-export leaves out Gaussians below it (gsplat's CUDA rasteriser skips them)."""


def sh_coefficients(degree: int) -> int:
    """Higher-band SH coefficients per colour channel at `degree` (0, 3, 8, 15)."""
    return (degree + 1) ** 2 - 1


def sh_degree_of(coefficients: int) -> int:
    for degree in range(4):
        if sh_coefficients(degree) == coefficients:
            return degree
    raise ValueError(f"{coefficients} higher SH coefficients per channel is no SH degree 0-3")


@dataclass(frozen=True)
class SplatData:
    """N Gaussians in the 3DGS PLY parameterisation (float32 numpy arrays)."""

    means: np.ndarray  # [N, 3]
    log_scales: np.ndarray  # [N, 3]
    quats: np.ndarray  # [N, 4] w, x, y, z (as trained: not necessarily unit length)
    opacity_logits: np.ndarray  # [N]
    sh_dc: np.ndarray  # [N, 3] SH DC coefficient per channel
    sh_rest: np.ndarray  # [N, K, 3] higher bands, coefficient-major (nerfstudio's features_rest)

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        shapes = {
            "means": (self.means, (n, 3)),
            "log_scales": (self.log_scales, (n, 3)),
            "quats": (self.quats, (n, 4)),
            "opacity_logits": (self.opacity_logits, (n,)),
            "sh_dc": (self.sh_dc, (n, 3)),
        }
        for name, (array, shape) in shapes.items():
            if array.shape != shape:
                raise ValueError(f"SplatData.{name} has shape {array.shape}, expected {shape}")
        if self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n or self.sh_rest.shape[2] != 3:
            raise ValueError(f"SplatData.sh_rest has shape {self.sh_rest.shape}, expected ({n}, K, 3)")
        sh_degree_of(self.sh_rest.shape[1])

    @property
    def count(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(self.sh_rest.shape[1])

    def with_sh_degree(self, degree: int) -> "SplatData":
        """The same Gaussians with SH bands above `degree` dropped (a lower degree cannot be raised)."""
        if not 0 <= degree <= self.sh_degree:
            raise UserInputError(f"--sh-degree must be 0-{self.sh_degree} for this model (its SH degree), got {degree}")
        return replace(self, sh_rest=np.ascontiguousarray(self.sh_rest[:, : sh_coefficients(degree)]))

    def select(self, keep: np.ndarray) -> "SplatData":
        return SplatData(
            means=self.means[keep],
            log_scales=self.log_scales[keep],
            quats=self.quats[keep],
            opacity_logits=self.opacity_logits[keep],
            sh_dc=self.sh_dc[keep],
            sh_rest=self.sh_rest[keep],
        )

    def unit_quats(self) -> np.ndarray:
        """Rotations normalised to unit length (what compressed formats store)."""
        norms = np.linalg.norm(self.quats, axis=1, keepdims=True)
        return (self.quats / np.maximum(norms, 1e-12)).astype(np.float32)

    def render_gaussians(self, device: torch.device | str = "cpu") -> RenderGaussians:
        """Rasteriser input: SH colours at this data's degree, activated opacity and scales."""

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)

        return RenderGaussians(
            means=tensor(self.means),
            quats=tensor(self.unit_quats()),
            scales=torch.exp(tensor(self.log_scales)),
            opacities=torch.sigmoid(tensor(self.opacity_logits)),
            colors=torch.cat([tensor(self.sh_dc)[:, None, :], tensor(self.sh_rest)], dim=1),
            sh_degree=self.sh_degree,
        )


@torch.no_grad()
def from_model(model: torch.nn.Module, order: Optional[torch.Tensor] = None, only_exportable: bool = True) -> SplatData:
    """The Gaussians `ns-export gaussian-splat` writes for `model` (any splatfacto-like model):
    the same attributes, without those that hold NaN/Inf or fall below opacity 1/255 (unless
    `only_exportable` is False); in the row order `order` (indices into the model's Gaussians) if given."""

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy()

    means = array(model.means)
    n = means.shape[0]
    sh_degree = int(model.config.sh_degree)
    sh_rest = array(model.shs_rest) if sh_degree > 0 else np.zeros((n, 0, 3), dtype=np.float32)
    data = SplatData(
        means=means,
        log_scales=array(model.scales),
        quats=array(model.quats),
        opacity_logits=array(model.opacities).reshape(n),
        sh_dc=array(model.shs_0).reshape(n, 3),
        sh_rest=sh_rest.reshape(n, -1, 3),
    )
    if order is not None:
        data = data.select(order.cpu().numpy())
    if not only_exportable:
        return data
    keep = exportable(data)
    return data if keep.all() else data.select(keep)


def exportable(data: SplatData) -> np.ndarray:
    """[N] bool: the rows ns-export writes (finite, opacity at least 1/255)."""
    n = data.count
    keep = np.isfinite(data.opacity_logits) & ~(data.opacity_logits < MIN_OPACITY_LOGIT)
    for field in (data.means, data.log_scales, data.quats, data.sh_dc, data.sh_rest.reshape(n, -1)):
        keep &= np.isfinite(field).all(axis=1)
    return keep
