"""Distilled-3DGS building blocks in process on CPU: budget, importance, pseudo-labels, student losses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from nerfstudio.engine.optimizers import Optimizers
from torch.nn import Parameter

from distilled_gs_ns.configs.teachers import splat_optimizers

from distilled_gs_ns.distillation.budget import least_important, sample_by_importance
from distilled_gs_ns.strategies.budget import Cut, ProgressivePruning, SampleThenTrim, pruning_schedule
from distilled_gs_ns.strategies.capped import CappedStrategy
from distilled_gs_ns.strategies.mini_splatting import MiniSplattingStrategy, surface_points
from distilled_gs_ns.distillation.importance import blending_importance
from distilled_gs_ns.distillation.pseudo_labels import (
    cameras_between,
    fusion_weights,
    jittered_cameras,
    render_pseudo_labels,
)
from distilled_gs_ns.pipelines.teachers import Teacher
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.losses.structure import StructureLoss, soft_voxel_histogram
from distilled_gs_ns.models.splat_base import SplatBaseModel, SplatBaseModelConfig
from distilled_gs_ns.models.student import StudentModelConfig
from tests.toy_models import make_model, ring_cameras


def set_gaussians(model: SplatBaseModel, means, log_scales, opacities, rgb) -> None:
    """Replace the model's Gaussians by explicit ones (isotropic, identity rotation, constant colour)."""
    n = means.shape[0]
    # sh_degree 0 models store colour logits (splatfacto); others an SH DC coefficient.
    dc = torch.logit(rgb, eps=1e-5) if model.config.sh_degree == 0 else (rgb - 0.5) / 0.28209479177387814
    values = {
        "means": means,
        "scales": log_scales.expand(n, 3).clone(),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        "features_dc": dc,
        "features_rest": torch.zeros(n, model.gauss_params["features_rest"].shape[1], 3),
        "opacities": torch.logit(opacities)[:, None],
    }
    for name, value in values.items():
        model.gauss_params[name] = Parameter(value.float())


# ---------------------------------------------------------------------------------------------- budget


def strategy_state(count: int, grads: torch.Tensor) -> dict:
    return {"grad2d": grads.clone(), "count": torch.ones(count), "radii": torch.zeros(count), "scene_scale": 1.0}


def gaussian_params(count: int) -> torch.nn.ParameterDict:
    return torch.nn.ParameterDict(
        {
            "means": Parameter(torch.arange(count, dtype=torch.float32)[:, None].repeat(1, 3)),
            "scales": Parameter(torch.full((count, 3), -5.0)),  # small: candidates are duplicated
            "quats": Parameter(torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(count, 1)),
            "opacities": Parameter(torch.zeros(count, 1)),
        }
    )


def test_growth_stops_at_the_cap_keeping_the_highest_gradients() -> None:
    count = 20
    params = gaussian_params(count)
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    grads = torch.linspace(0.01, 0.2, count)  # all above the threshold below; highest at the end
    strategy = CappedStrategy(grow_grad2d=0.0002, refine_scale2d_stop_iter=0, max_count=count + 5)
    n_dupli, n_split = strategy._grow_gs(params, optimizers, strategy_state(count, grads), step=100)
    assert (n_dupli, n_split) == (5, 0)
    assert params["means"].shape[0] == count + 5
    duplicated = params["means"][count:, 0].sort().values
    assert torch.equal(duplicated, torch.arange(count - 5, count, dtype=torch.float32))


def test_without_a_cap_growth_is_gsplats() -> None:
    count = 20
    params = gaussian_params(count)
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = CappedStrategy(grow_grad2d=0.0002, refine_scale2d_stop_iter=0)
    strategy._grow_gs(params, optimizers, strategy_state(count, torch.full((count,), 0.1)), step=100)
    assert params["means"].shape[0] == 2 * count


def test_importance_sampling_is_proportional_and_without_replacement() -> None:
    generator = torch.Generator().manual_seed(0)
    picks = torch.stack([sample_by_importance(torch.tensor([1.0, 3.0]), 1, generator) for _ in range(4000)])
    share = (picks == 1).float().mean().item()
    assert 0.72 < share < 0.78  # 3 / (1 + 3)
    drawn = sample_by_importance(torch.rand(1000) + 0.01, 300, generator)
    assert drawn.unique().numel() == 300


