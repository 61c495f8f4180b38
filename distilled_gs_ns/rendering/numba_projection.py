"""Projection and SH colours compiled with numba: the per-Gaussian half of the fast CPU path.

The same maths as `projection.py` (gsplat 1.4.0's PyTorch reference, which autograd differentiates
through some hundred small tensor operations per step), fused into one pass per Gaussian for the
forward and one for a hand-written backward, as gsplat's CUDA `fully_fused_projection` and
`spherical_harmonics` kernels do. Work is split over Gaussians; each one loops over the cameras, so
no two threads write the same gradient. Arithmetic is in float64 whatever the input precision (the
outputs are rounded once), which keeps float32 results within rounding of the PyTorch reference.

Gradients reach means, quaternions, scales and SH coefficients; camera poses and intrinsics get
none (the caller falls back to the PyTorch reference when a pose needs a gradient). SH colours pass
gradients to the means through the view direction, as the reference and gsplat's kernels do.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from distilled_gs_ns.rendering.numba_launch import NUMPY_DTYPES, as_numpy, launch
from distilled_gs_ns.rendering.projection import ProjectedGaussians

MAX_SH_DEGREE = 4
_DET_MIN = 1e-10  # gsplat clamps the blurred 2D covariance's determinant to this
_NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's eps, as the SH reference uses


@njit(cache=True)
def _rotation(w, x, y, z):
    """Rotation matrix (row-major, 9 scalars) of a unit quaternion (w, x, y, z)."""
    return (
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    )  # fmt: skip


@njit(cache=True)
def _unit_quat(quats, n):
    w, x, y, z = np.float64(quats[n, 0]), np.float64(quats[n, 1]), np.float64(quats[n, 2]), np.float64(quats[n, 3])
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    return w / norm, x / norm, y / norm, z / norm, norm


@njit(cache=True)
def _world_covariance(R, s0, s1, s2):
    """Sigma = M M^T with M = R diag(s); returns M (9) and the 6 unique entries of Sigma."""
    m = (R[0] * s0, R[1] * s1, R[2] * s2, R[3] * s0, R[4] * s1, R[5] * s2, R[6] * s0, R[7] * s1, R[8] * s2)
    c00 = m[0] * m[0] + m[1] * m[1] + m[2] * m[2]
    c01 = m[0] * m[3] + m[1] * m[4] + m[2] * m[5]
    c02 = m[0] * m[6] + m[1] * m[7] + m[2] * m[8]
    c11 = m[3] * m[3] + m[4] * m[4] + m[5] * m[5]
    c12 = m[3] * m[6] + m[4] * m[7] + m[5] * m[8]
    c22 = m[6] * m[6] + m[7] * m[7] + m[8] * m[8]
    return m, (c00, c01, c02, c11, c12, c22)


@njit(cache=True)
def _sym(s, i, j):
    """Entry (i, j) of a symmetric 3x3 matrix stored as (00, 01, 02, 11, 12, 22)."""
    if i > j:
        i, j = j, i
    if i == 0:
        return s[j]
    if i == 1:
        return s[2 + j]
    return s[5]


@njit(cache=True)
def _rotated_entry(W, S, i, j):
    """Entry (i, j) of W S W^T for a row-major 3x3 W (9-tuple) and a symmetric S (6 entries)."""
    acc = 0.0
    for a in range(3):
        for b in range(3):
            acc += W[3 * i + a] * _sym(S, a, b) * W[3 * j + b]
    return acc


@njit(cache=True)
def _rotate_covariance(W, S):
    """W S W^T as its 6 unique entries."""
    return (
        _rotated_entry(W, S, 0, 0), _rotated_entry(W, S, 0, 1), _rotated_entry(W, S, 0, 2),
        _rotated_entry(W, S, 1, 1), _rotated_entry(W, S, 1, 2), _rotated_entry(W, S, 2, 2),
    )  # fmt: skip


@njit(cache=True)
def _camera(viewmats, Ks, c, width, height):
    W = (
        np.float64(viewmats[c, 0, 0]), np.float64(viewmats[c, 0, 1]), np.float64(viewmats[c, 0, 2]),
        np.float64(viewmats[c, 1, 0]), np.float64(viewmats[c, 1, 1]), np.float64(viewmats[c, 1, 2]),
        np.float64(viewmats[c, 2, 0]), np.float64(viewmats[c, 2, 1]), np.float64(viewmats[c, 2, 2]),
    )  # fmt: skip
    t = (np.float64(viewmats[c, 0, 3]), np.float64(viewmats[c, 1, 3]), np.float64(viewmats[c, 2, 3]))
    fx, fy = np.float64(Ks[c, 0, 0]), np.float64(Ks[c, 1, 1])
    cx, cy = np.float64(Ks[c, 0, 2]), np.float64(Ks[c, 1, 2])
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    return W, t, fx, fy, (lim_x_neg, lim_x_pos, lim_y_neg, lim_y_pos)


@njit(cache=True)
def _to_camera(W, t, means, n):
    mx, my, mz = np.float64(means[n, 0]), np.float64(means[n, 1]), np.float64(means[n, 2])
    return (
        W[0] * mx + W[1] * my + W[2] * mz + t[0],
        W[3] * mx + W[4] * my + W[5] * mz + t[1],
        W[6] * mx + W[7] * my + W[8] * mz + t[2],
    )


@njit(cache=True, parallel=True)
def _project_forward(
    means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, radius_clip,
    means2d, conics, depths, radii, compensations,
):  # fmt: skip
    n_cams = viewmats.shape[0]
    for n in prange(means.shape[0]):
        w, x, y, z, _ = _unit_quat(quats, n)
        _, S = _world_covariance(_rotation(w, x, y, z), np.float64(scales[n, 0]), np.float64(scales[n, 1]), np.float64(scales[n, 2]))
        for c in range(n_cams):
            W, t, fx, fy, lim = _camera(viewmats, Ks, c, width, height)
            tx, ty, tz = _to_camera(W, t, means, n)
            Sc = _rotate_covariance(W, S)
            txc = tz * min(max(tx / tz, -lim[0]), lim[1])
            tyc = tz * min(max(ty / tz, -lim[2]), lim[3])
            j00, j02 = fx / tz, -fx * txc / (tz * tz)
            j11, j12 = fy / tz, -fy * tyc / (tz * tz)
            a = j00 * j00 * Sc[0] + 2.0 * j00 * j02 * Sc[2] + j02 * j02 * Sc[5]
            b = j00 * j11 * Sc[1] + j00 * j12 * Sc[2] + j02 * j11 * Sc[4] + j02 * j12 * Sc[5]
            d = j11 * j11 * Sc[3] + 2.0 * j11 * j12 * Sc[4] + j12 * j12 * Sc[5]
            det_orig = a * d - b * b
            a += eps2d
            d += eps2d
            det = max(a * d - b * b, _DET_MIN)
            compensations[c, n] = math.sqrt(max(det_orig / det, 0.0))
            conics[c, n, 0] = d / det
            conics[c, n, 1] = -b / det
            conics[c, n, 2] = a / det
            u = (Ks[c, 0, 0] * tx + Ks[c, 0, 1] * ty + Ks[c, 0, 2] * tz) / tz
            v = (Ks[c, 1, 0] * tx + Ks[c, 1, 1] * ty + Ks[c, 1, 2] * tz) / tz
            means2d[c, n, 0] = u
            means2d[c, n, 1] = v
            depths[c, n] = tz
            half = 0.5 * (a + d)
            radius = math.ceil(3.0 * math.sqrt(half + math.sqrt(max(half * half - det, 0.01))))
            visible = tz > near and tz < far
            inside = u + radius > 0 and u - radius < width and v + radius > 0 and v - radius < height
            if not (visible and inside) or (radius_clip > 0 and radius <= radius_clip):
                radius = 0.0
            radii[c, n] = np.int32(radius)


@njit(cache=True, parallel=True)
def _project_backward(
    means, quats, scales, viewmats, Ks, width, height, eps2d,
    v_means2d, v_conics, v_depths, v_compensations, v_means, v_quats, v_scales, scratch,
):  # fmt: skip
    n_cams = viewmats.shape[0]
    for n in prange(means.shape[0]):
        work = scratch[n]
        w, x, y, z, norm = _unit_quat(quats, n)
        R = _rotation(w, x, y, z)
        s0, s1, s2 = np.float64(scales[n, 0]), np.float64(scales[n, 1]), np.float64(scales[n, 2])
        M, S = _world_covariance(R, s0, s1, s2)
        vS, vmu, vM, g = work[0:9], work[9:12], work[12:21], work[21:30]  # dL/dSigma (3x3), dL/dmu, dL/dM, dL/dR
        vS[:] = 0.0
        vmu[:] = 0.0
        for c in range(n_cams):
            g_u, g_v = np.float64(v_means2d[c, n, 0]), np.float64(v_means2d[c, n, 1])
            g_c0, g_c1, g_c2 = np.float64(v_conics[c, n, 0]), np.float64(v_conics[c, n, 1]), np.float64(v_conics[c, n, 2])
            g_depth, g_comp = np.float64(v_depths[c, n]), np.float64(v_compensations[c, n])
            if g_u == 0.0 and g_v == 0.0 and g_c0 == 0.0 and g_c1 == 0.0 and g_c2 == 0.0 and g_depth == 0.0 and g_comp == 0.0:
                continue
            W, t, fx, fy, lim = _camera(viewmats, Ks, c, width, height)
            tx, ty, tz = _to_camera(W, t, means, n)
            Sc = _rotate_covariance(W, S)
            ux, uy = tx / tz, ty / tz
            clamped_x = ux < -lim[0] or ux > lim[1]
            clamped_y = uy < -lim[2] or uy > lim[3]
            ucx, ucy = min(max(ux, -lim[0]), lim[1]), min(max(uy, -lim[2]), lim[3])
            txc, tyc = tz * ucx, tz * ucy
            tz2 = tz * tz
            j00, j02 = fx / tz, -fx * txc / tz2
            j11, j12 = fy / tz, -fy * tyc / tz2
            a = j00 * j00 * Sc[0] + 2.0 * j00 * j02 * Sc[2] + j02 * j02 * Sc[5]
            b = j00 * j11 * Sc[1] + j00 * j12 * Sc[2] + j02 * j11 * Sc[4] + j02 * j12 * Sc[5]
            d = j11 * j11 * Sc[3] + 2.0 * j11 * j12 * Sc[4] + j12 * j12 * Sc[5]
            det_orig = a * d - b * b
            ab, db = a + eps2d, d + eps2d
            det_raw = ab * db - b * b
            det = max(det_raw, _DET_MIN)
            # conics = (db, -b, ab) / det
            g_ab = g_c2 / det
            g_db = g_c0 / det
            g_b = -g_c1 / det
            g_det = -(g_c0 * db - g_c1 * b + g_c2 * ab) / (det * det)
            ratio = det_orig / det
            g_det_orig = 0.0
            if ratio > 0.0 and g_comp != 0.0:
                g_ratio = g_comp * 0.5 / math.sqrt(ratio)
                g_det_orig = g_ratio / det
                g_det -= g_ratio * det_orig / (det * det)
            if det_raw < _DET_MIN:
                g_det = 0.0
            g_ab += g_det * db
            g_db += g_det * ab
            g_b -= 2.0 * b * g_det
            g_a = g_ab + g_det_orig * d
            g_d = g_db + g_det_orig * a
            g_b -= 2.0 * b * g_det_orig
            # cov2d = J Sc J^T, J = [[j00, 0, j02], [0, j11, j12]]; G = [[g_a, g_b/2], [g_b/2, g_d]]
            hb = 0.5 * g_b
            # dL/dSc = J^T G J (symmetric 3x3, full)
            J0 = (j00, 0.0, j02)
            J1 = (0.0, j11, j12)
            # dL/dJ = 2 G J Sc: row 0 = 2 (g_a J0 + hb J1) Sc, row 1 = 2 (hb J0 + g_d J1) Sc
            r0 = (g_a * J0[0] + hb * J1[0], g_a * J0[1] + hb * J1[1], g_a * J0[2] + hb * J1[2])
            r1 = (hb * J0[0] + g_d * J1[0], hb * J0[1] + g_d * J1[1], hb * J0[2] + g_d * J1[2])
            v_j00 = 2.0 * (r0[0] * Sc[0] + r0[1] * Sc[1] + r0[2] * Sc[2])
            v_j02 = 2.0 * (r0[0] * Sc[2] + r0[1] * Sc[4] + r0[2] * Sc[5])
            v_j11 = 2.0 * (r1[0] * Sc[1] + r1[1] * Sc[3] + r1[2] * Sc[4])
            v_j12 = 2.0 * (r1[0] * Sc[2] + r1[1] * Sc[4] + r1[2] * Sc[5])
            # camera-space mean
            g_tx = (g_u * Ks[c, 0, 0] + g_v * Ks[c, 1, 0]) / tz
            g_ty = (g_u * Ks[c, 0, 1] + g_v * Ks[c, 1, 1]) / tz
            g_tz = g_depth - (
                g_u * (Ks[c, 0, 0] * tx + Ks[c, 0, 1] * ty) + g_v * (Ks[c, 1, 0] * tx + Ks[c, 1, 1] * ty)
            ) / tz2
            g_tz += -v_j00 * fx / tz2 - v_j11 * fy / tz2
            g_tz += v_j02 * 2.0 * fx * txc / (tz2 * tz) + v_j12 * 2.0 * fy * tyc / (tz2 * tz)
            g_txc = -v_j02 * fx / tz2
            g_tyc = -v_j12 * fy / tz2
            if clamped_x:
                g_tz += g_txc * ucx
            else:
                g_tx += g_txc
            if clamped_y:
                g_tz += g_tyc * ucy
            else:
                g_ty += g_tyc
            # p = W mu + t; Sc = W Sigma W^T
            for i in range(3):
                vmu[i] += W[i] * g_tx + W[3 + i] * g_ty + W[6 + i] * g_tz
            for i in range(3):
                for j in range(3):
                    acc = 0.0
                    for a_ in range(3):
                        for b_ in range(3):
                            v_sc = g_a * J0[a_] * J0[b_] + hb * (J0[a_] * J1[b_] + J1[a_] * J0[b_]) + g_d * J1[a_] * J1[b_]
                            acc += W[3 * a_ + i] * v_sc * W[3 * b_ + j]
                    vS[3 * i + j] += acc
        for i in range(3):
            v_means[n, i] = vmu[i]
        # Sigma = M M^T: dL/dM = 2 dL/dSigma M (dL/dSigma symmetric)
        for i in range(3):
            for j in range(3):
                vM[3 * i + j] = 2.0 * (vS[3 * i] * M[j] + vS[3 * i + 1] * M[3 + j] + vS[3 * i + 2] * M[6 + j])
        v_scales[n, 0] = vM[0] * R[0] + vM[3] * R[3] + vM[6] * R[6]
        v_scales[n, 1] = vM[1] * R[1] + vM[4] * R[4] + vM[7] * R[7]
        v_scales[n, 2] = vM[2] * R[2] + vM[5] * R[5] + vM[8] * R[8]
        g[0], g[1], g[2] = vM[0] * s0, vM[1] * s1, vM[2] * s2
        g[3], g[4], g[5] = vM[3] * s0, vM[4] * s1, vM[5] * s2
        g[6], g[7], g[8] = vM[6] * s0, vM[7] * s1, vM[8] * s2
        gw = 2.0 * (-z * g[1] + y * g[2] + z * g[3] - x * g[5] - y * g[6] + x * g[7])
        gx = 2.0 * (y * g[1] + z * g[2] + y * g[3] - 2.0 * x * g[4] - w * g[5] + z * g[6] + w * g[7] - 2.0 * x * g[8])
        gy = 2.0 * (-2.0 * y * g[0] + x * g[1] + w * g[2] + x * g[3] + z * g[5] - w * g[6] + z * g[7] - 2.0 * y * g[8])
        gz = 2.0 * (-2.0 * z * g[0] - w * g[1] + x * g[2] + w * g[3] - 2.0 * z * g[4] + y * g[5] + x * g[6] + y * g[7])
        dot = w * gw + x * gx + y * gy + z * gz  # through q / |q|
        v_quats[n, 0] = (gw - w * dot) / norm
        v_quats[n, 1] = (gx - x * dot) / norm
        v_quats[n, 2] = (gy - y * dot) / norm
        v_quats[n, 3] = (gz - z * dot) / norm


@njit(cache=True)
def _sh_bases(degree, x, y, z, out):
    """Real SH basis up to `degree` (<= 4) at the unit direction (x, y, z): gsplat's constants and order."""
    out[0] = 0.2820947917738781
    if degree < 1:
        return
    out[1] = -0.48860251190292 * y
    out[2] = 0.48860251190292 * z
    out[3] = -0.48860251190292 * x
    if degree < 2:
        return
    z2 = z * z
    fc1 = x * x - y * y
    fs1 = 2.0 * x * y
    out[4] = 0.5462742152960395 * fs1
    out[5] = -1.092548430592079 * z * y
    out[6] = 0.9461746957575601 * z2 - 0.3153915652525201
    out[7] = -1.092548430592079 * z * x
    out[8] = 0.5462742152960395 * fc1
    if degree < 3:
        return
    tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
    tmp_b = 1.445305721320277 * z
    fc2 = x * fc1 - y * fs1
    fs2 = x * fs1 + y * fc1
    out[9] = -0.5900435899266435 * fs2
    out[10] = tmp_b * fs1
    out[11] = tmp_c * y
    out[12] = z * (1.865881662950577 * z2 - 1.119528997770346)
    out[13] = tmp_c * x
    out[14] = tmp_b * fc1
    out[15] = -0.5900435899266435 * fc2
    if degree < 4:
        return
    tmp_d = z * (-4.683325804901025 * z2 + 2.007139630671868)
    tmp_c = 3.31161143515146 * z2 - 0.47308734787878
    tmp_b = -1.770130769779931 * z
    fc3 = x * fc2 - y * fs2
    fs3 = x * fs2 + y * fc2
    out[16] = 0.6258357354491763 * fs3
    out[17] = tmp_b * fs2
    out[18] = tmp_c * fs1
    out[19] = tmp_d * y
    out[20] = 1.984313483298443 * z2 * (1.865881662950577 * z2 - 1.119528997770346) - 1.006230589874905 * (
        0.9461746957575601 * z2 - 0.3153915652525201
    )
    out[21] = tmp_d * x
    out[22] = tmp_c * fc1
    out[23] = tmp_b * fc2
    out[24] = 0.6258357354491763 * fc3


