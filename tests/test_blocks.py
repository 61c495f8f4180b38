"""Block-wise training groundwork (Momentum-GS): ground plane, partition, cameras, weights, momentum."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import Tensor, nn

from distilled_gs_ns.blocks.block_set import BlockSet
from distilled_gs_ns.blocks.block_state import BlockState
from distilled_gs_ns.blocks.camera_assignment import assign_cameras
from distilled_gs_ns.blocks.ground_plane import detect_up_axis, ground_basis
from distilled_gs_ns.scaffold.momentum_teacher import consistency_loss, ema_update_
from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.blocks.weighting import SmoothedBlockMetrics, block_weights
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.rendering.cameras import points_in_view, world_to_camera
from distilled_gs_ns.scaffold.anchors import Anchors

Z = torch.tensor([0.0, 0.0, 1.0])


def look_at(position, target, world_up=(0.0, 0.0, 1.0)) -> Tensor:
    """[3, 4] nerfstudio camera-to-world (OpenGL: columns right, up, back, centre)."""
    position, target = torch.tensor(position, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)
    forward = (target - position) / (target - position).norm()
    right = torch.linalg.cross(forward, torch.tensor(world_up))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    return torch.stack([right, up, -forward, position], dim=-1)


def intrinsics(focal: float, width: int = 64, height: int = 48) -> Tensor:
    return torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def rotation(axis, degrees: float) -> Tensor:
    """Rodrigues rotation matrix."""
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    a = math.radians(degrees)
    return (torch.eye(3, dtype=torch.float64) + math.sin(a) * cross + (1 - math.cos(a)) * cross @ cross).float()


def transform(c2w: Tensor, rot: Tensor) -> Tensor:
    """The same rig in a world rotated by `rot`."""
    return torch.cat([rot @ c2w[:, :, :3], rot @ c2w[:, :, 3:]], dim=-1)


def orbit(yaws_deg, pitch_deg: float, radius: float = 5.0) -> Tensor:
    """Cameras around the z axis, looking towards it and `pitch_deg` below the horizon."""
    poses = []
    for yaw in yaws_deg:
        y = math.radians(yaw)
        position = (radius * math.cos(y), radius * math.sin(y), 2.0)
        drop = math.tan(math.radians(pitch_deg))
        target = (position[0] - math.cos(y), position[1] - math.sin(y), 2.0 - drop)
        poses.append(look_at(position, target))
    return torch.stack(poses)


def angle_deg(a: Tensor, b: Tensor) -> float:
    cos = float((a @ b) / (a.norm() * b.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


# ---------------------------------------------------------------- ground plane


def test_up_axis_of_upright_cameras_is_world_up() -> None:
    up = detect_up_axis(orbit(range(0, 360, 30), pitch_deg=30))
    assert torch.allclose(up, Z, atol=1e-6)


@pytest.mark.parametrize("axis, degrees", [((1.0, 1.0, 0.0), 35.0), ((0.0, 1.0, 2.0), 120.0)])
def test_up_axis_follows_a_tilted_world(axis, degrees) -> None:
    rot = rotation(axis, degrees)
    up = detect_up_axis(transform(orbit(range(0, 360, 30), pitch_deg=30), rot))
    assert torch.allclose(up, rot @ Z, atol=1e-5)


def nadir_rig() -> Tensor:
    """Near-nadir cameras (80 deg down) at height 10 over scattered ground positions: the up vectors
    nearly cancel (13 yaws, one repeated), so their mean is short (< 0.3) and tilted."""
    g = torch.Generator().manual_seed(0)
    poses = []
    reach = math.cos(math.radians(80)) / math.sin(math.radians(80))  # horizontal offset per metre down
    for yaw in list(range(0, 360, 30)) + [0]:
        y = math.radians(yaw)
        x0, y0 = (torch.rand(2, generator=g) * 20 - 10).tolist()
        target = (x0 + math.cos(y) * reach, y0 + math.sin(y) * reach, 9.0)
        poses.append(look_at((x0, y0, 10.0), target))
    return torch.stack(poses)


def test_up_axis_falls_back_to_the_camera_plane_when_ups_cancel() -> None:
    rig = nadir_rig()
    mean_up = rig[:, :, 1].mean(0)
    assert mean_up.norm() < 0.3 and angle_deg(mean_up, Z) > 20  # the mean alone would be badly off
    assert torch.allclose(detect_up_axis(rig), Z, atol=1e-5)


@pytest.mark.parametrize("axis, degrees", [((1.0, 0.0, 0.0), 180.0), ((1.0, 2.0, 0.5), 70.0)])
def test_up_axis_fallback_is_signed_like_the_cameras(axis, degrees) -> None:
    rot = rotation(axis, degrees)
    assert torch.allclose(detect_up_axis(transform(nadir_rig(), rot)), rot @ Z, atol=1e-5)


def test_up_axis_is_undefined_for_two_opposite_cameras() -> None:
    rig = torch.stack([look_at((0, 0, 0), (1, 0, 0)), look_at((1, 0, 0), (2, 0, 0))])
    rig[1, :, :3] = rig[1, :, :3] * torch.tensor([1.0, -1.0, 1.0])  # flipped upside down: ups cancel
    with pytest.raises(ValueError, match="up axis"):
        detect_up_axis(rig)


def test_ground_basis_of_z_up_is_x_y() -> None:
    assert torch.equal(ground_basis(Z), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    # Ties go to the first axis: for x-up, u = y and v = x cross y... = z.
    assert torch.equal(ground_basis(torch.tensor([1.0, 0.0, 0.0])), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def test_ground_basis_is_orthonormal_and_right_handed() -> None:
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        up = torch.randn(3, generator=g, dtype=torch.float64)
        frame = torch.cat([ground_basis(up), (up / up.norm())[None]])
        assert torch.allclose(frame @ frame.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert float(torch.linalg.det(frame)) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- partition


def site(num: int = 20_000, seed: int = 0) -> Tensor:
    """Points over an 8 x 4 m site (x, y) with heights up to 2 m."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(num, 3, generator=g) * torch.tensor([8.0, 4.0, 2.0])


