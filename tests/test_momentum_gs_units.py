"""Momentum-GS building blocks on the CPU: optimiser row surgery, block states, anchor growing and
pruning, export directions, gradient-averaged Adam (one and two processes), the CPU launcher shim,
and the block-wise model itself built in-process (no data on disk)."""

from __future__ import annotations

import copy
import inspect
import math
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import torch.distributed as dist
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.optimizers import Optimizers
from torch import Tensor
from torch.nn import Parameter

import distilled_gs_ns  # noqa: F401  (installs the spawn shim, as nerfstudio's plugin discovery does)
from distilled_gs_ns.blocks.block_state import BlockState, merge_blocks
from distilled_gs_ns.blocks.partition import BlockPartition
from distilled_gs_ns.blocks.selection import capped, view_counts
from distilled_gs_ns.compat import cpu_processes
from distilled_gs_ns.configs.momentum_gs import momentum_gs_optimizers
from distilled_gs_ns.distributed.gradient_averaging import (
    AveragedAdam,
    AveragedAdamOptimizerConfig,
)
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.metrics.saved_tensors import SavedTensorBytes
from distilled_gs_ns.models.initialisation import seed_box
from distilled_gs_ns.models.momentum_gs import MomentumGSModel, MomentumGSModelConfig
from distilled_gs_ns.optim.parameter_rows import (
    append_rows,
    install_parameter,
    keep_rows,
    optimizer_state,
)
from distilled_gs_ns.rendering.cameras import (
    image_sizes,
    points_in_view,
    world_to_camera,
)
from distilled_gs_ns.scaffold.anchors import Anchors, spawn_gaussians, visible
from distilled_gs_ns.scaffold.export_directions import export_view_directions
from distilled_gs_ns.scaffold.refinement import (
    AnchorStatistics,
    grown_anchors,
    pruned_mask,
)
from distilled_gs_ns.scaffold.strategy import TRAINED_FIELDS
from tests.toy_models import SIZE, look_at, ring_cameras, square_cameras

Z = torch.tensor([0.0, 0.0, 1.0])
ADAM_KEYS = ("exp_avg", "exp_avg_sq")


def assert_anchors_equal(a: Anchors, b: Anchors) -> None:
    for name in ("positions", "features", "offsets", "log_scaling"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def sorted_rows(x: Tensor) -> Tensor:
    """Rows in lexicographic order, to compare point sets regardless of order."""
    order = torch.arange(x.shape[0])
    for column in reversed(range(x.shape[1])):
        order = order[torch.sort(x[order, column], stable=True).indices]
    return x[order]


# ---------------------------------------------------------------- parameter_rows


def stepped_adam(rows: int = 5, steps: int = 3, seed: int = 0) -> Tuple[Parameter, torch.optim.Adam]:
    """A Parameter with a few Adam steps behind it, so its moments differ row by row."""
    gen = torch.Generator().manual_seed(seed)
    param = Parameter(torch.randn(rows, 2, 3, generator=gen))
    optimizer = torch.optim.Adam([param], lr=0.1)
    for _ in range(steps):
        param.grad = torch.randn(param.shape, generator=gen)
        optimizer.step()
    return param, optimizer


def test_keep_rows_filters_data_and_moments_and_keeps_step() -> None:
    param, optimizer = stepped_adam()
    old = {k: v.clone() for k, v in optimizer.state[param].items()}
    keep = torch.tensor([True, False, True, True, False])
    new = keep_rows(optimizer, param, keep)
    assert new is not param and optimizer.param_groups[0]["params"] == [new]
    assert param not in optimizer.state  # no stale state left for the replaced Parameter
    assert torch.equal(new.data, param.data[keep]) and new.requires_grad
    state = optimizer.state[new]
    for key in ADAM_KEYS:
        assert torch.equal(state[key], old[key][keep]), key
    assert torch.equal(state["step"], old["step"]) and float(state["step"]) == 3


def test_append_rows_appends_with_zero_moments() -> None:
    param, optimizer = stepped_adam()
    old = {k: v.clone() for k, v in optimizer.state[param].items()}
    rows = torch.randn(2, 2, 3)
    new = append_rows(optimizer, param, rows)
    assert optimizer.param_groups[0]["params"] == [new] and param not in optimizer.state
    assert torch.equal(new.data, torch.cat([param.data, rows]))
    state = optimizer.state[new]
    for key in ADAM_KEYS:
        assert state[key].shape == new.shape
        assert torch.equal(state[key][:5], old[key]), key
        assert torch.equal(state[key][5:], torch.zeros(2, 2, 3)), key
    assert torch.equal(state["step"], old["step"])
    new.grad = torch.ones_like(new)
    optimizer.step()  # the reshaped state fits the new Parameter
    assert not torch.equal(new.data[5:], rows)


def test_optimizer_state_copy_and_reinstall_continue_like_never_swapped() -> None:
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(4, 3, generator=gen)
    grads = [torch.randn(4, 3, generator=gen) for _ in range(6)]
    ref = Parameter(start.clone())
    ref_opt = torch.optim.Adam([ref], lr=0.05)
    swapped = Parameter(start.clone())
    opt = torch.optim.Adam([swapped], lr=0.05)
    assert optimizer_state(opt, swapped, "cpu") == {}  # never stepped: nothing to carry
    for grad in grads[:3]:
        for p, o in ((ref, ref_opt), (swapped, opt)):
            p.grad = grad.clone()
            o.step()
    state = optimizer_state(opt, swapped, "cpu")
    assert set(state) == {"step", *ADAM_KEYS}
    for key, value in state.items():
        assert torch.equal(value, opt.state[swapped][key]), key
        assert value.data_ptr() != opt.state[swapped][key].data_ptr(), f"{key} must be a copy"
    # The host round trip of a block: a fresh Parameter with the same values and the saved state.
    moved = Parameter(swapped.detach().clone())
    install_parameter(opt, moved, state)
    assert opt.param_groups[0]["params"] == [moved] and swapped not in opt.state
    for grad in grads[3:]:
        for p, o in ((ref, ref_opt), (moved, opt)):
            p.grad = grad.clone()
            o.step()
    assert torch.equal(moved.data, ref.data)
    for key in ("step", *ADAM_KEYS):
        assert torch.equal(opt.state[moved][key], ref_opt.state[ref][key]), key


def test_install_parameter_with_empty_state_starts_fresh() -> None:
    param, optimizer = stepped_adam()
    fresh = Parameter(torch.zeros(3, 2, 3))
    install_parameter(optimizer, fresh, {})
    assert optimizer.param_groups[0]["params"] == [fresh]
    assert len(optimizer.state) == 0


# ---------------------------------------------------------------- block states


def numbered_anchors(n: int = 400, seed: int = 0) -> Anchors:
    """Anchors spread over a 2 x 2 ground square; features[:, 0] is each anchor's id."""
    gen = torch.Generator().manual_seed(seed)
    positions = torch.rand(n, 3, generator=gen) * torch.tensor([2.0, 2.0, 0.2]) - torch.tensor([1.0, 1.0, 0.0])
    return Anchors(
        positions=positions,
        features=torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4),
        offsets=torch.randn(n, 3, 3, generator=gen),
        log_scaling=torch.randn(n, 6, generator=gen),
    )