@njit(cache=True)
def _sh_bases_grad(degree, x, y, z, gx, gy, gz):
    """Partial derivatives of `_sh_bases` with respect to x, y and z (as independent variables)."""
    for j in range((degree + 1) * (degree + 1)):
        gx[j] = 0.0
        gy[j] = 0.0
        gz[j] = 0.0
    if degree < 1:
        return
    c1 = 0.48860251190292
    gy[1] = -c1
    gz[2] = c1
    gx[3] = -c1
    if degree < 2:
        return
    k4, k5 = 0.5462742152960395, -1.092548430592079
    z2 = z * z
    fc1 = x * x - y * y
    fs1 = 2.0 * x * y
    gx[4], gy[4] = k4 * 2.0 * y, k4 * 2.0 * x
    gy[5], gz[5] = k5 * z, k5 * y
    gz[6] = 2.0 * 0.9461746957575601 * z
    gx[7], gz[7] = k5 * z, k5 * x
    gx[8], gy[8] = k4 * 2.0 * x, -k4 * 2.0 * y
    if degree < 3:
        return
    k9 = -0.5900435899266435
    tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
    d_tmp_c = -2.0 * 2.285228997322329 * z
    tmp_b = 1.445305721320277 * z
    d_tmp_b = 1.445305721320277
    fc2 = x * fc1 - y * fs1
    fs2 = x * fs1 + y * fc1
    fc2_x, fc2_y = 3.0 * (x * x - y * y), -6.0 * x * y
    fs2_x, fs2_y = 6.0 * x * y, 3.0 * (x * x - y * y)
    gx[9], gy[9] = k9 * fs2_x, k9 * fs2_y
    gx[10], gy[10], gz[10] = tmp_b * 2.0 * y, tmp_b * 2.0 * x, d_tmp_b * fs1
    gy[11], gz[11] = tmp_c, d_tmp_c * y
    gz[12] = 3.0 * 1.865881662950577 * z2 - 1.119528997770346
    gx[13], gz[13] = tmp_c, d_tmp_c * x
    gx[14], gy[14], gz[14] = tmp_b * 2.0 * x, -tmp_b * 2.0 * y, d_tmp_b * fc1
    gx[15], gy[15] = k9 * fc2_x, k9 * fc2_y
    if degree < 4:
        return
    k16 = 0.6258357354491763
    tmp_d = z * (-4.683325804901025 * z2 + 2.007139630671868)
    d_tmp_d = -3.0 * 4.683325804901025 * z2 + 2.007139630671868
    tmp_c = 3.31161143515146 * z2 - 0.47308734787878
    d_tmp_c = 2.0 * 3.31161143515146 * z
    tmp_b = -1.770130769779931 * z
    d_tmp_b = -1.770130769779931
    fc3_x, fc3_y = fc2 + x * fc2_x - y * fs2_x, x * fc2_y - fs2 - y * fs2_y
    fs3_x, fs3_y = fs2 + x * fs2_x + y * fc2_x, x * fs2_y + fc2 + y * fc2_y
    gx[16], gy[16] = k16 * fs3_x, k16 * fs3_y
    gx[17], gy[17], gz[17] = tmp_b * fs2_x, tmp_b * fs2_y, d_tmp_b * fs2
    gx[18], gy[18], gz[18] = tmp_c * 2.0 * y, tmp_c * 2.0 * x, d_tmp_c * fs1
    gy[19], gz[19] = tmp_d, d_tmp_d * y
    gz[20] = 1.984313483298443 * (4.0 * 1.865881662950577 * z2 * z - 2.0 * 1.119528997770346 * z) - (
        1.006230589874905 * 2.0 * 0.9461746957575601 * z
    )
    gx[21], gz[21] = tmp_d, d_tmp_d * x
    gx[22], gy[22], gz[22] = tmp_c * 2.0 * x, -tmp_c * 2.0 * y, d_tmp_c * fc1
    gx[23], gy[23], gz[23] = tmp_b * fc2_x, tmp_b * fc2_y, d_tmp_b * fc2
    gx[24], gy[24] = k16 * fc3_x, k16 * fc3_y