def test_every_point_is_in_exactly_one_block_including_points_outside_the_grid() -> None:
    partition = BlockPartition.fit(site(), Z, (2, 4))
    g = torch.Generator().manual_seed(1)
    probes = torch.cat([site(5000, seed=2), torch.randn(2000, 3, generator=g) * 50])  # many far outside
    on_lines = torch.cartesian_prod(partition.edges_u, partition.edges_v).float()  # grid crossings
    probes = torch.cat([probes, torch.cat([on_lines, torch.zeros(len(on_lines), 1)], dim=-1)])
    ids = partition.assign(probes)
    assert ids.dtype == torch.long and int(ids.min()) >= 0 and int(ids.max()) < 8
    membership = torch.stack([partition.contains(probes, b) for b in range(partition.num_blocks)], dim=1)
    assert torch.equal(membership.sum(1), torch.ones(len(probes), dtype=torch.long))
    assert torch.equal(membership.float().argmax(1), ids)
    # Far away points go to the nearest border cell (block = row * 4 + col; rows along x, cols along y).
    corners = torch.tensor([[-100.0, -100.0, 0.0], [100.0, 100.0, 0.0], [100.0, -100.0, 5.0], [-100.0, 3.5, -9.0]])
    assert partition.assign(corners).tolist() == [0, 7, 4, 3]


def test_quantile_split_balances_blocks_where_uniform_does_not() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.empty(40_000).exponential_(1.0, generator=g) * 3  # dense near the origin, long tail
    points = torch.stack([x, torch.randn(40_000, generator=g), torch.rand(40_000, generator=g)], dim=-1)
    balanced = torch.bincount(BlockPartition.fit(points, Z, (2, 4), split="quantile").assign(points), minlength=8)
    assert balanced.sum() == 40_000
    assert float((balanced - 5000).abs().max()) < 0.05 * 5000
    skewed = torch.bincount(BlockPartition.fit(points, Z, (2, 4), split="uniform").assign(points), minlength=8)
    assert float(skewed.max()) > 3 * float(skewed.min())