def grid_2x2(anchors: Anchors) -> BlockPartition:
    return BlockPartition.fit(anchors.positions, Z, (2, 2), "uniform")


def ids_of(anchors: Anchors) -> List[int]:
    return anchors.features[:, 0].long().tolist()


def split_anchors(partition: BlockPartition, anchors: Anchors, margin: float) -> List[Anchors]:
    """The 'cell' block selection: each block's cell grown by `margin` cells."""
    return [anchors.select(partition.contains(anchors.positions, b, margin=margin)) for b in range(partition.num_blocks)]


def test_split_without_margin_puts_every_anchor_in_exactly_one_block() -> None:
    anchors = numbered_anchors()
    partition = grid_2x2(anchors)
    blocks = split_anchors(partition, anchors, margin=0.0)
    assert len(blocks) == 4 and all(block.num_anchors > 0 for block in blocks)
    owner = partition.assign(anchors.positions)
    seen = []
    for index, block in enumerate(blocks):
        assert bool((owner[block.features[:, 0].long()] == index).all())
        seen += ids_of(block)
    assert sorted(seen) == list(range(anchors.num_anchors))


def test_split_with_margin_shares_border_anchors() -> None:
    anchors = numbered_anchors()
    partition = grid_2x2(anchors)
    margin = 0.2
    blocks = split_anchors(partition, anchors, margin=margin)
    copies = torch.zeros(anchors.num_anchors, dtype=torch.long)
    for block in blocks:
        copies[block.features[:, 0].long()] += 1
    assert int(copies.min()) >= 1  # nothing lost
    assert int(copies.max()) >= 2  # border anchors trained from both sides
    # Exactly the anchors within `margin` cells of an inner grid line are shared.
    coords = partition.ground_coords(anchors.positions)
    cell_u = float(partition.edges_u[1] - partition.edges_u[0])
    cell_v = float(partition.edges_v[1] - partition.edges_v[0])
    near_u = (coords[:, 0] - partition.edges_u[1]).abs() < margin * cell_u
    near_v = (coords[:, 1] - partition.edges_v[1]).abs() < margin * cell_v
    assert bool((copies[~(near_u | near_v)] == 1).all())
    assert bool((copies[near_u ^ near_v] >= 2).all())


def test_merge_after_split_keeps_every_anchor_once_and_drops_what_grew_outside() -> None:
    anchors = numbered_anchors()
    partition = grid_2x2(anchors)
    blocks = split_anchors(partition, anchors, margin=0.25)
    assert sum(block.num_anchors for block in blocks) > anchors.num_anchors  # overlaps exist
    merged = merge_blocks(partition, blocks)
    assert sorted(ids_of(merged)) == list(range(anchors.num_anchors))
    assert torch.equal(sorted_rows(merged.positions), sorted_rows(anchors.positions))
    # Block 0 grows one anchor inside its own cell and one inside block 3's cell.
    inside = partition.block_bounds(0).clamp(-10, 10).mean(0)  # a (u, v) point of cell 0
    outside = partition.block_bounds(3).clamp(-10, 10).mean(0)
    n = anchors.num_anchors
    grown = Anchors(
        positions=torch.stack([inside @ partition.axes, outside @ partition.axes]).float(),
        features=torch.tensor([[n] * 4, [n + 1] * 4], dtype=torch.float32),
        offsets=torch.zeros(2, 3, 3),
        log_scaling=torch.zeros(2, 6),
    )
    assert partition.assign(grown.positions).tolist() == [0, 3]
    blocks[0] = Anchors.concat([blocks[0], grown])
    merged = merge_blocks(partition, blocks)
    assert sorted(ids_of(merged)) == list(range(n + 1))  # n kept, n + 1 dropped
    with pytest.raises(ValueError):
        merge_blocks(partition, blocks[:3])