def test_importance_sampling_draws_zero_importance_last() -> None:
    importance = torch.tensor([0.0, 2.0, 0.0, 1.0, 0.5])
    assert set(sample_by_importance(importance, 3).tolist()) == {1, 3, 4}
    assert sample_by_importance(importance, 5).numel() == 5


def test_pruning_schedule_falls_geometrically_to_exactly_the_budget() -> None:
    schedule = pruning_schedule(16000, 2000, rounds=3, last_step=1500)
    assert [step for step, _ in schedule] == [500, 1000, 1500]
    assert [count for _, count in schedule] == [8000, 4000, 2000]  # the same factor (1/2) every round
    assert pruning_schedule(15717, 1886, rounds=10, last_step=1500)[-1] == (1500, 1886)
    assert [count for _, count in pruning_schedule(100, 200, rounds=2, last_step=10)] == [200, 200]  # already within
    with pytest.raises(ValueError, match="rounds"):
        pruning_schedule(100, 10, rounds=5, last_step=3)


def test_budget_schedules_cut_where_their_recipes_say() -> None:
    progressive = ProgressivePruning(rounds=10, until=0.5)
    cuts = progressive.cuts(total_steps=3000, start_count=15452, budget=1854)
    assert cuts == {step: Cut(count, "tail") for step, count in pruning_schedule(15452, 1854, 10, 1500)}
    assert progressive.densify_until(3000) == 0 and progressive.starts_from_whole_teacher
    paper = SampleThenTrim(sample_at=0.5, trim_at=2 / 3, tail_fraction=0.05)
    assert paper.cuts(3000, 999, 1854) == {1500: Cut(1947, "sampling"), 2000: Cut(1854, "tail")}
    assert paper.densify_until(3000) == 1500 and not paper.starts_from_whole_teacher
    assert SampleThenTrim(0.5, 2 / 3, 0.05, grows=False).densify_until(3000) == 0
    assert StudentModelConfig().budget_schedule() == ProgressivePruning(10, 0.5)
    assert StudentModelConfig(prune_rounds=0, densify=False).budget_schedule() == SampleThenTrim(0.5, 2 / 3, 0.05, grows=False)


def test_least_important_marks_the_tail() -> None:
    drop = least_important(torch.tensor([0.3, 0.1, 0.9, 0.2, 0.5]), keep=3)
    assert drop.tolist() == [False, True, False, True, False]


# ---------------------------------------------------------------------------------------------- importance


def test_importance_sums_to_the_rendered_alpha_and_ranks_occlusion() -> None:
    """sum_i T_i alpha_i over a pixel is its alpha, so importances summed = alpha summed over views."""
    model = make_model(num=16)
    cameras = ring_cameras()
    # A large opaque Gaussian at the focus, a small one hidden inside it, one far outside every view.
    set_gaussians(
        model,
        means=torch.tensor([[0.2, -0.1, 0.1], [0.2, -0.1, 0.1], [40.0, 40.0, 40.0]]),
        log_scales=torch.log(torch.tensor([[0.3], [0.05], [0.1]])),
        opacities=torch.tensor([0.99, 0.5, 0.9]),
        rgb=torch.full((3, 3), 0.5),
    )
    importance = blending_importance(model, cameras)
    model.eval()
    alpha_total = sum(
        model.rasterize_view(model.gaussians_for_render(None), cameras[i : i + 1])[1].sum() for i in range(8)
    )
    assert torch.allclose(importance.sum(), alpha_total, rtol=1e-4)
    assert importance[0] > 20 * importance[1] > 0
    assert importance[2] == 0


def test_consensus_importance_ranks_a_floater_in_front_of_one_camera_below_the_surface() -> None:
    """A small Gaussian close to camera 0 fills much of that view only: by blending weight it outranks
    the Gaussian every camera sees; without each Gaussian's largest view it ranks far below it."""
    model = make_model(num=16)
    cameras = ring_cameras()
    target, eye0 = torch.tensor([0.2, -0.1, 0.1]), torch.tensor([3.2, -0.1, 1.1])  # ring_cameras' focus and camera 0
    set_gaussians(
        model,
        means=torch.stack([target, target + 0.9 * (eye0 - target)]),
        log_scales=torch.log(torch.tensor([[0.25], [0.1]])),
        opacities=torch.tensor([0.9, 0.8]),
        rgb=torch.full((2, 3), 0.5),
    )
    plain = blending_importance(model, cameras)
    consensus = blending_importance(model, cameras, consensus=True)
    assert plain[1] > plain[0]
    assert consensus[0] > 10 * consensus[1] > 0
    assert consensus[0] > 0.8 * plain[0]  # the surface keeps most of its score