def test_uniform_split_has_equal_cells_over_the_robust_extent() -> None:
    points = site()
    outlier = torch.tensor([[1000.0, -1000.0, 0.0]])
    partition = BlockPartition.fit(torch.cat([points, outlier]), Z, (2, 4), split="uniform", quantile=0.01)
    for edges, extent in ((partition.edges_u, 8.0), (partition.edges_v, 4.0)):
        widths = edges.diff()
        assert torch.allclose(widths, widths.mean().expand_as(widths), rtol=1e-9)
        assert float(edges[-1] - edges[0]) == pytest.approx(0.98 * extent, rel=0.02)  # the outlier is ignored
    exact = BlockPartition.fit(points, Z, (2, 4), split="uniform", quantile=0.0)
    assert float(exact.edges_u[0]) == pytest.approx(float(points[:, 0].min()), abs=1e-6)
    assert float(exact.edges_v[-1]) == pytest.approx(float(points[:, 1].max()), abs=1e-6)


def test_partition_on_a_tilted_ground_ignores_height() -> None:
    rot = rotation((1.0, -1.0, 0.5), 50.0)
    up = rot @ Z
    points = site() @ rot.T
    partition = BlockPartition.fit(points, up, (2, 4))
    ids = partition.assign(points)
    g = torch.Generator().manual_seed(5)
    lifted = points + (torch.rand(len(points), 1, generator=g) * 40 - 20) * up  # move along up only
    assert torch.equal(partition.assign(lifted), ids)
    # A step of one cell along the first ground axis moves a point one row (unless it leaves the grid).
    step = float(partition.edges_u[1] - partition.edges_u[0])
    moved = partition.assign(points + step * partition.axes[0].float())
    u = partition.ground_coords(points)[:, 0]
    in_row_0 = (u >= partition.edges_u[0]) & (u < partition.edges_u[1])
    assert int(in_row_0.sum()) > 9000
    assert torch.equal(moved[in_row_0], ids[in_row_0] + 4)


def test_json_round_trip_assigns_identically() -> None:
    points = site()
    partition = BlockPartition.fit(points, rotation((0.3, 0.2, 1.0), 20.0) @ Z, (3, 2))
    restored = BlockPartition.from_dict(json.loads(json.dumps(partition.to_dict())))
    probes = torch.cat([points, torch.randn(3000, 3) * 20])
    assert torch.equal(restored.assign(probes), partition.assign(probes))
    for name in ("up", "axes", "edges_u", "edges_v"):
        assert torch.equal(getattr(restored, name), getattr(partition, name))


def test_block_bounds_margin_and_open_outer_sides() -> None:
    partition = BlockPartition(up=Z, axes=ground_basis(Z), edges_u=[0.0, 2.0, 4.0, 6.0], edges_v=[0.0, 1.0, 3.0])
    inf = math.inf
    # Block 2 = middle row, first column: u in [2, 4] grown by 0.1 x 2; v open below, [.., 1] grown by 0.1 x 1.
    assert partition.block_bounds(2, margin=0.1).flatten().tolist() == pytest.approx([1.8, -inf, 4.2, 1.1])
    assert partition.block_bounds(5).tolist() == [[4.0, 1.0], [inf, inf]]
    points = torch.tensor([[1.85, 0.5, 0.0], [1.75, 0.5, 0.0], [3.0, 1.05, 0.0], [3.0, -50.0, 0.0]])
    assert partition.contains(points, 2, margin=0.1).tolist() == [True, False, True, True]
    assert partition.contains(points, 2).tolist() == [False, False, False, True]


def test_partition_rejects_bad_grids() -> None:
    with pytest.raises(ValueError, match="grid sizes"):
        BlockPartition.fit(site(), Z, (0, 4))
    with pytest.raises(ValueError, match="cannot fill"):
        BlockPartition.fit(site(7), Z, (2, 4))
    with pytest.raises(ValueError, match="concentrated"):
        BlockPartition.fit(torch.zeros(100, 3), Z, (2, 2))
    with pytest.raises(ValueError, match="strictly increasing"):
        BlockPartition(up=Z, axes=ground_basis(Z), edges_u=[0.0, 0.0], edges_v=[0.0, 1.0])


# ---------------------------------------------------------------- camera assignment


def test_world_to_camera_puts_points_ahead_at_positive_depth_and_up_at_the_image_top() -> None:
    """The convention `assign_cameras` relies on: OpenGL camera-to-world in, OpenCV view matrix out."""
    view = world_to_camera(torch.eye(4)[None, :3, :])[0]  # camera at the origin looking along -z
    points = torch.tensor([[0.0, 0.0, -5.0], [0.0, 1.0, -5.0], [1.0, 0.0, -5.0], [0.0, 0.0, 5.0]])
    cam = points @ view[:3, :3].T + view[:3, 3]
    pix = cam @ intrinsics(10.0).T
    pix = pix[:, :2] / pix[:, 2:]
    assert cam[:, 2].tolist() == [5.0, 5.0, 5.0, -5.0]
    assert pix[1, 1] < 24 and pix[2, 0] > 32  # up is towards row 0, right towards the last column