def test_block_state_dict_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    anchors = numbered_anchors(20)
    param, optimizer = stepped_adam(rows=20)
    state = BlockState(
        anchors=Anchors(
            positions=anchors.positions,
            features=Parameter(anchors.features.clone()),
            offsets=anchors.offsets,
            log_scaling=anchors.log_scaling,
        ),
        optimizer_state={"anchor_features": optimizer_state(optimizer, param, torch.device("cpu"))},
        steps=7,
    )
    path = tmp_path / "block.pt"
    torch.save(state.to_dict(), path)
    restored = BlockState.from_dict(torch.load(path, weights_only=True))
    assert_anchors_equal(restored.anchors, anchors)
    assert restored.steps == 7
    saved = state.optimizer_state["anchor_features"]
    loaded = restored.optimizer_state["anchor_features"]
    assert set(loaded) == set(saved)
    for key in saved:
        assert torch.equal(loaded[key], saved[key]), key


# ---------------------------------------------------------------- anchor growing and pruning


def test_grown_anchors_follow_thresholds_and_never_duplicate_a_voxel() -> None:
    s = 0.5
    k = 3
    anchors = Anchors(
        positions=torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),  # voxels (0,0,0) and (2,0,0)
        features=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        # In units of exp(log_scaling[:, :3]) = s: each offset lands on a neighbouring voxel centre.
        offsets=torch.tensor(
            [
                [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # -> (1,0,0), (2,0,0), (0,1,0)
                [[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]],  # -> (1,0,0), (2,0,1), (2,-1,0)
            ]
        ),
        log_scaling=torch.full((2, 6), math.log(s)),
    )
    stats = AnchorStatistics.zeros(2, k, torch.device("cpu"))
    stats.gradient_count.copy_(torch.tensor([[4.0, 5.0, 5.0], [5.0, 1.0, 5.0]]))
    mean = torch.tensor([[1.0, 1.0, 0.1], [1.0, 1.0, 0.5]])
    stats.gradient_sum.copy_(mean * stats.gradient_count)
    new = grown_anchors(anchors, stats, s, gradient_threshold=0.5, min_count=4)
    # (1,0,0): A0 offset 0 (count == min_count), its duplicate from A1 offset 0 is dropped;
    # (2,0,0) holds A1 already; (0,1,0) has a low gradient; (2,0,1) too few counts;
    # (2,-1,0): A1 offset 2, mean exactly at the threshold.
    cells = torch.floor(new.positions / s + 0.5).long()
    found = {tuple(c): f.tolist() for c, f in zip(cells.tolist(), new.features)}
    assert found == {(1, 0, 0): [1.0, 2.0], (2, -1, 0): [3.0, 4.0]}
    assert torch.allclose(new.positions, cells.float() * s)
    assert torch.equal(new.offsets, torch.zeros(2, k, 3))
    assert torch.allclose(new.log_scaling, torch.full((2, 6), math.log(s)))
    # Under a cap the largest gradients grow first: (2,-1,0) has mean 1.0 at A1 offset 2 once raised.
    stats.gradient_sum[1, 2] = 2.0 * stats.gradient_count[1, 2]
    limited = grown_anchors(anchors, stats, s, gradient_threshold=0.5, min_count=4, limit=1)
    assert torch.floor(limited.positions / s + 0.5).long().tolist() == [[2, -1, 0]]
    assert grown_anchors(anchors, stats, s, gradient_threshold=0.5, min_count=4, limit=0).num_anchors == 0

    stats.gradient_sum.mul_(0.1)  # every mean below the threshold now
    none = grown_anchors(anchors, stats, s, gradient_threshold=0.5, min_count=4)
    assert none.num_anchors == 0 and none.features.shape == (0, 2) and none.offsets.shape == (0, k, 3)


def test_grown_anchors_skip_cells_taken_only_by_each_other() -> None:
    """Three offsets of three anchors aim at the same empty voxel: exactly one anchor appears."""
    s = 1.0
    anchors = Anchors(
        positions=torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]),
        features=torch.tensor([[1.0], [2.0], [3.0]]),
        offsets=torch.tensor([[[1.0, 0.0, 0.0]], [[-1.0, 0.0, 0.0]], [[0.0, -1.0, 0.0]]]),
        log_scaling=torch.zeros(3, 6),
    )
    stats = AnchorStatistics.zeros(3, 1, torch.device("cpu"))
    stats.gradient_count.fill_(10.0)
    stats.gradient_sum.fill_(10.0)
    new = grown_anchors(anchors, stats, s, gradient_threshold=0.5, min_count=1)
    assert new.positions.tolist() == [[1.0, 0.0, 0.0]]
    assert new.features.tolist() == [[1.0]]  # the first qualifying offset's anchor


def test_pruned_mask_needs_enough_visits_and_low_mean_opacity() -> None:
    stats = AnchorStatistics.zeros(5, 2, torch.device("cpu"))
    stats.visits.copy_(torch.tensor([10.0, 10.0, 3.0, 10.0, 8.0]))
    stats.opacity_sum.copy_(torch.tensor([0.01, 1.0, 0.0, 0.05, 0.0]))
    # mean opacity per visit: 0.001, 0.1, 0, 0.005 (not below), 0 (visits == min_visits)
    assert pruned_mask(stats, min_opacity=0.005, min_visits=8).tolist() == [True, False, False, False, True]


def test_statistics_after_refinement_restart_only_what_was_evaluated() -> None:
    """Offsets seen in few views keep accumulating across intervals (as in Scaffold-GS); kept rows
    follow `keep`, grown anchors start at zero."""
    stats = AnchorStatistics.zeros(3, 2, torch.device("cpu"))
    stats.gradient_count.copy_(torch.tensor([[8.0, 1.0], [4.0, 3.0], [9.0, 9.0]]))
    stats.gradient_sum.copy_(torch.tensor([[0.8, 0.1], [0.4, 0.3], [0.9, 0.9]]))
    stats.visits.copy_(torch.tensor([8.0, 5.0, 9.0]))
    stats.opacity_sum.copy_(torch.tensor([0.5, 0.2, 0.9]))
    after = stats.after_refinement(torch.tensor([True, True, False]), num_new=2, min_count=8)
    # Offsets with >= 4 samples were evaluated and restart; anchor 0 (8 visits) too; anchor 2 is pruned.
    assert after.gradient_count.tolist() == [[0.0, 1.0], [0.0, 3.0], [0.0, 0.0], [0.0, 0.0]]
    assert torch.allclose(after.gradient_sum, torch.tensor([[0.0, 0.1], [0.0, 0.3], [0.0, 0.0], [0.0, 0.0]]))
    assert after.visits.tolist() == [0.0, 5.0, 0.0, 0.0]
    assert after.opacity_sum.tolist() == pytest.approx([0.0, 0.2, 0.0, 0.0])


