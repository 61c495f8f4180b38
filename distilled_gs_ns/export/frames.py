"""The two world frames a splat can live in, and the similarity transform between them.

A capture's own frame is the one its poses were solved in (COLMAP's world; for an
`ns-process-data` capture, the COLMAP frame before its `applied_transform`): the frame of a splat
trained by the reference 3DGS code, gsplat's trainer or most apps. nerfstudio's dataparsers orient,
centre and scale the poses into the *dataparser frame*, where every ns-train model (and the PLY
`ns-export gaussian-splat` writes) lives:

    x_dataparser = scale * (T @ [x_capture; 1])      (T: dataparser_transform, 3x4)

which is what nerfstudio saves as the run's dataparser_transforms.json. Mapping a splat through a
similarity x' = s R x + t moves its means, turns its rotations by R, multiplies its scales by s and
rotates its view-dependent colour (export/sh_rotation.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.sh_rotation import rotate_sh
from distilled_gs_ns.export.splat_data import SplatData

Frame = Literal["capture", "dataparser"]


@dataclass(frozen=True)
class Similarity:
    """x' = scale * rotation @ x + translation (a proper rotation, positive scale)."""

    rotation: np.ndarray  # [3, 3]
    translation: np.ndarray  # [3]
    scale: float

    @staticmethod
    def identity() -> "Similarity":
        return Similarity(np.eye(3), np.zeros(3), 1.0)

    @staticmethod
    def from_dataparser(transform: np.ndarray, scale: float) -> "Similarity":
        """Capture frame -> dataparser frame, from nerfstudio's dataparser_transform (3x4) and scale."""
        transform = np.asarray(transform, dtype=np.float64).reshape(3, 4)
        rotation = transform[:, :3]
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
            raise UserInputError("the dataparser transform is not a rotation and translation: cannot map splats through it")
        return Similarity(rotation, scale * transform[:, 3], float(scale))

    def inverse(self) -> "Similarity":
        rotation = self.rotation.T
        return Similarity(rotation, -(rotation @ self.translation) / self.scale, 1.0 / self.scale)

    def points(self, xyz: np.ndarray) -> np.ndarray:
        return (self.scale * np.asarray(xyz, np.float64) @ self.rotation.T + self.translation).astype(np.float32)

    def splat(self, data: SplatData) -> SplatData:
        """The same Gaussians, renders and colours unchanged, expressed in the target frame."""
        return SplatData(
            means=self.points(data.means),
            log_scales=(data.log_scales + np.float32(np.log(self.scale))).astype(np.float32),
            quats=rotate_quaternions(data.quats, self.rotation),
            opacity_logits=data.opacity_logits,
            sh_dc=data.sh_dc,
            sh_rest=rotate_sh(data.sh_rest, self.rotation),
        )


def rotate_quaternions(quats: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """q_R * q for every (w, x, y, z) row: the Gaussian's axes turned by `rotation` (norms kept)."""
    from scipy.spatial.transform import Rotation

    w, x, y, z = Rotation.from_matrix(rotation).as_quat()[[3, 0, 1, 2]]
    q = np.asarray(quats, np.float64)
    a, b, c, d = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    out = np.stack(
        [
            w * a - x * b - y * c - z * d,
            w * b + x * a + y * d - z * c,
            w * c - x * d + y * a + z * b,
            w * d + x * c - y * b + z * a,
        ],
        axis=1,
    )
    return out.astype(np.float32)


def run_capture_to_dataparser(run_dir: Path) -> Similarity:
    """Capture -> dataparser frame of a finished ns-train run, from its dataparser_transforms.json."""
    path = Path(run_dir) / "dataparser_transforms.json"
    if not path.exists():
        raise UserInputError(f"{path} is missing: the run's capture frame is unknown (was it written by ns-train?)")
    saved = json.loads(path.read_text())
    return Similarity.from_dataparser(np.asarray(saved["transform"]), float(saved["scale"]))
