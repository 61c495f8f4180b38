"""Every export format against a decoder written from its published description (not the writer)."""

from __future__ import annotations

import collections
import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.formats import FORMATS, NIANTIC_SH_BITS, RDF_TO_RUB_SH, encode_ply, spz_quantised_sh
from distilled_gs_ns.export.splat_data import SplatData
from distilled_gs_ns.export.writer import check_writable
from tests.splat_decoders import decode_compressed_ply, decode_spz


def random_splat(n: int = 700, sh_degree: int = 3, seed: int = 0) -> SplatData:
    rng = np.random.default_rng(seed)
    k = (sh_degree + 1) ** 2 - 1

    def f32(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32)

    quats = rng.normal(size=(n, 4))
    return SplatData(
        means=f32(rng.uniform(-3, 3, size=(n, 3))),
        log_scales=f32(rng.uniform(-6, -1, size=(n, 3))),
        quats=f32(quats * rng.uniform(0.5, 2.0, size=(n, 1))),  # trained quats are not unit length
        opacity_logits=f32(rng.uniform(-4, 4, size=n)),
        sh_dc=f32(rng.uniform(-1.5, 1.5, size=(n, 3))),
        sh_rest=f32(rng.uniform(-0.5, 0.5, size=(n, k, 3))),
    )


def same_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the angle-like distance 1 - |<a, b>| of unit quaternions (q and -q are one rotation)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - np.abs((a * b).sum(1))


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_ply_is_byte_for_byte_what_ns_export_writes(sh_degree: int, tmp_path: Path) -> None:
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    data = random_splat(n=50, sh_degree=sh_degree)
    columns = collections.OrderedDict()
    for i, axis in enumerate("xyz"):
        columns[axis] = data.means[:, i]
    for name in ("nx", "ny", "nz"):
        columns[name] = np.zeros(data.count, np.float32)
    for i in range(3):
        columns[f"f_dc_{i}"] = data.sh_dc[:, i, None]
    rest = data.sh_rest.transpose(0, 2, 1).reshape(data.count, -1)
    for i in range(rest.shape[1]):
        columns[f"f_rest_{i}"] = rest[:, i, None]
    columns["opacity"] = data.opacity_logits[:, None]
    for i in range(3):
        columns[f"scale_{i}"] = data.log_scales[:, i, None]
    for i in range(4):
        columns[f"rot_{i}"] = data.quats[:, i, None]
    ExportGaussianSplat.write_ply(str(tmp_path / "ns.ply"), data.count, columns)
    assert encode_ply(data) == (tmp_path / "ns.ply").read_bytes()
    back = FORMATS["ply"].decode(encode_ply(data))
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))


def test_spz_header_and_every_attribute_within_its_quantisation_step() -> None:
    data = random_splat()
    raw = replace(FORMATS["spz"], sh_bits=NIANTIC_SH_BITS).encode(data)
    header, stored = decode_spz(raw)
    assert header == dict(magic=0x5053474E, version=3, num_points=data.count, sh_degree=3,
                          fractional_bits=12, flags=0, reserved=0)  # fmt: skip
    assert raw[:2] == b"\x1f\x8b"  # one gzip stream, not the zstd container of version 4
    # Stored axes are RUB: y and z of the PLY's RDF are flipped, rotations mirrored, SH signs flipped.
    flip = np.array([1, -1, -1])
    np.testing.assert_allclose(stored["means"] * flip, data.means, atol=0.5 / 4096 + 1e-6)
    np.testing.assert_allclose(stored["log_scales"], data.log_scales, atol=0.5 / 16 + 1e-6)
    np.testing.assert_allclose(stored["sh_dc"], data.sh_dc, atol=0.5 / 255 / 0.15 + 1e-6)
    alpha = 1 / (1 + np.exp(-data.opacity_logits))
    np.testing.assert_allclose(1 / (1 + np.exp(-stored["opacity_logits"])), alpha, atol=0.5 / 255 + 1e-6)
    mirrored = stored["quats"] * np.array([1, 1, -1, -1])
    assert same_rotation(mirrored, data.quats).max() < 2e-5
    # SH: Niantic's buckets (degree 1 to 5 bits: multiples of 8; degrees 2-3 to 4 bits: of 16).
    sh_bytes = stored["sh_bytes"].astype(int)
    assert np.all((sh_bytes[:, :3] % 8 == 0) | (sh_bytes[:, :3] == 255))
    assert np.all((sh_bytes[:, 3:] % 16 == 0) | (sh_bytes[:, 3:] == 255))
    default_bytes = decode_spz(FORMATS["spz"].encode(data))[1]["sh_bytes"].astype(int)
    assert np.all((default_bytes % 4 == 0) | (default_bytes == 255)) and np.any(default_bytes % 8 == 4)  # 6 bits
    unflipped = stored["sh_rest"] * RDF_TO_RUB_SH[:, None]
    assert np.abs(unflipped[:, :3] - data.sh_rest[:, :3]).max() <= 4.5 / 128 + 1e-6  # half a bucket + rounding
    assert np.abs(unflipped[:, 3:] - data.sh_rest[:, 3:]).max() <= 8.5 / 128 + 1e-6


