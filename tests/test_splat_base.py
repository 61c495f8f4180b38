"""The shared splat model base, in process on CPU (no CLI)."""

from __future__ import annotations

import io
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from nerfstudio.data.scene_box import OrientedBox, SceneBox
from nerfstudio.engine.optimizers import Optimizers

import distilled_gs_ns  # noqa: F401  (registers the checkpoint allow-list)
from distilled_gs_ns.configs.teachers import splat_optimizers
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.metrics.lpips import LazyLPIPS
from distilled_gs_ns.models.dropout_teacher import DropoutTeacherModelConfig
from distilled_gs_ns.models.initialisation import camera_focus_box, seed_box
from distilled_gs_ns.models.splat_base import GAUSSIAN_PARAMS, SplatBaseModelConfig
from distilled_gs_ns.rendering.cameras import world_to_camera

from tests.toy_models import SIZE, look_at, make_model, ring_cameras, train_step


def test_construction_downloads_nothing(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("network access during model construction")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    model = make_model()
    assert isinstance(model.lpips, LazyLPIPS)
    assert not any(name.startswith("lpips") for name in model.state_dict())
    assert model.raster_backend == "numba"  # auto on CPU: the compiled compositor


def test_world_to_camera_is_the_inverse_pose_in_gsplat_axes() -> None:
    c2w = ring_cameras().camera_to_worlds
    view = world_to_camera(c2w)
    pose = torch.eye(4).repeat(len(c2w), 1, 1)
    pose[:, :3, :4] = c2w
    pose[:, :3, 1:3] *= -1  # OpenGL (y up, -z forward) -> OpenCV (y down, z forward)
    assert torch.allclose(view @ pose, torch.eye(4).expand_as(pose), atol=1e-5)


def test_random_seeds_fill_the_region_all_cameras_look_at() -> None:
    cams = ring_cameras(target=(0.2, -0.1, 0.1))
    box = camera_focus_box(cams.camera_to_worlds, torch.full((8,), 0.5))
    assert box is not None
    assert torch.allclose(box.mean(0), torch.tensor([0.2, -0.1, 0.1]), atol=1e-4)
    centres = cams.camera_to_worlds[:, :3, 3]
    assert not ((centres >= box[0]) & (centres <= box[1])).all(-1).any()
    model = make_model()
    clipped = seed_box(model.scene_box.aabb, cams.camera_to_worlds, torch.full((8,), 0.5))
    means = model.means.detach()
    assert ((means >= clipped[0] - 1e-6) & (means <= clipped[1] + 1e-6)).all()


def test_parallel_cameras_have_no_focus() -> None:
    poses = torch.stack([look_at(torch.tensor([x, -3.0, 0.0]), torch.tensor([x, 0.0, 0.0])) for x in (0.0, 0.5, 1.0)])
    assert camera_focus_box(poses, torch.full((3,), 0.5)) is None
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    assert torch.equal(seed_box(aabb, poses, torch.full((3,), 0.5)), aabb)


def test_viewer_render_path_outputs() -> None:
    model = make_model()
    model.eval()
    camera = ring_cameras()[0:1]
    out = model.get_outputs_for_camera(camera)
    assert out["rgb"].shape == (SIZE, SIZE, 3)
    assert out["depth"].shape == (SIZE, SIZE, 1)
    assert out["accumulation"].shape == (SIZE, SIZE, 1)
    assert out["background"].shape == (SIZE, SIZE, 3)
    assert float(out["accumulation"].max()) > 0.05
    assert all(torch.isfinite(v).all() for v in out.values())
    far_away = OrientedBox(R=torch.eye(3), T=torch.tensor([50.0, 50.0, 50.0]), S=torch.ones(3))
    empty = model.get_outputs_for_camera(camera, obb_box=far_away)
    assert empty["rgb"].shape == (SIZE, SIZE, 3) and float(empty["accumulation"].max()) == 0.0


def test_gsplat_backend_on_cpu_is_a_clear_error() -> None:
    model = make_model(SplatBaseModelConfig(rasterizer="gsplat"))
    with pytest.raises(ValueError, match="needs CUDA"):
        model.get_outputs(ring_cameras()[0:1])


def test_resume_reattaches_optimizers_and_survives_densification() -> None:
    config = dict(warmup_length=0, refine_every=2, reset_alpha_every=1000, use_absgrad=True)
    source = make_model(SplatBaseModelConfig(**config), num=300)
    source_opt = Optimizers(splat_optimizers(), source.get_param_groups())
    for step in range(3):
        train_step(source, source_opt, step)
    saved_model = {k: v.clone() for k, v in source.state_dict().items()}
    saved_opt = {k: v.state_dict() for k, v in source_opt.optimizers.items()}
    saved_count = source.num_points

    # What nerfstudio's trainer does for --load-dir: optimizers first, then the checkpoint.
    resumed = make_model(SplatBaseModelConfig(**config), num=500)
    optimizers = Optimizers(splat_optimizers(), resumed.get_param_groups())
    resumed.update_to_step(3)
    resumed.load_state_dict(saved_model)
    optimizers.load_optimizers(saved_opt)
    assert resumed.num_points == saved_count and resumed.step == 3

    resumed.step_cb(optimizers, 3)
    for name in GAUSSIAN_PARAMS:
        opt = optimizers.optimizers[name]
        live = resumed.gauss_params[name]
        assert opt.param_groups[0]["params"][0] is live
        assert torch.equal(opt.state[live]["exp_avg"], saved_opt[name]["state"][0]["exp_avg"])
    means_before = resumed.means.detach().clone()
    counts = set()
    for step in range(3, 16):  # refinement pauses for num_train_data + refine_every steps after a reset
        train_step(resumed, optimizers, step)
        counts.add(resumed.num_points)
    assert counts != {saved_count}, "densification/pruning never changed the count"
    assert resumed.num_points != means_before.shape[0] or not torch.equal(resumed.means.detach(), means_before)


def test_non_finite_parameters_stop_training() -> None:
    model = make_model()
    model.gauss_params["means"].data[3] = float("nan")
    with pytest.raises(UserInputError, match="diverged at step 7"):
        model.step_post_backward(7)


def test_non_finite_loss_stops_training() -> None:
    model = make_model()
    model.train()
    camera = ring_cameras()[0:1]
    outputs = model.get_outputs(camera)
    outputs["rgb"] = outputs["rgb"] * float("nan")
    batch = {"image": torch.zeros(SIZE, SIZE, 3)}
    with pytest.raises(UserInputError, match="loss is not finite"):
        model.get_loss_dict(outputs, batch)


def test_non_finite_config_is_refused() -> None:
    with pytest.raises(UserInputError, match="densify_grad_thresh"):
        SplatBaseModelConfig(densify_grad_thresh=float("inf"))


def test_checkpoints_with_numpy_scalars_load_with_weights_only() -> None:
    buffer = io.BytesIO()
    torch.save({"lr": np.float64(1.6e-4), "step": np.int64(3), "t": torch.ones(2)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["lr"] == pytest.approx(1.6e-4) and int(loaded["step"]) == 3


def test_lpips_unavailable_offline_warns_once(monkeypatch) -> None:
    import torchmetrics.image.lpip as lpip

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(lpip, "LearnedPerceptualImagePatchSimilarity", offline)
    metric = LazyLPIPS()
    image = torch.rand(1, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [metric(image, image) for _ in range(3)] == [None, None, None]
    assert len([w for w in caught if "LPIPS is unavailable" in str(w.message)]) == 1
    assert "offline" in metric.unavailable_reason


def test_dropout_applies_in_training_only_and_after_densification_by_default() -> None:
    model = make_model(DropoutTeacherModelConfig(dropout_rate=0.5))
    camera = ring_cameras()[0:1]
    model.eval()
    first = model.get_outputs_for_camera(camera)["rgb"]
    second = model.get_outputs_for_camera(camera)["rgb"]
    assert torch.equal(first, second)
    plain = torch.sigmoid(model.opacities).squeeze(-1)
    model.train()
    model.step = model.config.stop_split_at - 1  # still densifying: the gradients stay undisturbed
    assert torch.equal(model.gaussians_for_render(None).opacities, plain)
    model.step = model.config.stop_split_at
    g1 = model.gaussians_for_render(None).opacities
    g2 = model.gaussians_for_render(None).opacities
    assert not torch.equal(g1, g2)
    assert 0.4 < float((g1 == 0).float().mean()) < 0.6
    model.eval()
    assert torch.equal(model.gaussians_for_render(None).opacities, plain)


def test_dropout_while_densifying_drops_from_the_first_step() -> None:
    model = make_model(DropoutTeacherModelConfig(dropout_rate=0.5, dropout_while_densifying=True))
    model.train()
    model.step = 0
    assert 0.4 < float((model.gaussians_for_render(None).opacities == 0).float().mean()) < 0.6


def test_an_empty_point_cloud_falls_back_to_random_seeds_that_can_be_placed() -> None:
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    empty = (torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.uint8))
    model = SplatBaseModelConfig(num_random=300).setup(
        scene_box=scene_box, num_train_data=8, metadata={}, device="cpu", seed_points=empty
    )
    assert model.seeded_randomly and model.num_points == 300
    box = torch.tensor([[0.2, 0.2, 0.2], [0.3, 0.3, 0.3]])
    model.place_random_seeds(box)
    assert ((model.means >= box[0] - 1e-6) & (model.means <= box[1] + 1e-6)).all()
