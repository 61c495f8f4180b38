"""Fused teacher renders ("pseudo-labels"), rendered once and cached for the whole student run.

Each label is stored like a ground-truth image with straight alpha (RGBA, uint8 or float16, on the
CPU): the teachers' premultiplied colours and alphas are averaged (a linear, order-free fusion) and
un-premultiplied. The student composites a label with its own background exactly as it does the
ground truth, so the label stays right whatever background the student trains with, and it is
downscaled with the same resolution schedule.

With depth, each label also carries the teachers' fused expected depth, premultiplied like the colour
(float16 [H, W, 2]: alpha x depth and alpha, so downscaling averages it correctly at edges): what the
teachers know that the ground truth does not say at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional, Sequence

import torch
from rich.progress import track
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras

from distilled_gs_ns.distillation.renderer import SplatRenderer
from distilled_gs_ns.errors import UserInputError

LabelDtype = Literal["uint8", "float16"]


@dataclass
class PseudoLabels:
    """One fused RGBA label per camera; index with the camera's position in its Cameras."""

    images: List[Tensor]  # [H, W, 4] each, straight alpha
    intrinsics: Tensor  # [V, 4] fx, fy, cx, cy of the camera each label was rendered for
    depths: Optional[List[Tensor]] = None  # [H, W, 2] float16 each: alpha x expected depth, alpha

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.images, *(self.depths or [])])


def fusion_weights(num_teachers: int, weights: Optional[Sequence[float]]) -> Tensor:
    """Per-teacher weights summing to 1: the plain mean (paper) unless weights are given."""
    if weights is None:
        return torch.full((num_teachers,), 1.0 / num_teachers)
    if len(weights) != num_teachers:
        raise UserInputError(f"pipeline.teacher-weights has {len(weights)} values for {num_teachers} teachers")
    w = torch.tensor([float(x) for x in weights])
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise UserInputError(f"pipeline.teacher-weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return w / w.sum()


@torch.no_grad()
def render_pseudo_labels(
    teachers: Sequence[SplatRenderer],
    cameras: Cameras,
    weights: Tensor,
    dtype: LabelDtype = "uint8",
    description: str = "rendering teacher pseudo-labels",
    with_depth: bool = False,
) -> PseudoLabels:
    """Render every camera with every teacher at full resolution and fuse the renders (and, with
    `with_depth`, their expected depths, weighted by each teacher's weight and coverage)."""
    images, depths = [], []
    intrinsics = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).reshape(-1, 4).float().cpu()
    mode = "RGB+ED" if with_depth else "RGB"
    for index in track(range(cameras.shape[0]), description=description, transient=True):
        premultiplied: Tensor = torch.zeros(())
        alpha: Tensor = torch.zeros(())
        depth: Tensor = torch.zeros(())
        for weight, model in zip(weights.tolist(), teachers):
            render, coverage, _ = model.rasterize_view(model.gaussians_for_render(None), cameras[index : index + 1], render_mode=mode)
            acc = coverage[0].clamp(0.0, 1.0) * weight
            premultiplied = premultiplied + render[0, ..., :3].clamp(0.0, 1.0) * weight
            alpha = alpha + acc
            if with_depth:
                depth = depth + render[0, ..., 3:4] * acc  # gsplat's ED is normalised by the teacher's alpha
        straight = torch.where(alpha > 1e-4, premultiplied / alpha.clamp(min=1e-4), torch.zeros_like(premultiplied))
        images.append(_store(torch.cat([straight.clamp(0.0, 1.0), alpha], dim=-1).cpu(), dtype))
        if with_depth:
            depths.append(torch.cat([depth, alpha], dim=-1).cpu().to(torch.float16))
    return PseudoLabels(images, intrinsics, depths if with_depth else None)