# ---------------------------------------------------------------------------------------------- pseudo-labels


def teacher_of(model: SplatBaseModel) -> Teacher:
    model.eval()
    return Teacher(config_path=Path("t/config.yml"), method_name="distilled-3dgs-teacher", checkpoint=Path("c"), model=model)


def coloured_model(rgb) -> SplatBaseModel:
    model = make_model(config=SplatBaseModelConfig(sh_degree=0), num=16)
    set_gaussians(
        model,
        means=torch.tensor([[0.2, -0.1, 0.1]]),
        log_scales=torch.log(torch.tensor([[0.3]])),
        opacities=torch.tensor([0.7]),
        rgb=torch.tensor([rgb]),
    )
    return model


def test_fused_label_is_the_mean_of_the_teachers_premultiplied_renders() -> None:
    cameras = ring_cameras()[:2]
    red, blue = teacher_of(coloured_model([1.0, 0.0, 0.0])), teacher_of(coloured_model([0.0, 0.0, 1.0]))
    labels = render_pseudo_labels([red.model, blue.model], cameras, fusion_weights(2, None), dtype="float16")
    render, alpha, _ = red.model.rasterize_view(red.model.gaussians_for_render(None), cameras[0:1])
    label = labels[0].float()
    assert label.shape == (32, 32, 4) and labels[0].dtype == torch.float16
    assert torch.allclose(label[..., 3], alpha[0, ..., 0], atol=2e-3)
    covered = alpha[0, ..., 0] > 0.2
    # Straight colour of a half-red, half-blue mix where the (identical) footprints cover the pixel.
    assert torch.allclose(label[covered][:, :3], torch.tensor([0.5, 0.0, 0.5]), atol=3e-3)
    weighted = render_pseudo_labels([red.model, blue.model], cameras, fusion_weights(2, (3.0, 1.0)), dtype="uint8")
    assert weighted[0].dtype == torch.uint8
    assert torch.allclose(weighted[0][covered][:, :3].float() / 255, torch.tensor([0.75, 0.0, 0.25]), atol=3 / 255)
    assert weighted.nbytes == 2 * 32 * 32 * 4 and labels.nbytes == 2 * weighted.nbytes


def test_fusion_weights_are_checked() -> None:
    assert torch.allclose(fusion_weights(3, None), torch.full((3,), 1 / 3))
    with pytest.raises(UserInputError, match="2 values for 3 teachers"):
        fusion_weights(3, (1.0, 1.0))
    with pytest.raises(UserInputError, match="not all 0"):
        fusion_weights(2, (0.0, 0.0))


def test_pseudo_view_cameras_move_by_the_jitter_only() -> None:
    cameras = ring_cameras()
    same = jittered_cameras(cameras, 8, jitter=0.0)
    assert torch.equal(same.camera_to_worlds, cameras.camera_to_worlds)
    moved = jittered_cameras(cameras, 16, jitter=0.1)
    assert moved.shape[0] == 16
    assert torch.equal(moved.camera_to_worlds[:, :3, :3], cameras.camera_to_worlds[torch.arange(16) % 8, :3, :3])
    offsets = (moved.camera_to_worlds[:, :3, 3] - cameras.camera_to_worlds[torch.arange(16) % 8, :3, 3]).norm(dim=-1)
    spread = 3.0  # ring radius: every camera is that far from the ring's centroid
    assert 0.02 * spread < offsets.mean() < 0.3 * spread


