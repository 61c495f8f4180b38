"""Rotating view-dependent colour: the SH coefficients a splat needs after its frame is rotated.

A Gaussian's colour is a function of the viewing direction d, c(d) = sum_k coeff_k Y_k(d). Turning
the world by R (directions d' = R d) must keep every Gaussian's colour from every camera, so the new
coefficients satisfy sum_k coeff'_k Y_k(d') = sum_k coeff_k Y_k(R^T d'). Each SH band is closed
under rotation, so per band l there is a (2l+1) x (2l+1) matrix M_l (the real Wigner D matrix in the
3DGS basis) with Y_l(R^T d) = M_l Y_l(d), and coeff'_l = M_l^T coeff_l.

M_l is solved exactly (least squares on more directions than unknowns, residual at float precision)
from the SH basis gsplat renders with, so its order and sign conventions cannot drift from the
rasteriser's. Leaving bands 1-3 unrotated would turn every view-dependent highlight with the frame.
"""

from __future__ import annotations

from typing import List

import numpy as np
import torch
from gsplat.cuda._torch_impl import _spherical_harmonics

MAX_DEGREE = 3
_BAND_SLICES = [slice(l * l - 1, (l + 1) ** 2 - 1) for l in range(1, MAX_DEGREE + 1)]
"""Each band's rows in the higher-band coefficients (bands 1-3, i.e. without the DC term)."""


def sh_basis(directions: np.ndarray, degree: int = MAX_DEGREE) -> np.ndarray:
    """[M, (degree+1)^2] real SH basis at unit `directions` [M, 3], as gsplat evaluates it."""
    dirs = torch.from_numpy(np.asarray(directions, dtype=np.float64))
    bases = (degree + 1) ** 2
    eye = torch.eye(bases, dtype=torch.float64)
    # One-hot coefficients per basis function: colour channel 0 of coefficient k is Y_k(d).
    coeffs = eye[:, None, :, None].expand(bases, dirs.shape[0], bases, 1)
    values = _spherical_harmonics(degree, dirs[None].expand(bases, -1, -1), coeffs)[..., 0]
    return values.T.numpy()


def band_rotations(rotation: np.ndarray, degree: int = MAX_DEGREE) -> List[np.ndarray]:
    """Per band 1..degree, the matrix M_l^T that maps old coefficients to the rotated frame's."""
    rotation = np.asarray(rotation, dtype=np.float64)
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5) or np.linalg.det(rotation) < 0:
        raise ValueError("SH coefficients can only be rotated by a proper rotation matrix")
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    before = sh_basis(dirs @ rotation, degree)  # Y(R^T d) for each row d
    after = sh_basis(dirs, degree)  # Y(d)
    matrices = []
    for band in _BAND_SLICES[:degree]:
        columns = slice(band.start + 1, band.stop + 1)  # the basis includes the DC term at 0
        # Y_l(R^T d) = M_l Y_l(d) for every d: solve after_l @ M_l^T = before_l.
        m_transposed, *_ = np.linalg.lstsq(after[:, columns], before[:, columns], rcond=None)
        matrices.append(m_transposed)
    return matrices


def rotate_sh(sh_rest: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Higher-band coefficients [N, K, 3] (K = 0, 3, 8 or 15) expressed in a frame turned by `rotation`."""
    k = sh_rest.shape[1]
    if k == 0:
        return sh_rest
    degree = {3: 1, 8: 2, 15: 3}[k]
    out = np.empty_like(sh_rest)
    for band, matrix in zip(_BAND_SLICES[:degree], band_rotations(rotation, degree)):
        # coeff'_l = M_l^T coeff_l per Gaussian and channel: [N, 2l+1, 3]
        out[:, band] = np.einsum("ij,njc->nic", matrix, sh_rest[:, band].astype(np.float64)).astype(sh_rest.dtype)
    return out
