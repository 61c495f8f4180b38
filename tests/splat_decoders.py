"""Decoders written from the published format descriptions, independent of the writer (gsply).

- SPZ: Niantic's format description and reference loader (gzip; 16-byte header; positions as 24-bit
  signed fixed point; alpha as sigmoid * 255; colour as SH DC * 0.15 * 255 + 127.5; scales as
  (log scale + 10) * 16; rotations as smallest-three, 2-bit index and 3 x (sign + 9 bits) in x, y, z,
  w order; SH bytes (x * 128 + 128), coefficient-major with r, g, b inner). Stored axes are RUB.
- PlayCanvas compressed PLY: the PlayCanvas engine's reader (`GSplatCompressedData`): per chunk of
  256 Gaussians 12 or 18 float bounds; per Gaussian packed_position and packed_scale (11/10/11 bit
  unorm within the chunk bounds), packed_rotation (2-bit index of the dropped largest component of
  (w, x, y, z), then 3 x 10 bits of the rest scaled by sqrt(2)), packed_color (8 bits each of r, g,
  b within the chunk's colour bounds and alpha); SH as bytes b * 8 / 255 - 4, channel-major.

Each returns a dict of float64 arrays in the 3DGS PLY parameterisation (quats as w, x, y, z).
"""

from __future__ import annotations

import gzip
import struct
from typing import Dict, List, Tuple

import numpy as np

SH_C0 = 0.28209479177387814
SPZ_MAGIC = 0x5053474E