def test_pseudo_views_between_lie_between_neighbouring_training_views() -> None:
    cameras = ring_cameras(count=8)
    between = cameras_between(cameras, 24, neighbours=2)
    centres = cameras.camera_to_worlds[:, :3, 3]
    for k in range(24):
        source = k % 8
        position = between.camera_to_worlds[k, :3, 3]
        # On the segment to one of the two ring neighbours, 25-75% of the way.
        fractions = []
        for other in ((source + 1) % 8, (source - 1) % 8):
            a, b = centres[source], centres[other]
            t = float(torch.dot(position - a, b - a) / (b - a).norm() ** 2)
            if torch.allclose(a + t * (b - a), position, atol=1e-5):
                fractions.append(t)
        assert len(fractions) == 1 and 0.25 <= fractions[0] <= 0.75, (k, fractions)
        rotation = between.camera_to_worlds[k, :3, :3]
        assert torch.allclose(rotation @ rotation.T, torch.eye(3), atol=1e-5)
        # Looking at the ring's target like both neighbours do (slerp between two look-at poses).
        to_target = torch.tensor([0.2, -0.1, 0.1]) - position
        assert float(torch.nn.functional.cosine_similarity(-rotation[:, 2], to_target, dim=0)) > 0.99
    with pytest.raises(UserInputError, match="at least 2"):
        cameras_between(cameras[:1], 4)


def test_depth_label_is_the_teachers_alpha_weighted_expected_depth() -> None:
    cameras = ring_cameras()[:2]
    near, far = coloured_model([1.0, 0.0, 0.0]), coloured_model([0.0, 0.0, 1.0])
    far.gauss_params["means"].data += torch.tensor([[0.0, 0.0, -0.5]])
    labels = render_pseudo_labels([teacher_of(near).model, teacher_of(far).model], cameras, fusion_weights(2, (3.0, 1.0)), with_depth=True)
    assert labels.depths is not None and labels.depths[0].shape == (32, 32, 2) and labels.depths[0].dtype == torch.float16
    packed = labels.depths[0].float()
    expected_alpha, expected_depth = torch.zeros(32, 32, 1), torch.zeros(32, 32, 1)
    for weight, model in ((0.75, near), (0.25, far)):
        render, alpha, _ = model.rasterize_view(model.gaussians_for_render(None), cameras[0:1], render_mode="RGB+ED")
        expected_alpha += weight * alpha[0]
        expected_depth += weight * alpha[0] * render[0, ..., 3:4]
    assert torch.allclose(packed[..., 1:2], expected_alpha, atol=2e-3)
    assert torch.allclose(packed[..., 0:1], expected_depth, rtol=2e-3, atol=2e-3)
    assert labels.nbytes == 2 * 32 * 32 * (4 + 2 * 2)
    assert render_pseudo_labels([near], cameras, fusion_weights(1, None)).depths is None


def test_depth_loss_is_relative_and_only_where_the_teachers_cover() -> None:
    model = student_model(depth_weight=0.5, sh_degree=0, num_downscales=0)
    assert model.config.output_depth_during_training
    model.set_budget(1000)
    model.train()
    model.step_cb(_optimizers_for(model), 0)
    outputs = model.get_outputs(ring_cameras()[0:1])
    depth = outputs["depth"].detach()
    alpha = torch.zeros(32, 32, 1)
    alpha[:16] = 1.0  # the teachers cover the top half only
    same = torch.cat([alpha * depth, alpha], dim=-1)
    assert model.extra_losses(outputs, {"pseudo_depth": same})["depth_loss"].item() < 1e-6
    farther = torch.cat([alpha * depth * 1.25, alpha], dim=-1)  # 20% of the label away everywhere covered
    assert model.extra_losses(outputs, {"pseudo_depth": farther})["depth_loss"].item() == pytest.approx(0.5 * 0.2, rel=1e-4)
    bottom_only = torch.cat([(1 - alpha) * depth * 3, 1 - alpha], dim=-1)
    assert model.extra_losses(outputs, {"pseudo_depth": bottom_only})["depth_loss"].item() == pytest.approx(0.5 * 2 / 3, rel=1e-4)


# ---------------------------------------------------------------------------------------------- student