# ---------------------------------------------------------------- export directions


def intrinsics(count: int, focal: float = 32.0, size: int = 32) -> Tensor:
    return torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]]).expand(count, 3, 3)


def sizes(count: int, size: int = 32) -> Tensor:
    return torch.tensor([[size, size]]).expand(count, 2)


def test_export_directions_are_the_mean_seen_direction_for_one_sided_cameras() -> None:
    eyes = torch.tensor([[0.0, -5.0, 0.0], [1.5, -4.5, 0.5], [-1.0, -4.8, 1.0], [0.5, -5.0, -1.0]])
    c2w = torch.stack([look_at(eye, torch.zeros(3)) for eye in eyes])
    points = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.1, -0.1]])
    dirs = export_view_directions(points, c2w, intrinsics(4), sizes(4))
    expected = torch.nn.functional.normalize(points[:, None] - eyes[None], dim=-1).mean(1)
    expected = torch.nn.functional.normalize(expected, dim=-1)
    assert torch.allclose(dirs, expected, atol=1e-6)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2), atol=1e-6)
    nearest = torch.nn.functional.normalize(points[0] - eyes[0], dim=-1)
    assert not torch.allclose(dirs[0], nearest, atol=1e-3)  # the mean, not the closest camera


def test_export_directions_fall_back_to_the_nearest_camera_when_directions_cancel() -> None:
    eyes = torch.tensor([[5.0 * math.cos(a), 5.0 * math.sin(a), 0.0] for a in torch.arange(8) * math.pi / 4])
    c2w = torch.stack([look_at(eye, torch.zeros(3)) for eye in eyes])
    point = torch.tensor([[0.3, 0.0, 0.0]])  # nearest camera: (5, 0, 0)
    units = torch.nn.functional.normalize(point - eyes, dim=-1)
    assert units.mean(0).norm() < 0.2  # the ring cancels out
    dirs = export_view_directions(point, c2w, intrinsics(8), sizes(8))
    assert torch.allclose(dirs, torch.tensor([[-1.0, 0.0, 0.0]]), atol=1e-6)


def test_export_directions_for_unseen_points_use_the_nearest_camera() -> None:
    eyes = torch.tensor([[0.0, -5.0, 0.0], [1.0, -5.0, 0.0]])
    c2w = torch.stack([look_at(eye, eye + torch.tensor([0.0, 1.0, 0.0])) for eye in eyes])
    behind = torch.tensor([[1.0, -8.0, 0.0]])  # behind both cameras
    dirs = export_view_directions(behind, c2w, intrinsics(2), sizes(2))
    assert torch.allclose(dirs, torch.tensor([[0.0, -1.0, 0.0]]), atol=1e-6)
    assert export_view_directions(torch.zeros(0, 3), c2w, intrinsics(2), sizes(2)).shape == (0, 3)


def test_export_directions_are_unit_length() -> None:
    gen = torch.Generator().manual_seed(3)
    points = torch.randn(200, 3, generator=gen)
    cams = ring_cameras()
    dirs = export_view_directions(points, cams.camera_to_worlds, cams.get_intrinsics_matrices(), image_sizes(cams))
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(200), atol=1e-5)


# ---------------------------------------------------------------- gradient-averaged Adam

ADAM_STEPS = 3