@njit(cache=True)
def _direction(means, campos, n, c):
    dx, dy, dz = means[n, 0] - campos[c, 0], means[n, 1] - campos[c, 1], means[n, 2] - campos[c, 2]
    length = math.sqrt(dx * dx + dy * dy + dz * dz)
    norm = max(length, _NORMALIZE_EPS)
    return dx / norm, dy / norm, dz / norm, length


@njit(cache=True, parallel=True)
def _sh_forward(means, coeffs, campos, radii, degree, colors, scratch):
    n_cams, bases = campos.shape[0], (degree + 1) * (degree + 1)
    for n in prange(means.shape[0]):
        basis = scratch[n]
        for c in range(n_cams):
            if radii[c, n] <= 0:
                for k in range(3):
                    colors[c, n, k] = 0.0
                continue
            x, y, z, _ = _direction(means, campos, n, c)
            _sh_bases(degree, x, y, z, basis)
            for k in range(3):
                acc = 0.0
                for j in range(bases):
                    acc += basis[j] * coeffs[n, j, k]
                colors[c, n, k] = max(acc + 0.5, 0.0)


@njit(cache=True, parallel=True)
def _sh_backward(means, coeffs, campos, radii, degree, v_colors, v_means, v_coeffs, scratch):
    """Gradients to the coefficients and, through the view direction, to the means (as gsplat's)."""
    n_cams, bases = campos.shape[0], (degree + 1) * (degree + 1)
    for n in prange(means.shape[0]):
        basis, gx, gy, gz = scratch[n, 0:25], scratch[n, 25:50], scratch[n, 50:75], scratch[n, 75:100]
        for j in range(v_coeffs.shape[1]):
            for k in range(3):
                v_coeffs[n, j, k] = 0.0
        v_means[n, 0] = v_means[n, 1] = v_means[n, 2] = 0.0
        for c in range(n_cams):
            if radii[c, n] <= 0:
                continue
            x, y, z, length = _direction(means, campos, n, c)
            _sh_bases(degree, x, y, z, basis)
            _sh_bases_grad(degree, x, y, z, gx, gy, gz)
            vx = vy = vz = 0.0
            for k in range(3):
                acc = 0.0
                for j in range(bases):
                    acc += basis[j] * coeffs[n, j, k]
                if acc + 0.5 < 0.0:  # clamp_min(0) passes the gradient at and above 0
                    continue
                g = np.float64(v_colors[c, n, k])
                for j in range(bases):
                    v_coeffs[n, j, k] += basis[j] * g
                    gc = g * coeffs[n, j, k]
                    vx += gx[j] * gc
                    vy += gy[j] * gc
                    vz += gz[j] * gc
            if length > _NORMALIZE_EPS:  # through d / |d|
                dot = x * vx + y * vy + z * vz
                v_means[n, 0] += (vx - x * dot) / length
                v_means[n, 1] += (vy - y * dot) / length
                v_means[n, 2] += (vz - z * dot) / length
            else:
                v_means[n, 0] += vx / _NORMALIZE_EPS
                v_means[n, 1] += vy / _NORMALIZE_EPS
                v_means[n, 2] += vz / _NORMALIZE_EPS


