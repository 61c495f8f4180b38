"""Scaffold-GS anchors, the representation Momentum-GS trains block by block.

An anchor is a voxel-grid point with a feature, K learnable offsets and a 6-d log scaling (first 3
scale the offsets, last 3 are the base scale of its Gaussians). Each view decodes the visible anchors
into up to K "neural" Gaussians with `AnchorDecoder`; those with positive opacity are rasterised.
`SpawnInfo` records where every neural Gaussian came from so that screen-space gradients (anchor
growing) and opacities (anchor pruning) can be accumulated per anchor and offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from distilled_gs_ns.rendering.gaussians import RenderGaussians
from distilled_gs_ns.scaffold.decoder import AnchorDecoder


@dataclass
class Anchors:
    """Anchor tensors, one row per anchor; the model owning them makes them Parameters."""

    positions: Tensor  # [N, 3]
    features: Tensor  # [N, F]
    offsets: Tensor  # [N, K, 3] in units of exp(log_scaling[:, :3])
    log_scaling: Tensor  # [N, 6]

    def __post_init__(self) -> None:
        n = self.positions.shape[0]
        if self.positions.shape != (n, 3):
            raise ValueError(f"positions must be [N, 3], got {tuple(self.positions.shape)}")
        if self.features.dim() != 2 or self.features.shape[0] != n:
            raise ValueError(f"features must be [{n}, F], got {tuple(self.features.shape)}")
        if self.offsets.dim() != 3 or self.offsets.shape[0] != n or self.offsets.shape[2] != 3:
            raise ValueError(f"offsets must be [{n}, K, 3], got {tuple(self.offsets.shape)}")
        if self.log_scaling.shape != (n, 6):
            raise ValueError(f"log_scaling must be [{n}, 6], got {tuple(self.log_scaling.shape)}")

    @property
    def num_anchors(self) -> int:
        return self.positions.shape[0]

    def tensors(self) -> Dict[str, Tensor]:
        """Field name -> tensor: the one place that lists an anchor's fields (checkpoints use it)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def map(self, function: Callable[[Tensor], Tensor]) -> Anchors:
        """The same anchors with `function` applied to every field (e.g. detach, move, index)."""
        return Anchors(**{name: function(tensor) for name, tensor in self.tensors().items()})

    def select(self, rows: Tensor) -> Anchors:
        """The anchors at `rows` (a bool mask or indices)."""
        return self.map(lambda tensor: tensor[rows])

    @staticmethod
    def concat(parts: List[Anchors]) -> Anchors:
        names = parts[0].tensors()
        return Anchors(**{name: torch.cat([getattr(part, name) for part in parts]) for name in names})

    @property
    def num_offsets(self) -> int:
        return self.offsets.shape[1]

    @classmethod
    def from_points(cls, points: Tensor, voxel_size: float, feature_dim: int = 32, num_offsets: int = 10) -> Anchors:
        """One anchor per occupied voxel, at its centre, as Scaffold-GS seeds anchors from SfM points.

        Voxels are the cells [(i - 1/2) s, (i + 1/2) s) of side s = `voxel_size`, so centres lie on the
        grid s * Z^3 (Scaffold-GS rounds points to that grid). Features and offsets start at zero and
        both halves of the log scaling at log(s): neural Gaussians start at the anchor, one voxel wide.
        """
        if not (math.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive finite number, got {voxel_size}")
        if points.dim() != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise ValueError("points must be finite")
        cells = torch.unique(torch.floor(points / voxel_size + 0.5).long(), dim=0)
        n = cells.shape[0]
        return cls(
            positions=cells.to(points.dtype) * voxel_size,
            features=points.new_zeros(n, feature_dim),
            offsets=points.new_zeros(n, num_offsets, 3),
            log_scaling=points.new_full((n, 6), math.log(voxel_size)),
        )


@dataclass
class SpawnInfo:
    """Origin of each neural Gaussian of a `RenderGaussians`, row by row."""

    anchor_ids: Tensor  # [G] long, row of `Anchors`
    offset_ids: Tensor  # [G] long, in [0, K)


def visible(anchors: Anchors, viewmat: Tensor, K: Tensor, width: int, height: int, margin: float = 0.1) -> Tensor:
    """Anchors worth decoding for one view: [N] bool.

    An anchor counts if its centre is in front of the camera and projects inside the image grown by
    `margin` of its width and height on every side; the margin keeps anchors whose Gaussians reach
    into the image from just outside it. `viewmat` is gsplat's world-to-camera [4, 4] (OpenCV axes).
    """
    if viewmat.shape != (4, 4):
        raise ValueError(f"viewmat must be [4, 4], got {tuple(viewmat.shape)}")
    if K.shape != (3, 3):
        raise ValueError(f"K must be [3, 3], got {tuple(K.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    with torch.no_grad():
        cam = anchors.positions @ viewmat[:3, :3].T + viewmat[:3, 3]
        z = cam[:, 2]
        in_front = z > 0
        z_safe = torch.where(in_front, z, torch.ones_like(z))
        u = K[0, 0] * cam[:, 0] / z_safe + K[0, 2]
        v = K[1, 1] * cam[:, 1] / z_safe + K[1, 2]
        inside_u = (u >= -margin * width) & (u <= (1 + margin) * width)
        inside_v = (v >= -margin * height) & (v <= (1 + margin) * height)
        return in_front & inside_u & inside_v


def _check_decoder(anchors: Anchors, decoder: AnchorDecoder) -> None:
    if anchors.num_offsets != decoder.config.num_offsets:
        raise ValueError(f"anchors have {anchors.num_offsets} offsets, the decoder {decoder.config.num_offsets}")


def _neural_gaussians(
    anchors: Anchors, decoder: AnchorDecoder, ids: Tensor, view_dirs: Tensor
) -> Tuple[RenderGaussians, SpawnInfo]:
    """Decode anchors `ids` seen along unit `view_dirs` [M, 3]; keep Gaussians with opacity > 0."""
    return assemble_gaussians(anchors, ids, decoder(anchors.features[ids], view_dirs))


def assemble_gaussians(anchors: Anchors, ids: Tensor, decoded: Dict[str, Tensor]) -> Tuple[RenderGaussians, SpawnInfo]:
    """Neural Gaussians of anchors `ids` [M] from their decoder outputs (`AnchorDecoder.forward` of
    their features); those with opacity <= 0 are dropped.

    Split from decoding so a caller can keep the decoder outputs, e.g. for a consistency loss.
    """
    scaling = torch.exp(anchors.log_scaling[ids])
    means = anchors.positions[ids, None, :] + anchors.offsets[ids] * scaling[:, None, :3]
    scales = scaling[:, None, 3:] * decoded["scale"]
    k = anchors.num_offsets
    keep = (decoded["opacity"] > 0).reshape(-1)
    gaussians = RenderGaussians(
        means=means.reshape(-1, 3)[keep],
        quats=decoded["rotation"].reshape(-1, 4)[keep],
        scales=scales.reshape(-1, 3)[keep],
        opacities=decoded["opacity"].reshape(-1)[keep],
        colors=decoded["color"].reshape(-1, 3)[keep],
        sh_degree=None,
    )
    info = SpawnInfo(
        anchor_ids=ids.repeat_interleave(k)[keep],
        offset_ids=torch.arange(k, device=ids.device).repeat(ids.shape[0])[keep],
    )
    return gaussians, info


def spawn_gaussians(
    anchors: Anchors, decoder: AnchorDecoder, camera_center: Tensor, mask: Optional[Tensor] = None
) -> Tuple[RenderGaussians, SpawnInfo]:
    """The neural Gaussians of one view (Scaffold-GS): RGB colours, so rasterise with sh_degree=None.

    Each selected anchor (all when `mask` [N] bool is None, usually `visible(...)`) is decoded with the
    unit direction from `camera_center` [3] to it; Gaussian i sits at
    position + offsets[i] * exp(log_scaling[:3]) with scale exp(log_scaling[3:]) * decoded factor.
    """
    _check_decoder(anchors, decoder)
    if camera_center.shape != (3,):
        raise ValueError(f"camera_center must be [3], got {tuple(camera_center.shape)}")
    if mask is None:
        ids = torch.arange(anchors.num_anchors, device=anchors.positions.device)
    else:
        if mask.shape != (anchors.num_anchors,) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be [{anchors.num_anchors}] bool, got {mask.dtype} {tuple(mask.shape)}")
        ids = mask.nonzero().squeeze(1)
    view_dirs = F.normalize(anchors.positions[ids] - camera_center, dim=-1)
    return _neural_gaussians(anchors, decoder, ids, view_dirs)


def accumulate_per_offset(num_anchors: int, num_offsets: int, info: SpawnInfo, values: Tensor) -> Tensor:
    """Sum of `values` [G] (one per neural Gaussian) into [num_anchors, num_offsets]; detached.

    A training statistic, not a loss: Scaffold-GS grows anchors per offset from accumulated
    screen-space gradient norms and prunes them from accumulated opacity.
    """
    if values.shape != info.anchor_ids.shape:
        raise ValueError(f"values must be [{info.anchor_ids.shape[0]}], got {tuple(values.shape)}")
    if values.numel() and int(info.offset_ids.max()) >= num_offsets:
        raise ValueError(f"offset ids reach {int(info.offset_ids.max())}, but num_offsets is {num_offsets}")
    flat = info.anchor_ids * num_offsets + info.offset_ids
    sums = values.new_zeros(num_anchors * num_offsets).index_add_(0, flat, values.detach())
    return sums.reshape(num_anchors, num_offsets)


def accumulate_opacity(num_anchors: int, info: SpawnInfo, opacities: Tensor) -> Tensor:
    """Sum [num_anchors] of the opacities of each anchor's rasterised neural Gaussians; detached.

    Equal to Scaffold-GS's per-view opacity accumulation (negative opacities count as 0 there, and
    are never spawned here); anchors that spawned nothing get 0.
    """
    if opacities.shape != info.anchor_ids.shape:
        raise ValueError(f"opacities must be [{info.anchor_ids.shape[0]}], got {tuple(opacities.shape)}")
    return opacities.new_zeros(num_anchors).index_add_(0, info.anchor_ids, opacities.detach())
