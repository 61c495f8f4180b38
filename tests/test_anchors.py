"""Scaffold-GS anchors and their decoder (Momentum-GS groundwork), on the CPU."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor

from distilled_gs_ns.scaffold.momentum_teacher import consistency_loss, ema_update_
from distilled_gs_ns.scaffold.decoder import AnchorDecoder, AnchorDecoderConfig
from distilled_gs_ns.scaffold.sh_bake import bake_anchors_with_sh
from distilled_gs_ns.scaffold.anchors import (
    Anchors,
    SpawnInfo,
    accumulate_opacity,
    accumulate_per_offset,
    spawn_gaussians,
    visible,
)
from distilled_gs_ns.rendering.cameras import world_to_camera
from distilled_gs_ns.rendering import rasterize
from distilled_gs_ns.rendering.gaussians import RenderGaussians
from tests.toy_models import look_at

SIZE = 16
EYE = torch.tensor([0.0, -4.0, 0.0])
K_MAT = torch.tensor([[float(SIZE), 0.0, SIZE / 2], [0.0, float(SIZE), SIZE / 2], [0.0, 0.0, 1.0]])


def viewmat() -> Tensor:
    """Camera at EYE looking at the origin; camera x is world x, depth is world y + 4."""
    return world_to_camera(look_at(EYE, torch.zeros(3))[None])[0]


def random_anchors(n: int = 6, feature_dim: int = 32, num_offsets: int = 10, seed: int = 0) -> Anchors:
    gen = torch.Generator().manual_seed(seed)
    return Anchors(
        positions=(torch.rand(n, 3, generator=gen) - 0.5) * 1.0,
        features=torch.randn(n, feature_dim, generator=gen),
        offsets=torch.randn(n, num_offsets, 3, generator=gen),
        log_scaling=math.log(0.1) + 0.3 * torch.randn(n, 6, generator=gen),
    )


def decoder(seed: int = 0, **kwargs) -> AnchorDecoder:
    torch.manual_seed(seed)
    return AnchorDecoder(AnchorDecoderConfig(**kwargs))


def force_opacity(dec: AnchorDecoder, bias: Tensor) -> None:
    """Opacity head independent of the input: tanh(bias) per offset."""
    with torch.no_grad():
        dec.opacity_mlp[2].weight.zero_()
        dec.opacity_mlp[2].bias.copy_(bias)


def test_decoder_shapes_and_ranges():
    dec = decoder()
    features = torch.randn(7, 32)
    dirs = torch.nn.functional.normalize(torch.randn(7, 3), dim=-1)
    out = dec(features, dirs)
    assert set(out) == {"opacity", "scale", "rotation", "color"}
    assert out["opacity"].shape == (7, 10)
    assert out["scale"].shape == (7, 10, 3)
    assert out["rotation"].shape == (7, 10, 4)
    assert out["color"].shape == (7, 10, 3)
    assert ((out["opacity"] > -1) & (out["opacity"] < 1)).all()
    assert (out["opacity"] > 0).any() and (out["opacity"] < 0).any()
    for key in ("scale", "color"):
        assert ((out[key] > 0) & (out[key] < 1)).all()
    torch.testing.assert_close(out["rotation"].norm(dim=-1), torch.ones(7, 10))
    assert sum(p.numel() for p in dec.opacity_mlp.parameters()) == 35 * 32 + 32 + 32 * 10 + 10
    assert dec.covariance_mlp[2].out_features == 70 and dec.color_mlp[2].out_features == 30


def test_decoder_outputs_depend_on_view_direction_and_feature():
    dec = decoder()
    features = torch.randn(1, 32)
    a = dec(features, torch.tensor([[1.0, 0.0, 0.0]]))
    b = dec(features, torch.tensor([[0.0, 1.0, 0.0]]))
    c = dec(features + 1.0, torch.tensor([[1.0, 0.0, 0.0]]))
    for key in a:
        assert not torch.allclose(a[key], b[key])
        assert not torch.allclose(a[key], c[key])


def test_decoder_outputs_feed_the_momentum_consistency_loss():
    student = decoder()
    teacher = copy.deepcopy(student)
    features, dirs = torch.randn(5, 32), torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    assert consistency_loss(student(features, dirs), teacher(features, dirs)).item() == 0.0
    with torch.no_grad():
        student.color_mlp[2].bias.add_(1.0)
    loss = consistency_loss(student(features, dirs), teacher(features, dirs))
    assert loss.item() > 0
    loss.backward()
    assert student.color_mlp[2].bias.grad.abs().sum() > 0
    ema_update_(teacher, student, 0.9)
    torch.testing.assert_close(teacher.color_mlp[2].bias, student.color_mlp[2].bias - 0.9)


@pytest.mark.parametrize(
    "features, dirs",
    [
        (torch.zeros(4, 31), torch.zeros(4, 3)),
        (torch.zeros(4), torch.zeros(4, 3)),
        (torch.zeros(4, 32), torch.zeros(3, 3)),
        (torch.zeros(4, 32), torch.zeros(4, 2)),
    ],
)
def test_decoder_rejects_bad_shapes(features, dirs):
    with pytest.raises(ValueError):
        decoder()(features, dirs)


def test_config_rejects_non_positive_sizes():
    with pytest.raises(ValueError):
        AnchorDecoderConfig(num_offsets=0)


def test_anchors_reject_inconsistent_shapes():
    good = random_anchors(3)
    with pytest.raises(ValueError):
        Anchors(good.positions, good.features[:2], good.offsets, good.log_scaling)
    with pytest.raises(ValueError):
        Anchors(good.positions, good.features, good.offsets[..., :2], good.log_scaling)
    with pytest.raises(ValueError):
        Anchors(good.positions, good.features, good.offsets, good.log_scaling[:, :3])


def test_from_points_one_anchor_per_occupied_voxel_at_its_centre():
    points = torch.tensor([[0.1, 0.1, 0.1], [0.2, -0.3, 0.4], [-0.45, 0.0, 0.2], [1.2, 0.0, -0.1]])
    anchors = Anchors.from_points(points, voxel_size=1.0, feature_dim=8, num_offsets=4)
    assert anchors.num_anchors == 2
    assert sorted(anchors.positions.tolist()) == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert anchors.features.shape == (2, 8) and not anchors.features.any()
    assert anchors.offsets.shape == (2, 4, 3) and not anchors.offsets.any()
    torch.testing.assert_close(anchors.log_scaling, torch.zeros(2, 6))


def test_from_points_covers_every_point_within_half_a_voxel():
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(500, 3, generator=gen) * 2.0
    size = 0.5
    anchors = Anchors.from_points(points, voxel_size=size)
    cells = {tuple(c) for c in torch.floor(points / size + 0.5).long().tolist()}
    assert anchors.num_anchors == len(cells)
    dist = (points[:, None, :] - anchors.positions[None]).abs().amax(dim=-1)
    assert (dist.min(dim=1).values <= size / 2 + 1e-6).all()
    assert (dist.min(dim=0).values <= size / 2 + 1e-6).all()
    torch.testing.assert_close(anchors.log_scaling, torch.full((anchors.num_anchors, 6), math.log(size)))


@pytest.mark.parametrize("voxel_size", [0.0, -1.0, float("nan")])
def test_from_points_rejects_bad_voxel_size(voxel_size):
    with pytest.raises(ValueError):
        Anchors.from_points(torch.zeros(2, 3), voxel_size=voxel_size)


def test_visibility():
    positions = torch.tensor(
        [
            [0.0, 0.0, 0.0],  # image centre
            [0.0, -6.0, 0.0],  # behind the camera
            [10.0, 0.0, 0.0],  # far right of the image (u = 48)
            [2.2, 0.0, 0.0],  # just right of it (u = 16.8), inside a 10% margin
        ]
    )
    anchors = Anchors(positions, torch.zeros(4, 2), torch.zeros(4, 1, 3), torch.zeros(4, 6))
    assert visible(anchors, viewmat(), K_MAT, SIZE, SIZE).tolist() == [True, False, False, True]
    assert visible(anchors, viewmat(), K_MAT, SIZE, SIZE, margin=0.0).tolist() == [True, False, False, False]


def test_spawn_keeps_positive_opacity_and_maps_back_to_anchors():
    anchors = random_anchors(4)
    dec = decoder()
    force_opacity(dec, torch.tensor([1.0] + [-1.0] * 9))
    mask = torch.tensor([True, False, True, True])
    gaussians, info = spawn_gaussians(anchors, dec, EYE, mask)
    ids = torch.tensor([0, 2, 3])
    assert gaussians.means.shape == (3, 3) and gaussians.sh_degree is None
    assert info.anchor_ids.tolist() == [0, 2, 3] and info.offset_ids.tolist() == [0, 0, 0]
    expected = anchors.positions[ids] + anchors.offsets[ids, 0] * torch.exp(anchors.log_scaling[ids, :3])
    torch.testing.assert_close(gaussians.means, expected)
    dirs = torch.nn.functional.normalize(anchors.positions[ids] - EYE, dim=-1)
    decoded = dec(anchors.features[ids], dirs)
    torch.testing.assert_close(gaussians.scales, torch.exp(anchors.log_scaling[ids, 3:]) * decoded["scale"][:, 0])
    torch.testing.assert_close(gaussians.quats, decoded["rotation"][:, 0])
    torch.testing.assert_close(gaussians.colors, decoded["color"][:, 0])
    torch.testing.assert_close(gaussians.opacities, torch.full((3,), math.tanh(1.0)))


def test_spawn_offset_ids_follow_the_opacity_sign():
    anchors = random_anchors(3)
    dec = decoder()
    force_opacity(dec, torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0]))
    gaussians, info = spawn_gaussians(anchors, dec, EYE)
    assert info.anchor_ids.tolist() == [a for a in range(3) for _ in range(4)]
    assert info.offset_ids.tolist() == [1, 3, 4, 9] * 3
    expected = anchors.positions[info.anchor_ids] + anchors.offsets[info.anchor_ids, info.offset_ids] * torch.exp(
        anchors.log_scaling[info.anchor_ids, :3]
    )
    torch.testing.assert_close(gaussians.means, expected)


def test_spawn_rejects_mismatched_inputs():
    anchors = random_anchors(3)
    with pytest.raises(ValueError):
        spawn_gaussians(anchors, decoder(num_offsets=5), EYE)
    with pytest.raises(ValueError):
        spawn_gaussians(anchors, decoder(feature_dim=16), EYE)
    with pytest.raises(ValueError):
        spawn_gaussians(anchors, decoder(), EYE, torch.tensor([True, False]))
    with pytest.raises(ValueError):
        spawn_gaussians(anchors, decoder(), EYE, torch.tensor([1, 0, 1]))


def test_gradients_flow_from_the_render_to_anchors_and_decoder():
    anchors = random_anchors(6)
    for name in ("features", "offsets", "log_scaling"):
        getattr(anchors, name).requires_grad_(True)
    dec = decoder()
    force_opacity(dec, torch.full((10,), 0.5))
    with torch.no_grad():
        dec.opacity_mlp[2].weight.normal_(0.0, 0.01)
    view = viewmat()
    mask = visible(anchors, view, K_MAT, SIZE, SIZE)
    assert mask.all()
    gaussians, info = spawn_gaussians(anchors, dec, EYE, mask)
    assert gaussians.means.shape[0] > 0
    render, alpha, raster_info = rasterize(
        "torch",
        means=gaussians.means,
        quats=gaussians.quats,
        scales=gaussians.scales,
        opacities=gaussians.opacities,
        colors=gaussians.colors,
        viewmats=view[None],
        Ks=K_MAT[None],
        width=SIZE,
        height=SIZE,
        sh_degree=gaussians.sh_degree,
    )
    assert render.shape == (1, SIZE, SIZE, 3) and alpha.amax() > 0.1
    raster_info["means2d"].retain_grad()
    ((render - 0.3) ** 2).mean().backward()
    for name in ("features", "offsets", "log_scaling"):
        grad = getattr(anchors, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    for mlp in (dec.opacity_mlp, dec.covariance_mlp, dec.color_mlp):
        assert mlp[0].weight.grad is not None and mlp[0].weight.grad.abs().sum() > 0

    grad_norms = raster_info["means2d"].grad[0].norm(dim=-1)
    per_offset = accumulate_per_offset(anchors.num_anchors, anchors.num_offsets, info, grad_norms)
    assert per_offset.shape == (6, 10) and not per_offset.requires_grad
    for g in range(info.anchor_ids.shape[0]):
        assert per_offset[info.anchor_ids[g], info.offset_ids[g]] == grad_norms[g]
    spawned = torch.zeros(6, 10, dtype=torch.bool)
    spawned[info.anchor_ids, info.offset_ids] = True
    assert not per_offset[~spawned].any()


def _one_camera(eye: torch.Tensor) -> dict:
    """Training views of one 64 px camera at `eye` looking at the origin."""
    K = torch.tensor([[[60.0, 0.0, 32.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]]])
    return {"camera_to_worlds": look_at(eye, torch.zeros(3))[None], "Ks": K, "sizes": torch.tensor([[64, 64]])}


def test_sh_bake_from_one_camera_reproduces_that_view():
    """Seen from a single camera, the SH fit is exact there and the opacity bake is that view's."""
    from gsplat.cuda._torch_impl import _spherical_harmonics

    anchors = random_anchors(8)
    dec = decoder()
    eye = torch.tensor([0.3, -4.0, 0.5])
    spawned, _ = spawn_gaussians(anchors, dec, eye)
    for mode in ("mean-visible", "export-direction"):
        baked = bake_anchors_with_sh(anchors, dec, _one_camera(eye), sh_degree=2, mode=mode)
        assert baked.sh_degree == 2 and baked.colors.shape[1:] == (9, 3)
        torch.testing.assert_close(baked.means, spawned.means)
        torch.testing.assert_close(baked.opacities, spawned.opacities)
        torch.testing.assert_close(baked.scales, spawned.scales)
        colour = (_spherical_harmonics(2, baked.means - eye, baked.colors) + 0.5).clamp(min=0)
        torch.testing.assert_close(colour, spawned.colors, atol=2e-3, rtol=0)