def initial_params() -> List[Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [Parameter(torch.randn(3, 2, generator=gen)), Parameter(torch.randn(4, generator=gen))]


def rank_gradients(rank: int, step: int) -> List[Tensor]:
    """Different gradients per rank and step (two Parameters of different shapes)."""
    gen = torch.Generator().manual_seed(100 * step + rank)
    return [torch.randn(3, 2, generator=gen), torch.randn(4, generator=gen)]


def _averaged_adam_worker(rank: int, tmp_dir: str) -> None:
    """Spawned: one rank of a 2-process gloo group training with AveragedAdam."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_dir}/rendezvous", rank=rank, world_size=2)
    reduce, calls = dist.all_reduce, []

    def counted_all_reduce(*args, **kwargs):
        calls.append(1)
        return reduce(*args, **kwargs)

    dist.all_reduce = counted_all_reduce
    try:
        params = initial_params()
        optimizers = [AveragedAdam([param], lr=0.05) for param in params]  # as the decoder's MLPs
        for step in range(ADAM_STEPS):
            for param, grad in zip(params, rank_gradients(rank, step)):
                param.grad = grad
            for optimizer in optimizers:
                optimizer.step()
        torch.save([p.detach().clone() for p in params], f"{tmp_dir}/rank{rank}.pt")
        torch.save(len(calls), f"{tmp_dir}/calls{rank}.pt")
    finally:
        dist.destroy_process_group()


def plain_adam(grads_per_step: List[List[Tensor]]) -> List[Tensor]:
    params = initial_params()
    optimizer = torch.optim.Adam(params, lr=0.05)
    for grads in grads_per_step:
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
    return [p.detach() for p in params]


def test_averaged_adam_is_adam_in_one_process() -> None:
    assert not dist.is_initialized()
    params = initial_params()
    optimizer = AveragedAdam(params, lr=0.05)
    for step in range(ADAM_STEPS):
        for param, grad in zip(params, rank_gradients(0, step)):
            param.grad = grad
        optimizer.step()
    expected = plain_adam([rank_gradients(0, step) for step in range(ADAM_STEPS)])
    for got, want in zip(params, expected):
        assert torch.equal(got.detach(), want)
    built = AveragedAdamOptimizerConfig(lr=0.01, eps=1e-15).setup(initial_params())
    assert isinstance(built, AveragedAdam) and built.defaults["eps"] == 1e-15


def test_averaged_adams_over_two_gloo_processes_step_on_the_mean_gradient_with_one_all_reduce(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_averaged_adam_worker, args=(str(tmp_path),), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    mean_grads = [
        [(a + b) / 2 for a, b in zip(rank_gradients(0, step), rank_gradients(1, step))] for step in range(ADAM_STEPS)
    ]
    expected = plain_adam(mean_grads)
    alone = plain_adam([rank_gradients(0, step) for step in range(ADAM_STEPS)])
    for p0, p1, want, own in zip(rank0, rank1, expected, alone):
        assert torch.equal(p0, p1)  # one shared decoder
        assert torch.allclose(p0, want, rtol=0, atol=1e-7)
        assert not torch.allclose(p0, own)  # really averaged, not rank 0's own gradient
    # Two optimisers, one collective per step between them.
    assert [torch.load(tmp_path / f"calls{rank}.pt") for rank in (0, 1)] == [ADAM_STEPS, ADAM_STEPS]


# ---------------------------------------------------------------- CPU process-group shim


def test_package_import_wraps_spawn_once() -> None:
    spawn = torch.multiprocessing.spawn
    assert getattr(spawn, "_distilled_gs_ns_cpu", False)
    cpu_processes.allow_cpu_process_groups()
    assert torch.multiprocessing.spawn is spawn  # idempotent: no wrapper around the wrapper
    import nerfstudio.scripts.train as ns_train

    assert ns_train.mp is torch.multiprocessing  # nerfstudio looks spawn up at call time
    ns_params = list(inspect.signature(ns_train._distributed_worker).parameters)
    assert list(inspect.signature(cpu_processes.cpu_worker).parameters) == ns_params


def test_spawn_shim_replaces_only_nerfstudios_non_cuda_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import nerfstudio.scripts.train as ns_train

    calls: List[Dict] = []

    def fake_spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        calls.append(dict(fn=fn, args=args, nprocs=nprocs, join=join, daemon=daemon, start_method=start_method))
        return "context"

    monkeypatch.setattr(torch.multiprocessing, "spawn", fake_spawn)
    cpu_processes.allow_cpu_process_groups()
    wrapper = torch.multiprocessing.spawn
    assert wrapper is not fake_spawn and wrapper._distilled_gs_ns_cpu

    def _distributed_worker(*args):  # same name, other module: not nerfstudio's
        return args

    class Config:
        collective_timeout_s = 7.0

    ns_args = ("main", 2, 2, 1, "file:///x", Config(), "timeout")
    on_cpu = wrapper(ns_train._distributed_worker, args=ns_args + ("cpu",), nprocs=2, join=False)
    on_cuda = wrapper(ns_train._distributed_worker, args=ns_args + ("cuda",), nprocs=2, join=False)
    assert wrapper(_distributed_worker, args=("cpu",), nprocs=3) == "context"
    assert wrapper(ns_train._distributed_worker, args=(), nprocs=1) == "context"
    # nerfstudio's workers come back supervised, numbered from this machine's first rank.
    for supervised in (on_cpu, on_cuda):
        assert isinstance(supervised, cpu_processes.SupervisedProcesses)
        assert supervised.context == "context" and supervised.first_rank == 2
    # Each rank starts in its own process group, then runs the CPU worker or nerfstudio's own.
    supervised = cpu_processes.supervised_worker
    assert [call["fn"] for call in calls] == [supervised, supervised, _distributed_worker, ns_train._distributed_worker]
    assert calls[0]["args"][0] is cpu_processes.cpu_worker and calls[1]["args"][0] is ns_train._distributed_worker
    # The collectives' timeout is the run's field, not nerfstudio's fixed 30 minutes.
    expected = ns_args[:6] + (timedelta(seconds=7.0),)
    assert calls[0]["args"][1:] == expected + ("cpu",) and calls[1]["args"][1:] == expected + ("cuda",)
    assert calls[0]["nprocs"] == 2 and calls[0]["join"] is False and calls[0]["start_method"] == "spawn"
    assert calls[2]["args"] == ("cpu",) and calls[2]["nprocs"] == 3


# ---------------------------------------------------------------- the block-wise model


def momentum_model(steps_per_block: int = 2, **fields) -> MomentumGSModel:
    """Two blocks of random anchors around the ring cameras' focus, block 0 active."""
    torch.manual_seed(0)
    config = MomentumGSModelConfig(
        num_random=300,
        block_grid=(1, 2),
        steps_per_block=steps_per_block,
        feature_dim=8,
        num_offsets=4,
        hidden_dim=16,
        num_downscales=0,
        **fields,
    )
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=scene_box, num_train_data=8, metadata={}, device="cpu")
    cams = ring_cameras()
    model.place_random_seeds(seed_box(scene_box.aabb, cams.camera_to_worlds, torch.full((8,), 0.5)))
    model.setup_blocks(cams, 0, 1)
    return model


def model_optimizers(model: MomentumGSModel) -> Optimizers:
    return Optimizers(momentum_gs_optimizers(100), model.get_param_groups())


def close_camera() -> Cameras:
    """A camera near the scene that sees only part of it."""
    return square_cameras(look_at(torch.tensor([0.2, -1.2, 0.3]), torch.tensor([0.6, 0.0, 0.1]))[None])


