"""The scene's ground plane, found from the cameras, so blocks can be laid out as a 2D grid on it.

Large captures (aerial, street-level) are wide and flat: splitting along the two ground axes gives
blocks of similar content, whereas splitting along height would cut every building in two.
"""

from __future__ import annotations

import torch
from torch import Tensor


def detect_up_axis(camera_to_worlds: Tensor) -> Tensor:
    """Unit [3] world up direction from nerfstudio camera-to-worlds [C, 3, 4] (OpenGL axes, +y up).

    Photographers hold cameras roughly upright, so the mean of the image-up vectors points up. When
    the ups cancel out (mean norm < 0.3, e.g. nadir views with every yaw), the cameras' positions
    still lie near a plane parallel to the ground (a flight altitude): its normal, signed to agree
    with the mean up vector, is used instead.
    """
    if camera_to_worlds.dim() != 3 or camera_to_worlds.shape[1:] != (3, 4) or camera_to_worlds.shape[0] == 0:
        raise ValueError(f"camera_to_worlds must be [C, 3, 4] with C >= 1, got {tuple(camera_to_worlds.shape)}")
    c2w = camera_to_worlds.detach().double()
    mean_up = c2w[:, :, 1].mean(0)
    if mean_up.norm() >= 0.3:
        return (mean_up / mean_up.norm()).to(camera_to_worlds.dtype)
    centred = c2w[:, :, 3] - c2w[:, :, 3].mean(0)
    _, sing, vh = torch.linalg.svd(centred, full_matrices=True)
    if centred.shape[0] < 3 or sing[1] <= 1e-6 * sing[0]:
        raise ValueError(
            "cannot find the up axis: the camera up vectors cancel out and the camera positions are "
            "collinear (or fewer than 3), so they do not span a plane either"
        )
    normal = vh[2]
    if (normal @ mean_up) < 0:
        normal = -normal
    return normal.to(camera_to_worlds.dtype)


def ground_basis(up: Tensor) -> Tensor:
    """[2, 3] orthonormal axes (u, v) of the plane orthogonal to `up`, with (u, v, up) right-handed.

    Deterministic: u is the world axis least aligned with `up` (the first such on ties) made
    orthogonal to it, so a z-up world gets u = x and v = y.
    """
    if up.shape != (3,):
        raise ValueError(f"up must be a [3] vector, got {tuple(up.shape)}")
    up_d = up.detach().double()
    if up_d.norm() < 1e-8:
        raise ValueError("up must be non-zero")
    up_d = up_d / up_d.norm()
    seed_axis = torch.zeros(3, dtype=torch.float64)
    seed_axis[int(up_d.abs().argmin())] = 1.0
    u = seed_axis - (seed_axis @ up_d) * up_d
    u = u / u.norm()
    v = torch.linalg.cross(up_d, u)
    return torch.stack([u, v]).to(up.dtype)