def check_labels_match_views(labels: PseudoLabels, cameras: Cameras, images: Sequence[Tensor]) -> None:
    """Refuse labels that do not line up with the ground truth they are trained beside.

    Each label must have its view's image size and have been rendered with the intrinsics of the
    camera served with that image: undistortion can keep the size and still move the principal
    point or focal length (fisheye), which no shape check in a loss would catch.
    """
    served = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).reshape(-1, 4).float().cpu()
    if len(labels) != len(images) or labels.intrinsics.shape != served.shape:
        raise UserInputError(f"{len(labels)} pseudo-labels for {len(images)} training images")
    for index, (label, image) in enumerate(zip(labels.images, images)):
        if tuple(label.shape[:2]) != tuple(image.shape[:2]):
            raise UserInputError(
                f"pseudo-label {index} is {label.shape[1]}x{label.shape[0]} px but its training image is "
                f"{image.shape[1]}x{image.shape[0]} px: the label was rendered for another camera than the one "
                "the datamanager serves (e.g. before undistortion)"
            )
    offset = (labels.intrinsics - served).abs() / served.abs().clamp(min=1.0)
    if bool((offset > 1e-4).any()):
        index = int(offset.max(dim=-1).values.argmax())
        raise UserInputError(
            f"pseudo-label {index} was rendered with intrinsics (fx, fy, cx, cy) {labels.intrinsics[index].tolist()} "
            f"but its training image is served with {served[index].tolist()}: the label would be misaligned"
        )


def _store(rgba: Tensor, dtype: LabelDtype) -> Tensor:
    if dtype == "uint8":
        return (rgba * 255.0).round().to(torch.uint8)
    return rgba.to(torch.float16)


def jittered_cameras(cameras: Cameras, count: int, jitter: float, seed: int = 0) -> Cameras:
    """`count` cameras near the training views: a training pose moved by Gaussian noise.

    The noise std is `jitter` times the median distance of the cameras from their centroid, so it
    scales with the capture; orientation and intrinsics are the source view's.
    """
    generator = torch.Generator().manual_seed(seed)
    source = torch.arange(count) % cameras.shape[0]
    chosen = cameras[source]
    centres = cameras.camera_to_worlds[:, :3, 3]
    spread = (centres - centres.mean(dim=0)).norm(dim=-1).median()
    poses = chosen.camera_to_worlds.clone()
    poses[:, :3, 3] += torch.randn(count, 3, generator=generator).to(poses) * jitter * spread
    chosen.camera_to_worlds = poses
    return chosen


def cameras_between(cameras: Cameras, count: int, neighbours: int = 4, seed: int = 0) -> Cameras:
    """`count` cameras between pairs of nearby training views: where a held-out view of the same
    capture is likely to be, and where no ground truth exists.

    Each one takes a training camera (in turn) and one of its `neighbours` nearest others (at random),
    and a pose a uniform fraction t in [0.25, 0.75] of the way from the first to the second: position
    linear, orientation by quaternion slerp; intrinsics are the first camera's.
    """
    from nerfstudio.cameras.camera_utils import quaternion_from_matrix, quaternion_matrix, quaternion_slerp

    total = cameras.shape[0]
    if total < 2:
        raise UserInputError("pseudo-views between training views need at least 2 training cameras")
    generator = torch.Generator().manual_seed(seed)
    poses = cameras.camera_to_worlds.detach().cpu().double()
    centres = poses[:, :3, 3]
    distances = torch.cdist(centres, centres)
    distances.fill_diagonal_(float("inf"))
    nearest = distances.topk(min(neighbours, total - 1), largest=False).indices
    source = torch.arange(count) % total
    pick = torch.randint(nearest.shape[1], (count,), generator=generator)
    fractions = 0.25 + 0.5 * torch.rand(count, generator=generator, dtype=torch.float64)
    chosen = cameras[source]
    result = chosen.camera_to_worlds.clone()
    for k in range(count):
        a, b, t = poses[source[k]], poses[nearest[source[k], pick[k]]], float(fractions[k])
        rotation = quaternion_matrix(
            quaternion_slerp(quaternion_from_matrix(a[:3, :3].numpy()), quaternion_from_matrix(b[:3, :3].numpy()), t)
        )[:3, :3]
        result[k, :3, :3] = torch.from_numpy(rotation).to(result)
        result[k, :3, 3] = ((1 - t) * a[:3, 3] + t * b[:3, 3]).to(result)
    chosen.camera_to_worlds = result
    return chosen