def test_spz_decoder_of_the_package_agrees_with_the_spec_decoder() -> None:
    data = random_splat(sh_degree=2)
    raw = FORMATS["spz"].encode(data)
    ours = FORMATS["spz"].decode(raw)
    _, stored = decode_spz(raw)
    np.testing.assert_allclose(ours.means, stored["means"] * np.array([1, -1, -1]), atol=1e-6)
    np.testing.assert_allclose(ours.sh_rest, stored["sh_rest"] * RDF_TO_RUB_SH[:8, None], atol=1e-6)
    assert same_rotation(ours.quats, stored["quats"] * np.array([1, 1, -1, -1])).max() < 1e-6


def test_spz_sh_sign_flips_are_the_mirror_of_the_sh_basis() -> None:
    """Colour seen along direction d with the PLY's SH = colour along the mirrored d with SPZ's SH."""
    from gsplat.cuda._torch_impl import _spherical_harmonics

    rng = np.random.default_rng(1)
    coeffs = torch.from_numpy(rng.normal(size=(200, 16, 3))).float()
    dirs = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(200, 3))).float(), dim=-1)
    flipped = coeffs.clone()
    flipped[:, 1:] *= torch.from_numpy(RDF_TO_RUB_SH)[None, :, None]
    mirror = torch.tensor([1.0, -1.0, -1.0])
    torch.testing.assert_close(_spherical_harmonics(3, dirs * mirror, flipped), _spherical_harmonics(3, dirs, coeffs))


def test_spz_quantised_sh_is_a_fixed_point() -> None:
    sh = random_splat().sh_rest
    once = spz_quantised_sh(sh)
    np.testing.assert_array_equal(spz_quantised_sh(once), once)


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_compressed_ply_every_attribute_within_its_chunk_quantisation(sh_degree: int) -> None:
    data = random_splat(n=700, sh_degree=sh_degree)
    decoded = decode_compressed_ply(FORMATS["compressed-ply"].encode(data))
    assert decoded["means"].shape[0] == data.count
    # The writer reorders Gaussians (Morton order): match each to the nearest decoded one.
    # Each attribute is a fraction of its chunk's range: 11 or 10 bits for positions and log scales.
    extent = data.means.max(0) - data.means.min(0)
    d_means = np.abs(decoded["means"][None] - data.means[:, None]).max(-1)
    nearest = d_means.argmin(1)
    assert d_means.min(1).max() < extent.max() / 1023
    assert len(set(nearest.tolist())) == data.count, "two Gaussians decoded onto one"
    assert np.abs(decoded["log_scales"][nearest] - data.log_scales).max() < (np.ptp(data.log_scales, axis=0).max() / 1023)
    assert same_rotation(decoded["quats"][nearest], data.quats).max() < 1e-4
    colour = data.sh_dc * 0.28209479177387814 + 0.5
    decoded_colour = decoded["sh_dc"][nearest] * 0.28209479177387814 + 0.5
    assert np.abs(decoded_colour - colour).max() < np.ptp(colour, axis=0).max() / 255 + 1e-6
    alpha = 1 / (1 + np.exp(-data.opacity_logits))
    assert np.abs(1 / (1 + np.exp(-decoded["opacity_logits"][nearest])) - alpha).max() < 1 / 255 + 1e-6
    assert decoded["sh_rest"].shape == data.sh_rest.shape
    if sh_degree:
        # PlayCanvas' reader maps byte b to b * 8 / 255 - 4; writers store floor((x / 8 + 0.5) * 256).
        assert np.abs(decoded["sh_rest"][nearest] - data.sh_rest).max() < 2 * 8 / 255


