"""Small in-process splat models and cameras for unit tests (CPU, no data on disk)."""

from __future__ import annotations

import math

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.optimizers import Optimizers

from distilled_gs_ns.models.initialisation import seed_box
from distilled_gs_ns.models.splat_base import SplatBaseModel, SplatBaseModelConfig

SIZE = 32


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Camera-to-world [3, 4] in nerfstudio's OpenGL convention (looking along -z, y up)."""
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    return torch.stack([right, up, -forward, eye], dim=1)


def ring_cameras(count: int = 8, radius: float = 3.0, target=(0.2, -0.1, 0.1)) -> Cameras:
    target_t = torch.tensor(target)
    poses = []
    for i in range(count):
        angle = 2 * math.pi * i / count
        eye = target_t + torch.tensor([radius * math.cos(angle), radius * math.sin(angle), 1.0])
        poses.append(look_at(eye, target_t))
    return square_cameras(torch.stack(poses))


def square_cameras(camera_to_worlds: torch.Tensor) -> Cameras:
    """SIZE x SIZE pinhole cameras with focal length SIZE at poses [C, 3, 4]."""
    return Cameras(
        camera_to_worlds=camera_to_worlds,
        fx=float(SIZE),
        fy=float(SIZE),
        cx=SIZE / 2,
        cy=SIZE / 2,
        width=SIZE,
        height=SIZE,
        camera_type=CameraType.PERSPECTIVE,
    )


def make_model(config: SplatBaseModelConfig | None = None, num: int = 400) -> SplatBaseModel:
    torch.manual_seed(0)
    config = config or SplatBaseModelConfig()
    config.num_random = num
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=scene_box, num_train_data=8, metadata={}, device="cpu")
    cams = ring_cameras()
    model.place_random_seeds(seed_box(scene_box.aabb, cams.camera_to_worlds, torch.full((8,), 0.5)))
    return model


def train_step(model: SplatBaseModel, optimizers: Optimizers, step: int) -> None:
    model.train()
    model.step_cb(optimizers, step)
    camera = ring_cameras()[step % 8 : step % 8 + 1]
    outputs = model.get_outputs(camera)
    target = torch.full_like(outputs["rgb"], 0.5)
    loss = (outputs["rgb"] - target).abs().mean()
    optimizers.zero_grad_all()
    loss.backward()
    optimizers.optimizer_step_all()
    model.step_post_backward(step)