def test_points_in_view_uses_each_cameras_own_image_size() -> None:
    """Captures mix image sizes: a point at column ~50 is inside a 64-wide image, outside a 40-wide one."""
    view = world_to_camera(torch.eye(4)[None, :3, :]).expand(2, 4, 4)
    Ks = torch.stack([intrinsics(10.0), intrinsics(10.0)])  # principal point (32, 24)
    points = torch.tensor([[9.0, 0.0, -5.0], [0.0, 0.0, -5.0]])  # columns 50 and 32
    inside = points_in_view(view, Ks, torch.tensor([[64, 48], [40, 48]]), points)
    assert inside.tolist() == [[True, True], [False, True]]


@pytest.fixture(scope="module")
def ground_scene():
    """4000 ground points on [0, 8] x [0, 4], a 2 x 2 grid (blocks 0: x<4,y<2; 1: x<4,y>=2; 2: x>=4,y<2; 3)."""
    g = torch.Generator().manual_seed(0)
    points = torch.rand(4000, 3, generator=g) * torch.tensor([8.0, 4.0, 0.0])
    partition = BlockPartition.fit(points, Z, (2, 2), split="uniform", quantile=0.0)
    return partition, points, partition.assign(points)


def image_size(count: int, width: int = 64, height: int = 48) -> Tensor:
    return torch.tensor([[width, height]]).expand(count, 2)


def run_assignment(ground_scene, cameras, focals, **kwargs):
    partition, points, ids = ground_scene
    c2w = torch.stack(cameras)
    Ks = torch.stack([intrinsics(f) for f in focals])
    return assign_cameras(partition, c2w, Ks, image_size(len(cameras)), points, ids, **kwargs)


SKY = ((1.0, 0.0, 0.0),)  # world_up for cameras looking straight up


def block_cameras():
    return [
        look_at((2.0, 1.0, 3.0), (2.0, 1.0, 10.0), *SKY),  # 0: in block 0, looking at the sky
        look_at((1.0, 1.0, 6.0), (6.0, 3.0, 0.0)),  # 1: in block 0, telephoto on block 3
        look_at((1.0, 1.0, 6.0), (-4.0, -1.0, 12.0)),  # 2: same place, looking the other way
        look_at((6.0, 3.0, 3.0), (6.0, 3.0, 10.0), *SKY),  # 3: in block 3, looking at the sky
    ]


def test_cameras_by_position_and_by_visibility(ground_scene) -> None:
    assigned = run_assignment(ground_scene, block_cameras(), [40.0, 200.0, 200.0, 40.0])
    assert assigned[0] == [0, 1, 2]  # all three stand in block 0
    assert assigned[3] == [1, 3]  # camera 1 sees block 3 from block 0; camera 2 looks away
    # Without the visibility rule camera 1 no longer qualifies for block 3.
    strict = run_assignment(ground_scene, block_cameras(), [40.0, 200.0, 200.0, 40.0], visibility_threshold=1.0)
    assert strict[3] == [3]