def test_sh_bake_fits_colours_that_vary_with_the_view():
    """With a ring of cameras, degree 3 follows the decoder's view-dependent colour better than DC."""
    from gsplat.cuda._torch_impl import _spherical_harmonics

    anchors = random_anchors(6)
    dec = decoder()
    eyes = [torch.tensor([4.0 * math.cos(a), 4.0 * math.sin(a), 1.0]) for a in torch.linspace(0, 2 * math.pi, 13)[:-1]]
    views = [_one_camera(eye) for eye in eyes]
    ring = {key: torch.cat([v[key] for v in views]) for key in views[0]}
    errors = {}
    for degree in (0, 3):
        baked = bake_anchors_with_sh(anchors, dec, ring, sh_degree=degree)
        error = []
        for eye in eyes:
            spawned, _ = spawn_gaussians(anchors, dec, eye)
            colour = (_spherical_harmonics(degree, spawned.means - eye, _match(baked, spawned)) + 0.5).clamp(min=0)
            error.append((colour - spawned.colors).abs().mean())
        errors[degree] = float(torch.stack(error).mean())
    assert errors[3] < 0.8 * errors[0], errors


def _match(baked, spawned) -> torch.Tensor:
    """SH coefficients of the baked Gaussians at the spawned ones' positions (same anchor and offset)."""
    distance = (spawned.means[:, None] - baked.means[None]).norm(dim=-1)
    nearest = distance.argmin(dim=1)
    assert float(distance.min(dim=1).values.max()) < 1e-5
    return baked.colors[nearest]