def test_compressed_formats_are_small() -> None:
    data = random_splat(n=4096)
    sizes = {name: len(fmt.encode(data)) / data.count for name, fmt in FORMATS.items()}
    assert sizes["ply"] == pytest.approx(248, abs=1)
    assert sizes["compressed-ply"] < 16 + 45 + 2  # 16 bytes + one byte per SH coefficient + chunk bounds
    assert sizes["spz"] < 64  # 9 + 1 + 3 + 3 + 4 + 45 bytes before gzip


def test_sh_truncation_drops_the_higher_bands_only() -> None:
    data = random_splat(sh_degree=3)
    low = data.with_sh_degree(1)
    assert low.sh_degree == 1 and low.sh_rest.shape[1] == 3
    np.testing.assert_array_equal(low.sh_rest, data.sh_rest[:, :3])
    with pytest.raises(UserInputError, match="--sh-degree must be 0-3"):
        data.with_sh_degree(4)
    with pytest.raises(UserInputError, match="--sh-degree must be 0-1"):
        low.with_sh_degree(2)


def test_spz_refuses_positions_beyond_its_fixed_point_range() -> None:
    data = random_splat(n=10)
    far = SplatData(**{**data.__dict__, "means": data.means * 1000})
    with pytest.raises(UserInputError, match="spz stores positions within"):
        check_writable(far, FORMATS["spz"])
    check_writable(far, FORMATS["compressed-ply"])
    raw = gzip.decompress(FORMATS["spz"].encode(data))
    assert len(raw) == 16 + data.count * (9 + 1 + 3 + 3 + 4 + 45)


def test_spz_sh_bits_trade_size_for_precision() -> None:
    from distilled_gs_ns.export.writer import resolve_format

    data = random_splat(n=2000)
    errors, sizes = {}, {}
    for bits in (4, 6, 8):
        fmt = resolve_format("spz", bits)
        raw = fmt.encode(data)
        sizes[bits], errors[bits] = len(raw), np.abs(fmt.decode(raw).sh_rest - data.sh_rest).max()
    assert errors[8] < errors[6] < errors[4] and sizes[8] > sizes[6] > sizes[4]
    assert resolve_format("spz") == resolve_format("spz", 6)
    assert errors[8] <= 0.5 / 128 + 1e-6
    with pytest.raises(UserInputError, match="applies to --format spz only"):
        resolve_format("ply", 6)
    with pytest.raises(UserInputError, match="must be 1-8"):
        resolve_format("spz", 9)
    with pytest.raises(UserInputError, match="unknown format"):
        resolve_format("splat")


@pytest.mark.parametrize("name", ["ply", "compressed-ply", "spz"])
def test_megabyte_budget_is_the_largest_count_that_fits(name: str) -> None:
    from distilled_gs_ns.export.size_budget import GZIP_MARGIN, gaussians_for_megabytes

    fmt = FORMATS[name]
    sample = random_splat(n=3000, sh_degree=1)
    megabytes = len(fmt.encode(sample.select(slice(0, 1800)))) / 1e6
    count = gaussians_for_megabytes(megabytes, fmt, sample)
    limit = megabytes * 1e6 * ((1 - GZIP_MARGIN) if name == "spz" else 1)
    assert len(fmt.encode(sample.select(slice(0, count)))) <= limit < len(fmt.encode(sample.select(slice(0, count + 1))))
    if name == "ply":
        assert count == 1800
    beyond = gaussians_for_megabytes(megabytes * 3, fmt, sample.select(slice(0, 1000)))
    assert beyond > 1000  # more than the sample holds: extrapolated from its bytes per Gaussian
    with pytest.raises(UserInputError, match="too small for even one Gaussian"):
        gaussians_for_megabytes(1e-5, fmt, sample)