@pytest.mark.parametrize("resolution", [24, 8])  # 400 students: sparse evaluation at 24^3, dense at 8^3
def test_structure_loss_equals_the_cosine_of_the_normalised_histograms(resolution: int) -> None:
    torch.manual_seed(0)
    teacher = torch.randn(5000, 3)
    student = (torch.randn(400, 3) * 1.2).requires_grad_(True)
    loss = StructureLoss(teacher, resolution=resolution)
    dense_student = soft_voxel_histogram(student, loss.grid)
    dense = 1 - torch.nn.functional.cosine_similarity(dense_student, loss.teacher_histogram, dim=0)
    sparse = loss(student)
    assert torch.allclose(sparse, dense, atol=1e-6)
    (grad_sparse,) = torch.autograd.grad(sparse, student)
    (grad_dense,) = torch.autograd.grad(dense, student)
    assert torch.allclose(grad_sparse, grad_dense, atol=1e-7)


def student_model(**fields) -> SplatBaseModel:
    return make_model(config=StudentModelConfig(**fields), num=200)


def test_budget_from_the_reference_count_or_absolute() -> None:
    model = student_model(target_fraction=0.1, growth_cap=2.0)
    assert model.set_budget(1234) == 123 and model.strategy.max_count == 246
    assert student_model(max_gaussians=50).set_budget(1234) == 50
    with pytest.raises(UserInputError, match="max-gaussians"):
        student_model().set_budget(None)


def test_reduce_to_keeps_the_important_gaussians_and_consistent_optimizer_state() -> None:
    model = student_model()
    model.set_budget(4)
    n = 200
    visible = torch.tensor([[0.2, -0.1, 0.1]]) + 0.05 * torch.randn(6, 3)
    hidden = torch.full((n - 6, 3), 50.0)  # far outside every camera: zero importance
    set_gaussians(model, torch.cat([visible, hidden]), torch.log(torch.full((n, 1), 0.05)), torch.full((n,), 0.6), torch.rand(n, 3))
    model.optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in model.gauss_params.items()}
    for p in model.gauss_params.values():
        p.grad = torch.ones_like(p)
    for opt in model.optimizers.values():
        opt.step()
    model.train_cameras = ring_cameras()
    model.reduce_to(6, by="sampling", step=10)
    assert model.num_points == 6
    assert bool((model.means.abs() < 5).all())  # only the visible ones survive a proportional draw
    model.reduce_to(4, by="tail", step=20)
    assert model.num_points == 4
    for name, param in model.gauss_params.items():
        assert model.optimizers[name].state[param]["exp_avg"].shape == param.shape


def test_distillation_and_structure_terms() -> None:
    model = student_model(
        kd_weight=2.0, structure_weight=0.5, sh_degree=0, background_color="white", num_downscales=0
    )
    model.set_budget(1000)
    model.set_structure_reference(model.means.detach() + 0.3)
    model.train()
    model.step_cb(_optimizers_for(model), 0)
    camera = ring_cameras()[0:1]
    outputs = model.get_outputs(camera)
    label = torch.cat([outputs["rgb"].detach(), torch.ones(32, 32, 1)], dim=-1)
    losses = model.extra_losses(outputs, {"pseudo_label": label})
    assert losses["distill_loss"].item() < 1e-4  # the label is the student's own render
    other = torch.zeros(32, 32, 4)  # fully transparent: composites to the white background
    far = model.extra_losses(outputs, {"pseudo_label": other})["distill_loss"]
    expected = 2.0 * (0.8 * (outputs["rgb"] - 1).abs().mean() + 0.2 * (1 - model.ssim(
        outputs["rgb"].permute(2, 0, 1)[None], torch.ones(1, 3, 32, 32))))
    assert torch.allclose(far, expected, atol=1e-5)
    assert 0 < losses["structure_loss"].item() < 0.5
    assert "distill_loss" not in model.extra_losses(outputs, {})


def _optimizers_for(model: SplatBaseModel) -> Optimizers:
    groups = model.get_param_groups()
    return Optimizers({k: v for k, v in splat_optimizers(100).items() if k in groups}, groups)


def flat_layer(model: SplatBaseModel, rgb=(0.2, 0.6, 0.4)) -> None:
    """A 24 x 24 grid of small, opaque, flat Gaussians in the plane z = 0.1 around the ring cameras'
    target (each Gaussian has one depth, its centre's: a surface is many of them)."""
    axis = torch.linspace(-1.2, 1.2, 24)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    means = torch.cat([grid + torch.tensor([0.2, -0.1]), torch.full((grid.shape[0], 1), 0.1)], dim=-1)
    n = means.shape[0]
    set_gaussians(model, means, torch.log(torch.full((n, 1), 0.04)), torch.full((n,), 0.99), torch.tensor([rgb]).repeat(n, 1))
    model.gauss_params["scales"].data[:, 2] = math.log(1e-4)