def forward_backward(model: MomentumGSModel, optimizers: Optimizers, step: int, camera: Cameras) -> None:
    """The trainer's order up to the optimiser step: step_cb, render, loss, backward."""
    model.train()
    model.step_cb(optimizers, step)
    outputs = model.get_outputs(camera)
    losses = model.get_loss_dict(outputs, {"image": torch.full((SIZE, SIZE, 3), 0.5)})
    optimizers.zero_grad_all()
    sum(losses.values()).backward()


def train_step(model: MomentumGSModel, optimizers: Optimizers, step: int, camera: Cameras) -> None:
    forward_backward(model, optimizers, step, camera)
    optimizers.optimizer_step_all()
    model.step_post_backward(step)


def anchor_values(model: MomentumGSModel) -> Dict[str, Tensor]:
    return {group: param.detach().clone() for group, param in model.blocks.params.items()}


def test_model_setup_splits_the_seed_anchors_into_overlapping_blocks() -> None:
    model = momentum_model()
    anchors = Anchors.from_points(model.seed_positions, model.voxel_size, 8, 4)
    assert len(model.blocks.states) == 2 and model.blocks.owned == [0, 1] and model.blocks.active == 0
    assert sum(block.anchors.num_anchors for block in model.blocks.states) > anchors.num_anchors
    assert torch.equal(model.blocks.positions, model.blocks.states[0].anchors.positions)