class _ProjectNumba(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, radius_clip
    ) -> Tuple[Tensor, ...]:
        n_cams, n = viewmats.shape[0], means.shape[0]
        means2d = means.new_empty(n_cams, n, 2)
        conics = means.new_empty(n_cams, n, 3)
        depths = means.new_empty(n_cams, n)
        compensations = means.new_empty(n_cams, n)
        radii = torch.empty(n_cams, n, dtype=torch.int32)
        arrays = tuple(as_numpy(t) for t in (means, quats, scales, viewmats, Ks))
        if n:
            launch(
                _project_forward, *arrays, float(width), float(height), float(eps2d), float(near), float(far),
                float(radius_clip), means2d.numpy(), conics.numpy(), depths.numpy(), radii.numpy(),
                compensations.numpy(),
            )  # fmt: skip
        ctx.arrays, ctx.size, ctx.eps2d = arrays, (float(width), float(height)), float(eps2d)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii, compensations

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii, v_compensations):  # type: ignore[override]
        means, quats, scales, _, _ = ctx.arrays
        grads = [torch.zeros(a.shape, dtype=v_means2d.dtype) for a in (means, quats, scales)]
        if means.shape[0]:
            launch(
                _project_backward, *ctx.arrays, *ctx.size, ctx.eps2d,
                *(as_numpy(g) for g in (v_means2d, v_conics, v_depths, v_compensations)),
                *(g.numpy() for g in grads), np.empty((means.shape[0], 30)),
            )  # fmt: skip
        ctx.arrays = None
        return (*grads, None, None, None, None, None, None, None, None)