def test_surface_points_lie_on_the_rendered_surface_with_its_colour() -> None:
    model = make_model(num=16)
    flat_layer(model)
    model.eval()
    cameras = ring_cameras(radius=1.5)  # 34 degrees down: grazing views blur a splat's depth more
    points, colours = surface_points(model, cameras, 200, torch.Generator().manual_seed(0))
    assert points.shape == (200, 3) and colours.shape == (200, 3)
    # On the layer's plane, to about a Gaussian's size: each Gaussian has its centre's depth, and the
    # nearer of two overlapping ones weighs more, which pulls points slightly towards the cameras.
    assert float((points[:, 2] - 0.1).abs().max()) < 0.08 and float((points[:, 2] - 0.1).abs().mean()) < 0.03
    assert float((points[:, :2] - torch.tensor([0.2, -0.1])).abs().max()) < 1.4  # within the layer
    assert torch.allclose(colours.mean(dim=0), torch.tensor([0.2, 0.6, 0.4]), atol=0.02)


def test_depth_reinitialisation_keeps_the_count_and_a_consistent_optimizer() -> None:
    model = student_model(initialisation="seeds", prune_rounds=0, densification="mini-splatting", max_gaussians=50)
    model.set_budget(None)
    assert isinstance(model.strategy, MiniSplattingStrategy) and model.strategy.max_count == 100
    flat_layer(model)
    extra = 30  # hidden far away from every camera: reinitialisation puts them on the disk too
    for name, value in model.gauss_params.items():
        filler = value.data[:1].repeat(extra, *([1] * (value.dim() - 1)))
        if name == "means":
            filler = torch.full((extra, 3), 40.0)
        model.gauss_params[name] = Parameter(torch.cat([value.data, filler]))
    model.optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in model.gauss_params.items()}
    for p in model.gauss_params.values():
        p.grad = torch.ones_like(p)
    for opt in model.optimizers.values():
        opt.step()
    model.train_cameras = ring_cameras(radius=1.5)
    before = model.num_points
    model.reinitialise_from_depth(step=100)
    assert model.num_points == before
    assert float((model.means[:, 2] - 0.1).abs().max()) < 0.08  # the hidden 30 too
    for name, param in model.gauss_params.items():
        state = model.optimizers[name].state[param]
        assert state["exp_avg"].shape == param.shape and float(state["exp_avg"].abs().sum()) == 0.0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"target_fraction": 0.0}, "target_fraction"),
        ({"max_gaussians": 0}, "max_gaussians"),
        ({"growth_cap": 0.5}, "growth_cap"),
        ({"sample_at": 0.7, "prune_tail_at": 0.6}, "prune_tail_at"),
        ({"kd_weight": float("nan")}, "kd_weight"),
        ({"structure_resolution": 1}, "structure_resolution"),
        ({"prune_rounds": -1}, "prune_rounds"),
        ({"prune_rounds": 101}, "prune_rounds"),
        ({"structure_resolution": 600}, "structure_resolution"),
        ({"depth_weight": -1.0}, "depth_weight"),
        ({"densification": "mcmc"}, "densification"),  # progressive pruning never grows
        ({"densification": "mcmc", "prune_rounds": 0, "densify": False}, "densification"),
    ],
)
def test_bad_student_settings_are_refused(fields, message) -> None:
    with pytest.raises(UserInputError, match=message):
        StudentModelConfig(**fields)


def test_only_the_plain_baseline_runs_without_teachers() -> None:
    assert StudentModelConfig().needs_teachers
    assert StudentModelConfig(initialisation="seeds", kd_weight=0, structure_weight=0, max_gaussians=10).needs_teachers is False
    assert StudentModelConfig(kd_weight=0, structure_weight=0, max_gaussians=10).needs_teachers  # starts from the teacher
    assert StudentModelConfig(kd_weight=0, structure_weight=0).needs_teachers