def test_render_decodes_visible_anchors_and_backward_reaches_block_and_decoder() -> None:
    model = momentum_model()
    model.train()
    camera = close_camera()
    anchors = model.blocks.active_anchors()
    pose = camera.camera_to_worlds[0]
    viewmat = world_to_camera(pose[None])[0]
    K = camera.get_intrinsics_matrices()[0]
    mask = visible(anchors, viewmat, K, SIZE, SIZE, model.config.visibility_margin)
    assert 0 < int(mask.sum()) < anchors.num_anchors  # the test needs a partial view
    gaussians = model.gaussians_for_render(None, camera, camera.camera_to_worlds)
    view = model.training_view
    assert torch.equal(view.ids, mask.nonzero().squeeze(1))
    assert bool(mask[view.spawn.anchor_ids].all()) and gaussians.means.shape[0] == view.spawn.anchor_ids.shape[0]
    detached = anchors.map(Tensor.detach)
    expected, _ = spawn_gaussians(detached, model.decoder, pose[:, 3], mask)
    assert 0 < expected.means.shape[0] <= int(mask.sum()) * model.config.num_offsets
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(gaussians, name), getattr(expected, name), atol=1e-6), name

    optimizers = model_optimizers(model)
    forward_backward(model, optimizers, 0, camera)
    grad = model.blocks.params["anchor_features"].grad
    assert grad is not None and float(grad[mask].abs().sum()) > 0
    assert bool((grad[~mask] == 0).all())  # anchors outside the view are not decoded
    for name in ("opacity_mlp", "covariance_mlp", "color_mlp"):
        grads = [p.grad for p in getattr(model.decoder, name).parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, name
    assert all(p.grad is None for p in model.teacher_decoder.parameters())


def test_a_view_without_anchors_still_gives_the_decoder_a_gradient(monkeypatch) -> None:
    """nerfstudio skips optimisers without gradients; the decoder's all-reduce needs every rank to step,
    whatever the rasteriser does with no Gaussians (here: a render not connected to them)."""
    model = momentum_model()
    optimizers = model_optimizers(model)
    away = square_cameras(look_at(torch.tensor([0.0, -3.0, 0.0]), torch.tensor([0.0, -6.0, 0.0]))[None])
    blank = (torch.zeros(1, SIZE, SIZE, 3), torch.zeros(1, SIZE, SIZE, 1), {"means2d": torch.zeros(1, 0, 2)})
    monkeypatch.setattr(model, "rasterize_view", lambda *args, **kwargs: blank)
    forward_backward(model, optimizers, 0, away)
    assert model.training_view.ids.numel() == 0
    for param in model.decoder.parameters():
        assert param.grad is not None and not bool(param.grad.any())


def test_block_swap_round_trips_anchor_values() -> None:
    model = momentum_model()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.blocks.params.values():
            param.copy_(torch.randn(param.shape, generator=gen))
    before = anchor_values(model)
    positions = model.blocks.positions.clone()
    model._deactivate()
    assert model.blocks.active is None and model.blocks.params == {}
    model._activate(1)
    assert model.blocks.active == 1
    assert torch.equal(model.blocks.active_anchors().features, model.blocks.states[1].anchors.features)
    model._deactivate()
    model._activate(0)
    assert torch.equal(model.blocks.positions, positions)
    for group, value in anchor_values(model).items():
        assert torch.equal(value, before[group]), group


def test_block_swap_in_step_cb_carries_adam_state() -> None:
    model = momentum_model(steps_per_block=2)
    optimizers = model_optimizers(model)
    camera = ring_cameras()[0:1]
    train_step(model, optimizers, 0, camera)
    trained = anchor_values(model)
    moments = {
        group: {k: v.clone() for k, v in optimizers.optimizers[group].state[param].items()}
        for group, param in model.blocks.params.items()
    }
    assert float(moments["anchor_features"]["exp_avg"].abs().sum()) > 0

    model.step_cb(optimizers, 2)  # steps 2-3 train block 1
    assert model.blocks.active == 1
    for group, name in TRAINED_FIELDS.items():
        param = model.blocks.params[group]
        assert optimizers.optimizers[group].param_groups[0]["params"] == [param]
        assert optimizers.parameters[group] == [param]
        assert len(optimizers.optimizers[group].state) == 0  # block 1 never trained
        assert torch.equal(getattr(model.blocks.states[0].anchors, name), trained[group])  # stashed on the host

    model.step_cb(optimizers, 4)  # back to block 0
    assert model.blocks.active == 0
    for group, param in model.blocks.params.items():
        assert torch.equal(param.detach(), trained[group]), group
        state = optimizers.optimizers[group].state[param]
        for key, value in moments[group].items():
            assert torch.equal(state[key], value), (group, key)


def test_extra_state_round_trip_through_weights_only_checkpoint(tmp_path: Path) -> None:
    model = momentum_model()
    optimizers = model_optimizers(model)
    train_step(model, optimizers, 0, ring_cameras()[0:1])
    with torch.no_grad():
        model.blocks.states[1].anchors.features.normal_()
    path = tmp_path / "extra.pt"
    torch.save(model.get_extra_state(), path)
    restored = momentum_model()
    restored.set_extra_state(torch.load(path, weights_only=True))
    model.eval()
    restored.eval()
    assert restored.voxel_size == model.voxel_size and restored.blocks.cameras == model.blocks.cameras
    assert_anchors_equal(restored.render_anchors(), model.render_anchors())
    assert torch.equal(restored.blocks.partition.edges_v, model.blocks.partition.edges_v)
    saved = model.blocks.states[0].optimizer_state["anchor_features"]
    assert set(saved) == {"step", *ADAM_KEYS}
    for key, value in saved.items():
        assert torch.equal(restored.blocks.states[0].optimizer_state["anchor_features"][key], value), key
    assert restored.blocks.states[0].steps == 1


def test_merge_keeps_each_anchor_once_from_its_own_block() -> None:
    model = momentum_model()
    anchors = Anchors.from_points(model.seed_positions, model.voxel_size, 8, 4)
    with torch.no_grad():  # mark each block's copy: block b's features are b + 1
        model.blocks.params["anchor_features"].fill_(1.0)
        model.blocks.states[1].anchors.features.fill_(2.0)
    model.run_dir = None
    model.merge()
    merged = model.blocks.merged
    assert merged is not None and model.blocks.states == [] and model.blocks.active is None
    assert torch.equal(sorted_rows(merged.positions), sorted_rows(anchors.positions))
    owner = model.blocks.partition.assign(merged.positions)
    assert torch.equal(merged.features, (owner + 1).float()[:, None].expand(-1, 8))
    model.eval()
    assert_anchors_equal(model.render_anchors(), merged)
    assert model.num_points == anchors.num_anchors


def test_block_init_modes_select_all_seeds_what_cameras_see_or_the_cell_and_merge_once() -> None:
    cell, seen, every = (momentum_model(block_init=mode) for mode in ("cell", "seen", "all-seeds"))
    anchors = Anchors.from_points(seen.seed_positions, seen.voxel_size, 8, 4)
    c2w, Ks, sizes = (seen.train_views[key] for key in ("camera_to_worlds", "Ks", "sizes"))
    for block, cams in enumerate(seen.blocks.cameras):
        in_cell = seen.blocks.partition.contains(anchors.positions, block, margin=seen.config.block_margin)
        views = view_counts(anchors.positions, c2w[cams], Ks[cams], sizes[cams])
        counts = [model.blocks.states[block].anchors.num_anchors for model in (cell, seen, every)]
        assert counts == [int(in_cell.sum()), int((in_cell | (views > 0)).sum()), anchors.num_anchors]
        assert int(in_cell.sum()) < int((in_cell | (views > 0)).sum())  # others' content in view is trained too
    for model in (cell, seen, every):
        model.run_dir = None
        model.merge()
        assert torch.equal(sorted_rows(model.blocks.merged.positions), sorted_rows(anchors.positions))


def test_view_counts_count_the_cameras_that_see_each_point() -> None:
    cams = ring_cameras()
    c2w, Ks = cams.camera_to_worlds, cams.get_intrinsics_matrices()
    sizes = image_sizes(cams)
    points = torch.randn(200, 3) * 0.8
    expected = torch.stack(
        [points_in_view(world_to_camera(c2w[i : i + 1]), Ks[i : i + 1], sizes[i : i + 1], points)[0] for i in range(8)]
    ).sum(0)
    assert torch.equal(view_counts(points, c2w, Ks, sizes), expected)
    assert expected.unique().numel() > 2  # a mix of counts


def test_capped_keeps_the_cell_first_then_the_most_seen() -> None:
    selected = torch.tensor([True, True, True, True, False, True])
    in_cell = torch.tensor([False, True, False, True, False, False])
    views = torch.tensor([5, 0, 9, 1, 99, 2])
    assert capped(selected, in_cell, views, 10).tolist() == [0, 1, 2, 3, 5]
    assert capped(selected, in_cell, views, 3).tolist() == [1, 2, 3]
    assert capped(selected, in_cell, views, 1).tolist() == [3]  # within the cell, the more seen


def spread_offsets(model: MomentumGSModel) -> None:
    """Offsets reaching a few voxels out, so that growth has empty voxels to fill."""
    with torch.no_grad():
        offsets = model.blocks.params["anchor_offsets"]
        offsets.copy_(torch.rand(offsets.shape, generator=torch.Generator().manual_seed(3)) * 6 - 3)


def test_max_active_anchors_caps_every_block_and_its_growth() -> None:
    free = momentum_model()
    cap = free.blocks.states[0].anchors.num_anchors // 3
    model = momentum_model(max_active_anchors=cap, refine_every=1, min_visit_fraction=0.0, grow_grad_threshold=0.0)
    assert all(block.anchors.num_anchors == cap for block in model.blocks.states)
    optimizers = model_optimizers(model)
    spread_offsets(model)
    model.stats.gradient_sum.fill_(1.0)  # every offset qualifies for growth
    model.stats.gradient_count.fill_(1.0)
    model.stats.visits.fill_(1.0)
    model.stats.opacity_sum.fill_(1.0)  # and no anchor is pruned
    model.nerf_optimizers = optimizers
    model._refine()
    assert model.blocks.positions.shape[0] == cap  # full: nothing grows
    with torch.no_grad():
        model.stats.opacity_sum[:5] = 0.0  # five anchors pruned make room for five new ones
    model._refine()
    assert model.blocks.positions.shape[0] == cap
    uncapped = momentum_model(refine_every=1, min_visit_fraction=0.0, grow_grad_threshold=0.0)
    for name in ("gradient_sum", "gradient_count", "visits", "opacity_sum"):
        getattr(uncapped.stats, name).fill_(1.0)
    uncapped.nerf_optimizers = model_optimizers(uncapped)
    spread_offsets(uncapped)
    before = uncapped.blocks.positions.shape[0]
    uncapped._refine()
    assert uncapped.blocks.positions.shape[0] > before  # the same statistics grow anchors without a cap


def test_invalid_block_settings_are_refused_in_one_line() -> None:
    with pytest.raises(UserInputError, match="max_active_anchors=-1"):
        MomentumGSModelConfig(max_active_anchors=-1)


def test_export_properties_have_consistent_shapes() -> None:
    model = momentum_model()
    model.run_dir = None
    model.merge()
    model.eval()
    n = model.means.shape[0]
    assert 0 < n <= model.blocks.merged.num_anchors * model.config.num_offsets
    assert model.means.shape == (n, 3) and model.scales.shape == (n, 3) and model.quats.shape == (n, 4)
    assert model.opacities.shape == (n, 1) and model.features_dc.shape == (n, 3)
    assert model.features_rest.shape == (n, 15, 3)  # SH degree 3 fitted to the decoder's colours
    assert model.shs_0.shape == (n, 3) and model.shs_rest.shape == (n, 15, 3)
    assert torch.allclose(model.quats.norm(dim=-1), torch.ones(n), atol=1e-5)
    assert torch.isfinite(model.scales).all() and torch.isfinite(model.opacities).all()


def test_step_post_backward_moves_the_teacher_by_ema_and_counts_the_step() -> None:
    model = momentum_model()
    assert model.config.momentum_teacher and model.config.momentum == 0.9
    optimizers = model_optimizers(model)
    model.last_step = 100
    camera = close_camera()
    forward_backward(model, optimizers, 0, camera)
    optimizers.optimizer_step_all()
    old_teacher = copy.deepcopy(model.teacher_decoder.state_dict())
    visible_ids = model.training_view.ids.clone()
    model.step_post_backward(0)
    decoder = model.decoder.state_dict()
    for name, value in model.teacher_decoder.state_dict().items():
        assert not torch.equal(decoder[name], old_teacher[name]), name  # the decoder did move
        assert torch.allclose(value, 0.9 * old_teacher[name] + 0.1 * decoder[name], atol=1e-7), name
    assert model.blocks.states[0].steps == 1 and model.training_view is None and model.blocks.merged is None
    visits = torch.zeros(model.blocks.positions.shape[0])
    visits[visible_ids] = 1
    assert torch.equal(model.stats.visits, visits)


def test_training_metrics_log_the_decoders_drift_within_a_visit_and_its_gap_to_the_teacher() -> None:
    model = momentum_model(steps_per_block=2)
    optimizers = model_optimizers(model)
    model.last_step = 100
    camera, batch = close_camera(), {"image": torch.full((SIZE, SIZE, 3), 0.5)}

    def logged(step: int) -> Dict[str, float]:
        model.step_cb(optimizers, step)
        metrics: Dict[str, float] = {}
        losses = model.get_loss_dict(model.get_outputs(camera), batch, metrics)
        optimizers.zero_grad_all()
        sum(losses.values()).backward()
        optimizers.optimizer_step_all()
        model.step_post_backward(step)
        return metrics

    model.train()
    first, second, switched = logged(0), logged(1), logged(2)
    assert first["decoder_drift_in_visit"] == 0.0 and first["decoder_teacher_gap"] == 0.0
    assert second["decoder_drift_in_visit"] > 0.0 and second["decoder_teacher_gap"] > 0.0
    assert switched["active_block"] == 1.0 and switched["decoder_drift_in_visit"] == 0.0  # a new visit
    assert {"block_0_psnr", "block_1_psnr"} <= set(switched)
    model.log_every = 2  # the trainer logs every 2nd step: the diagnostics skip the others
    assert "decoder_drift_in_visit" not in logged(3) and logged(4)["decoder_drift_in_visit"] == 0.0


def test_step_post_backward_merges_at_the_last_step() -> None:
    model = momentum_model()
    optimizers = model_optimizers(model)
    model.run_dir, model.last_step = None, 0
    train_step(model, optimizers, 0, ring_cameras()[0:1])
    assert model.blocks.merged is not None and model.blocks.states == []
    expected = Anchors.from_points(model.seed_positions, model.voxel_size, 8, 4)
    assert model.blocks.merged.num_anchors == expected.num_anchors


# ---------------------------------------------------------------- device memory of a step


def test_saved_tensor_bytes_count_each_saved_storage_once_and_no_parameters() -> None:
    x = torch.randn(1000, requires_grad=True)
    linear = torch.nn.Linear(1000, 10)
    with SavedTensorBytes() as saved:
        y = x.exp()  # saves its result y
        z = (y * y).sum() + torch.sin(y[:500]).sum()  # saves y again and a view of it
        w = linear(y)  # saves y (and the weight, a parameter)
    assert saved.nbytes == 4 * 1000
    (z + w.sum()).backward()
    with SavedTensorBytes() as saved, torch.no_grad():
        x.exp().sum()
    assert saved.nbytes == 0