def decode_spz(raw: bytes) -> Tuple[Dict[str, int], Dict[str, np.ndarray]]:
    """(header fields, arrays as stored: RUB axes, no conversion)."""
    payload = gzip.decompress(raw)
    magic, version, n, sh_degree, fractional_bits, flags, reserved = struct.unpack_from("<IIIBBBB", payload, 0)
    header = dict(magic=magic, version=version, num_points=n, sh_degree=sh_degree,
                  fractional_bits=fractional_bits, flags=flags, reserved=reserved)  # fmt: skip
    assert magic == SPZ_MAGIC and version in (2, 3), header
    sh_dim = {0: 0, 1: 3, 2: 8, 3: 15}[sh_degree]
    offset = 16

    def take(count: int) -> np.ndarray:
        nonlocal offset
        block = np.frombuffer(payload, dtype=np.uint8, count=count, offset=offset)
        offset += count
        return block

    pos = take(n * 9).reshape(n, 3, 3).astype(np.int64)
    fixed = pos[..., 0] | (pos[..., 1] << 8) | (pos[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    alphas = take(n).astype(np.float64) / 255.0
    colors = take(n * 3).reshape(n, 3).astype(np.float64)
    scales = take(n * 3).reshape(n, 3).astype(np.float64)
    rotation_bytes = 4 if version >= 3 else 3
    rotations = take(n * rotation_bytes).reshape(n, rotation_bytes)
    sh = take(n * sh_dim * 3).reshape(n, sh_dim, 3).astype(np.float64)
    assert offset == len(payload), "trailing bytes after the SH array"

    xyzw = np.zeros((n, 4))
    for i in range(n):
        if version >= 3:
            comp = int(rotations[i, 0]) | int(rotations[i, 1]) << 8 | int(rotations[i, 2]) << 16 | int(rotations[i, 3]) << 24
            largest = comp >> 30
            total = 0.0
            for j in (3, 2, 1, 0):
                if j == largest:
                    continue
                magnitude, negative = comp & 511, (comp >> 9) & 1
                comp >>= 10
                value = np.sqrt(0.5) * magnitude / 511.0
                xyzw[i, j] = -value if negative else value
                total += xyzw[i, j] ** 2
            xyzw[i, largest] = np.sqrt(max(0.0, 1.0 - total))
        else:
            xyz = rotations[i].astype(np.float64) / 127.5 - 1.0
            xyzw[i] = [*xyz, np.sqrt(max(0.0, 1.0 - float(xyz @ xyz)))]
    with np.errstate(divide="ignore"):
        arrays = {
            "means": fixed / float(1 << fractional_bits),
            "opacity_logits": np.log(alphas / (1.0 - alphas)),
            "sh_dc": (colors / 255.0 - 0.5) / 0.15,
            "log_scales": scales / 16.0 - 10.0,
            "quats": xyzw[:, [3, 0, 1, 2]],
            "sh_rest": (sh - 128.0) / 128.0,
            "sh_bytes": sh,
        }
    return header, arrays


def _ply_elements(raw: bytes) -> Tuple[List[Tuple[str, int, List[Tuple[str, str]]]], int]:
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0", lines[:2]
    elements: List[Tuple[str, int, List[Tuple[str, str]]]] = []
    for line in lines[2:]:
        words = line.split()
        if words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property":
            elements[-1][2].append((words[1], words[2]))
    return elements, end


def decode_compressed_ply(raw: bytes) -> Dict[str, np.ndarray]:
    types = {"float": "<f4", "uint": "<u4", "uchar": "u1"}
    elements, offset = _ply_elements(raw)
    tables = {}
    for name, count, properties in elements:
        dtype = np.dtype([(prop, types[kind]) for kind, prop in properties])
        tables[name] = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        offset += dtype.itemsize * count
    assert offset == len(raw), "trailing bytes"
    chunks, vertex = tables["chunk"], tables["vertex"]
    n = len(vertex)
    assert len(chunks) == (n + 255) // 256
    chunk_of = np.arange(n) // 256

    def bounds(*names: str) -> np.ndarray:
        return np.stack([chunks[name].astype(np.float64)[chunk_of] for name in names], axis=1)

    def unorm(value: np.ndarray, shift: int, bits: int) -> np.ndarray:
        return ((value.astype(np.int64) >> shift) & ((1 << bits) - 1)) / float((1 << bits) - 1)

    def unpack_111011(value: np.ndarray) -> np.ndarray:
        return np.stack([unorm(value, 21, 11), unorm(value, 11, 10), unorm(value, 0, 11)], axis=1)

    def lerp(low: np.ndarray, high: np.ndarray, t: np.ndarray) -> np.ndarray:
        return low * (1 - t) + high * t

    means = lerp(bounds("min_x", "min_y", "min_z"), bounds("max_x", "max_y", "max_z"), unpack_111011(vertex["packed_position"]))
    log_scales = lerp(
        bounds("min_scale_x", "min_scale_y", "min_scale_z"),
        bounds("max_scale_x", "max_scale_y", "max_scale_z"),
        unpack_111011(vertex["packed_scale"]),
    )
    rot = vertex["packed_rotation"].astype(np.int64)
    norm = 1.0 / (np.sqrt(2.0) * 0.5)
    abc = np.stack([(unorm(rot, s, 10) - 0.5) * norm for s in (20, 10, 0)], axis=1)
    m = np.sqrt(np.clip(1.0 - (abc**2).sum(1), 0.0, None))
    largest = rot >> 30
    quats = np.zeros((n, 4))  # w, x, y, z
    for index in range(4):
        rows = largest == index
        others = [j for j in range(4) if j != index]
        quats[rows, index] = m[rows]
        quats[np.ix_(rows, others)] = abc[rows]
    color = vertex["packed_color"].astype(np.int64)
    rgba = np.stack([unorm(color, s, 8) for s in (24, 16, 8, 0)], axis=1)
    rgb = rgba[:, :3]
    if "min_r" in chunks.dtype.names:
        rgb = lerp(bounds("min_r", "min_g", "min_b"), bounds("max_r", "max_g", "max_b"), rgb)
    alpha = rgba[:, 3]
    with np.errstate(divide="ignore"):
        opacity = np.where(alpha <= 0, -40.0, np.where(alpha >= 1, 40.0, -np.log(1.0 / alpha - 1.0)))
    arrays = {
        "means": means,
        "log_scales": log_scales,
        "quats": quats,
        "opacity_logits": opacity,
        "sh_dc": (rgb - 0.5) / SH_C0,
        "sh_rest": np.zeros((n, 0, 3)),
    }
    if "sh" in tables:
        sh = tables["sh"]
        names = sh.dtype.names
        coefficients = len(names) // 3
        values = np.stack([sh[f"f_rest_{i}"].astype(np.float64) for i in range(len(names))], axis=1) * (8.0 / 255.0) - 4.0
        arrays["sh_rest"] = values.reshape(n, 3, coefficients).transpose(0, 2, 1)
    return arrays