def test_sh_bake_refuses_unknown_settings():
    anchors = random_anchors(3)
    views = _one_camera(torch.tensor([0.0, -4.0, 0.0]))
    with pytest.raises(ValueError, match="sh_degree"):
        bake_anchors_with_sh(anchors, decoder(), views, sh_degree=4)
    with pytest.raises(ValueError, match="bake mode"):
        bake_anchors_with_sh(anchors, decoder(), views, sh_degree=1, mode="median")


def test_accumulate_opacity_sums_per_anchor():
    info = SpawnInfo(anchor_ids=torch.tensor([0, 2, 2, 3, 0]), offset_ids=torch.tensor([1, 0, 4, 2, 3]))
    opacities = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], requires_grad=True)
    sums = accumulate_opacity(5, info, opacities)
    torch.testing.assert_close(sums, torch.tensor([0.6, 0.0, 0.5, 0.4, 0.0]))
    assert not sums.requires_grad
    per_offset = accumulate_per_offset(5, 5, info, opacities)
    torch.testing.assert_close(per_offset.sum(dim=1), sums)
    assert per_offset[2, 4] == pytest.approx(0.3) and per_offset[0, 3] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        accumulate_opacity(5, info, opacities[:3])
    with pytest.raises(ValueError):
        accumulate_per_offset(5, 4, info, opacities)