def test_visibility_threshold_is_a_share_of_the_block(ground_scene) -> None:
    partition, points, ids = ground_scene
    telephoto, in_block_3 = block_cameras()[1], block_cameras()[3]
    view = world_to_camera(telephoto[None])[0]
    cam = points[ids == 3] @ view[:3, :3].T + view[:3, 3]
    pix = cam @ intrinsics(200.0).T
    uv = pix[:, :2] / pix[:, 2:]
    inside = (cam[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 64) & (uv[:, 1] >= 0) & (uv[:, 1] < 48)
    share = float(inside.float().mean())
    assert 0.1 < share < 0.9
    scene, cameras, focals = ground_scene, [telephoto, in_block_3], [200.0, 40.0]
    assert run_assignment(scene, cameras, focals, visibility_threshold=share - 0.01)[3] == [0, 1]
    assert run_assignment(scene, cameras, focals, visibility_threshold=share + 0.01)[3] == [1]


def test_position_margin_reaches_into_neighbouring_blocks(ground_scene) -> None:
    near_edge = [look_at((2.0, 1.9, 3.0), (2.0, 1.9, 10.0), *SKY), look_at((6.0, 3.0, 3.0), (6.0, 3.0, 9.0), *SKY)]
    assert run_assignment(ground_scene, near_edge, [40.0, 40.0], position_margin=0.1)[1] == [0]  # 1.9 >= 2 - 0.2
    # Without the margin block 1 gets a camera only through the fallback: the one nearest to it.
    assert run_assignment(ground_scene, near_edge, [40.0, 40.0], position_margin=0.0)[1] == [0]
    far = [look_at((2.0, 1.5, 3.0), (2.0, 1.5, 10.0), *SKY), look_at((2.0, 3.9, 3.0), (2.0, 3.9, 9.0), *SKY)]
    assert run_assignment(ground_scene, far, [40.0, 40.0], position_margin=0.1)[0] == [0]
    assert run_assignment(ground_scene, far, [40.0, 40.0], position_margin=0.1)[1] == [1]


def test_every_block_with_points_gets_a_camera(ground_scene) -> None:
    partition, points, ids = ground_scene
    cameras = torch.stack(
        [
            look_at((3.0, 0.5, 2.0), (5.0, 0.5, 0.0)),  # 0: in block 0, sees block 2 and 18% of block 3
            look_at((2.0, 1.0, 3.0), (2.0, 1.0, 0.0), (1.0, 0.0, 0.0)),  # 1: over block 0, looking down
        ]
    )
    Ks = torch.stack([intrinsics(60.0), intrinsics(60.0)])
    keep = (ids != 2) & ((ids != 1) | (points[:, 1] > 3.5))  # block 2 empty; block 1 only out of view
    points, ids = points[keep], ids[keep]
    counts = torch.bincount(ids, minlength=4)
    assert counts[2] == 0 and 100 < counts[1] < 400
    assigned = assign_cameras(partition, cameras, Ks, image_size(2), points, ids, visibility_threshold=0.5)
    assert assigned[0] == [0, 1]  # both stand in it
    assert assigned[1] == [1]  # nobody sees it: the nearest camera (not merely the first)
    assert assigned[2] == []  # empty, and nobody stands in it
    assert assigned[3] == [0]  # below the threshold, but camera 0 is the one that sees most of it
    # A block under min_points counts as empty.
    assigned = assign_cameras(partition, cameras, Ks, image_size(2), points, ids, visibility_threshold=0.5, min_points=400)
    assert assigned[1] == [] and assigned[3] == [0]


# ---------------------------------------------------------------- block weighting


def test_block_weights_match_the_formula() -> None:
    psnr = torch.tensor([30.0, 28.0, 27.0, 20.0])
    ssim = torch.tensor([0.95, 0.93, 0.90, 0.80])
    w = block_weights(psnr, ssim, sigma=10.0)
    assert float(w[0]) == 1.0
    # 2 - exp(-(2^2 + 100 * 0.02^2) / 200) = 2 - exp(-0.0202)
    assert float(w[1]) == pytest.approx(1.0199973468, abs=1e-6)
    assert float(w[2]) == pytest.approx(2 - math.exp(-(3**2 + 100 * 0.05**2) / 200), abs=1e-6)
    assert float(w[2]) == pytest.approx(1.0451968, abs=1e-6)
    assert bool((w.diff() > 0).all()) and float(w.max()) < 2.0


def test_block_weights_take_each_metric_relative_to_its_best() -> None:
    w = block_weights(torch.tensor([30.0, 29.0]), torch.tensor([0.90, 0.95]), sigma=5.0)
    assert w.tolist() == pytest.approx([2 - math.exp(-100 * 0.05**2 / 50), 2 - math.exp(-1 / 50)], abs=1e-6)
    wider = block_weights(torch.tensor([30.0, 29.0]), torch.tensor([0.90, 0.95]), sigma=20.0)
    assert bool((wider < w).all())


def test_smoothed_metrics_initialise_then_average() -> None:
    metrics = SmoothedBlockMetrics(num_blocks=3, momentum=0.9)
    assert metrics.weights().tolist() == [1.0, 1.0, 1.0]
    metrics.update(0, 25.0, 0.80)
    assert float(metrics.psnr[0]) == 25.0 and float(metrics.ssim[0]) == pytest.approx(0.80)  # not 2.5 / 0.08
    metrics.update(0, 30.0, 0.90)
    assert float(metrics.psnr[0]) == pytest.approx(25.5) and float(metrics.ssim[0]) == pytest.approx(0.81)
    metrics.update(1, 27.5, 0.83)
    w = metrics.weights(sigma=10.0)
    assert w.dtype == torch.float32
    # Block 1 is the best measured (27.5 > 25.5): block 0 lags by 2 dB and 0.02; block 2 was never measured.
    assert w.tolist() == pytest.approx([2 - math.exp(-0.0202), 1.0, 1.0], abs=1e-6)


def test_smoothed_metrics_state_round_trip() -> None:
    metrics = SmoothedBlockMetrics(num_blocks=2)
    metrics.update(0, 22.0, 0.7)
    state = metrics.state_dict()
    metrics.update(1, 24.0, 0.75)
    restored = SmoothedBlockMetrics(num_blocks=2)
    restored.load_state_dict(state)
    assert restored.measured.tolist() == [True, False]  # the saved state was a copy
    restored.update(1, 24.0, 0.75)
    assert torch.equal(restored.weights(), metrics.weights())
    with pytest.raises(ValueError, match="shape"):
        SmoothedBlockMetrics(num_blocks=3).load_state_dict(state)
    with pytest.raises(ValueError, match="momentum"):
        SmoothedBlockMetrics(num_blocks=3, momentum=1.0)


# ---------------------------------------------------------------- momentum teacher


def linear(weight, bias) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.copy_(torch.tensor([bias]))
    return layer


def test_ema_update_math() -> None:
    teacher, student = linear([1.0, 2.0], 3.0), linear([5.0, 6.0], 7.0)
    ema_update_(teacher, student, 0.9)
    assert teacher.weight.flatten().tolist() == pytest.approx([1.4, 2.4], abs=1e-6)
    assert teacher.bias.tolist() == pytest.approx([3.4], abs=1e-6)
    assert student.weight.tolist() == [[5.0, 6.0]]
    ema_update_(teacher, student, 0.5)
    assert teacher.weight.flatten().tolist() == pytest.approx([3.2, 4.2], abs=1e-6)


def test_ema_update_endpoints() -> None:
    teacher, student = linear([0.1, -0.3], 0.7), linear([1.3, 2.9], -4.1)
    before = copy.deepcopy(teacher.state_dict())
    ema_update_(teacher, student, 1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    ema_update_(teacher, student, 0.0)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in teacher.state_dict().items())


def test_ema_update_copies_buffers_and_checks_structure() -> None:
    teacher, student = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    student.train()(torch.randn(8, 3) * 4 + 2)
    ema_update_(teacher, student, 0.9)
    assert torch.equal(teacher.running_mean, student.running_mean) and not torch.equal(
        teacher.running_mean, torch.zeros(3)
    )
    assert int(teacher.num_batches_tracked) == 1
    with pytest.raises(ValueError, match="parameters differ"):
        ema_update_(nn.Linear(2, 1), nn.Linear(3, 1), 0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update_(nn.Linear(2, 1), nn.Linear(2, 1), 1.5)


def decoder_outputs(decoder: nn.Module, features: Tensor):
    out = decoder(features)
    return {"color": out[:, :3], "rotation": out[:, 3:7], "scale": out[:, 7:10], "opacity": out[:, 10:]}


def test_consistency_loss_values_and_gradients() -> None:
    assert float(
        consistency_loss(
            {"color": torch.tensor([[1.0, 2.0]]), "opacity": torch.tensor([[0.5]])},
            {"color": torch.zeros(1, 2), "opacity": torch.zeros(1, 1)},
        )
    ) == pytest.approx(2.5 + 0.25)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(35, 32), nn.ReLU(), nn.Linear(32, 11))
    teacher = copy.deepcopy(student).requires_grad_(False)
    features = torch.randn(64, 35)
    assert float(consistency_loss(decoder_outputs(student, features), decoder_outputs(teacher, features))) == 0.0
    with torch.no_grad():
        teacher[2].bias.add_(0.1)
    loss = consistency_loss(decoder_outputs(student, features), decoder_outputs(teacher, features))
    # Only the last layer's bias differs, by 0.1 on every output: each of the 4 MSEs is 0.01.
    assert float(loss) == pytest.approx(0.04, rel=1e-4)
    loss.backward()
    assert student[0].weight.grad is not None and float(student[2].bias.grad.abs().sum()) > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_consistency_gradient_reaches_the_features_through_the_frozen_teacher() -> None:
    """Official recipe: both decoders read the same, non-detached features, so the loss's gradient
    on the features is 2(s - t)(ds/dF - dt/dF) / n, not only the student side's 2(s - t) ds/dF / n."""
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(35, 32), nn.ReLU(), nn.Linear(32, 11))
    teacher = nn.Sequential(nn.Linear(35, 32), nn.ReLU(), nn.Linear(32, 11)).requires_grad_(False)
    features = torch.randn(16, 35, requires_grad=True)

    def feature_grad(detach_teacher: bool) -> Tensor:
        features.grad = None
        target = decoder_outputs(teacher, features.detach() if detach_teacher else features)
        consistency_loss(decoder_outputs(student, features), target).backward()
        return features.grad.clone()

    through_both, student_side = feature_grad(False), feature_grad(True)
    teacher_side = torch.autograd.functional.jacobian(lambda f: teacher(f).sum(0), features.detach())
    assert not torch.allclose(through_both, student_side)
    # The difference is exactly the teacher side's term, -2 (s - t) dt/dF / n per attribute.
    s_out, t_out = student(features.detach()), teacher(features.detach())
    sizes = {"color": 3, "rotation": 4, "scale": 3, "opacity": 1}
    scale = torch.cat([torch.full((k,), 2.0 / (16 * k)) for k in sizes.values()])
    residual = (s_out - t_out) * scale  # [16, 11]
    expected = -torch.einsum("no,onf->nf", residual, teacher_side)
    assert torch.allclose(through_both - student_side, expected, atol=1e-6)
    assert all(p.grad is None for p in teacher.parameters())