class _ColorsFromShNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, coeffs, campos, radii, degree) -> Tensor:  # type: ignore[override]
        colors = coeffs.new_empty(campos.shape[0], means.shape[0], 3)
        arrays = tuple(as_numpy(t) for t in (means, coeffs, campos, radii))
        if means.shape[0]:
            launch(_sh_forward, *arrays, degree, colors.numpy(), np.empty((means.shape[0], 25)))
        ctx.arrays, ctx.degree = arrays, degree
        return colors

    @staticmethod
    def backward(ctx, v_colors):  # type: ignore[override]
        v_means = torch.zeros(ctx.arrays[0].shape, dtype=v_colors.dtype)
        v_coeffs = torch.zeros(ctx.arrays[1].shape, dtype=v_colors.dtype)
        if v_coeffs.shape[0]:
            launch(
                _sh_backward, *ctx.arrays, ctx.degree, as_numpy(v_colors), v_means.numpy(), v_coeffs.numpy(),
                np.empty((v_coeffs.shape[0], 100)),
            )  # fmt: skip
        ctx.arrays = None
        return v_means, v_coeffs, None, None, None


def _check_inputs(*tensors: Tensor) -> None:
    dtype = tensors[0].dtype
    if dtype not in NUMPY_DTYPES or any(t.dtype != dtype for t in tensors):
        raise TypeError("the numba projection needs float32 or float64 inputs of one dtype")
    if any(t.device.type != "cpu" for t in tensors):
        raise ValueError(f"the numba projection runs on CPU tensors, got {tensors[0].device}")