def test_refining_a_bake_brings_its_renders_to_the_targets():
    """Three views of known Gaussians; a distorted copy refined against their renders gets closer."""
    from distilled_gs_ns.scaffold.bake_refinement import refine_bake

    torch.manual_seed(0)
    n = 60
    truth = RenderGaussians(
        means=(torch.rand(n, 3) - 0.5) * 1.5,
        quats=torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
        scales=torch.full((n, 3), 0.12),
        opacities=torch.full((n,), 0.8),
        colors=torch.randn(n, 4, 3) * 0.3,
        sh_degree=1,
    )
    eyes = [torch.tensor([0.0, -4.0, 0.0]), torch.tensor([3.0, -3.0, 0.5]), torch.tensor([-3.0, -3.0, -0.5])]
    views = [world_to_camera(look_at(eye, torch.zeros(3))[None]) for eye in eyes]

    def render(gaussians: RenderGaussians, view: int) -> Tensor:
        image, alpha, _ = rasterize("torch", means=gaussians.means, quats=gaussians.quats, scales=gaussians.scales,
                                    opacities=gaussians.opacities, colors=gaussians.colors, viewmats=views[view],
                                    Ks=K_MAT[None], width=SIZE, height=SIZE, sh_degree=gaussians.sh_degree)  # fmt: skip
        return image[0] + (1 - alpha[0])

    with torch.no_grad():
        targets = [render(truth, v) for v in range(3)]
    distorted = RenderGaussians(
        means=truth.means, quats=truth.quats, scales=truth.scales * 1.6, opacities=torch.full((n,), 0.3),
        colors=truth.colors + 0.2 * torch.randn(n, 4, 3), sh_degree=1,
    )  # fmt: skip

    def error(gaussians: RenderGaussians) -> float:
        with torch.no_grad():
            return float(sum((render(gaussians, v) - targets[v]).abs().mean() for v in range(3)))

    refined = refine_bake(distorted, render, targets, steps=150)
    assert error(refined) < 0.5 * error(distorted), (error(refined), error(distorted))
    torch.testing.assert_close(refined.means, truth.means)  # positions stay
    assert refine_bake(distorted, render, targets, steps=0) is distorted