def test_consistency_loss_requires_matching_keys() -> None:
    with pytest.raises(ValueError, match="same non-empty keys"):
        consistency_loss({"color": torch.zeros(2, 3)}, {"color": torch.zeros(2, 3), "scale": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="same non-empty keys"):
        consistency_loss({}, {})


# ---------------------------------------------------------------- one process's blocks


def five_blocks() -> BlockSet:
    anchors = Anchors.from_points(site(2_000), 0.5, 4, 2)
    partition = BlockPartition.fit(anchors.positions, Z, (5, 1), "quantile")
    ids = partition.assign(anchors.positions)
    states = [BlockState(anchors=anchors.select(ids == b), steps=10 * b) for b in range(5)]
    return BlockSet(partition, [[b] for b in range(5)], states, steps_per_block=3)


def test_blocks_are_dealt_round_robin_and_take_turns_per_process() -> None:
    shares = []
    for rank in range(2):
        blocks = five_blocks()
        blocks.assign(rank, 2)
        shares.append(blocks.owned)
        assert [blocks.block_for_step(step) for step in range(0, 12, 3)] == (blocks.owned * 2)[:4]
    assert shares == [[0, 2, 4], [1, 3]]
    with pytest.raises(UserInputError, match="6 processes but only 5 blocks"):
        five_blocks().assign(0, 6)


def test_merge_then_resplit_restores_each_blocks_step_count() -> None:
    blocks = five_blocks()
    blocks.assign(0, 1)
    blocks.activate(2, torch.device("cpu"))
    with torch.no_grad():
        blocks.params["anchor_features"].fill_(7.0)  # live values reach the merge
    total = sum(blocks.sizes())
    merged = blocks.merge(optimizers=None)
    assert merged.num_anchors == total and blocks.states == [] and blocks.active is None
    owner = blocks.partition.assign(merged.positions)
    assert bool((merged.features[owner == 2] == 7.0).all()) and not bool((merged.features[owner != 2] == 7.0).any())
    blocks.resplit(lambda anchors: [anchors.select(blocks.partition.assign(anchors.positions) == b) for b in range(5)])
    assert blocks.merged is None and [state.steps for state in blocks.states] == [0, 10, 20, 30, 40]
    assert sum(blocks.sizes()) == total