def project_gaussians_numba(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> ProjectedGaussians:
    """`projection.project_gaussians`, compiled; no gradient reaches `viewmats` or `Ks`."""
    _check_inputs(means, quats, scales, opacities, viewmats, Ks)
    means2d, conics, depths, radii, compensations = _ProjectNumba.apply(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip
    )
    opac = opacities.unsqueeze(0).expand(viewmats.shape[0], -1)
    if antialiased:
        opac = opac * compensations
    return ProjectedGaussians(means2d=means2d, conics=conics, depths=depths, radii=radii, opacities=opac)


def colors_from_sh_numba(
    means: Tensor, coeffs: Tensor, viewmats: Tensor, sh_degree: int, radii: Optional[Tensor] = None
) -> Tensor:
    """`projection.colors_from_sh`, compiled; gradients reach `coeffs` and `means`."""
    _check_inputs(means, coeffs, viewmats)
    if not 0 <= sh_degree <= MAX_SH_DEGREE or coeffs.shape[1] < (sh_degree + 1) ** 2:
        raise ValueError(f"sh_degree {sh_degree} needs {(sh_degree + 1) ** 2} coefficients, got {coeffs.shape[1]}")
    campos = torch.linalg.inv(viewmats.detach())[:, :3, 3]
    if radii is None:
        radii = torch.ones(viewmats.shape[0], means.shape[0], dtype=torch.int32)
    return _ColorsFromShNumba.apply(means, coeffs, campos, radii, sh_degree)
