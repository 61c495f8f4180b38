"""The shell every splat model of this package shares: device, rasteriser, render, losses, metrics.

It is a `SplatfactoModel`, so nerfstudio's viewer, `ns-export gaussian-splat` and `ns-eval` accept
it, and it fixes what stops splatfacto 1.1.5 from serving as a base:
- device: nothing is pinned to CUDA; the model runs wherever the trainer put it
  (`--machine.device-type cpu|cuda`);
- rasteriser: gsplat's CUDA kernels on CUDA, the package's tile rasterisers elsewhere, with the same
  `info` so gsplat's densification strategies work on both;
- initialisation without a point cloud samples inside the scene box instead of a fixed cube;
- LPIPS is built lazily, so nothing is downloaded at construction;
- loading a checkpoint keeps the real step (splatfacto sets 30000);
- a non-finite loss or parameter stops training with a clear message before it can overwrite good
  checkpoints.

What the scene is made of is the subclass's: explicit Gaussians (`splat_base.SplatBaseModel`, every
Distilled-3DGS method) or anchors decoded per view (`momentum_gs.MomentumGSModel`). A subclass
builds it in `populate_modules`, says which Gaussians a view renders (`gaussians_for_render`),
what its optimisers move (`trained_scene_parameters`), where the viewer's crop box selects
(`crop_positions`) and where random seeds go (`place_random_seeds`), and may record what training
needs from the rasteriser (`after_rasterize`) and add loss terms (`extra_losses`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
from pytorch_msssim import SSIM
from torch import Tensor

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.model_components.lib_bilagrid import BilateralGrid, color_correct
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig
from nerfstudio.utils.colors import get_color

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.metrics.lpips import LazyLPIPS
from distilled_gs_ns.rendering import RasterBackend, ResolvedBackend, rasterize, resolve_backend
from distilled_gs_ns.rendering.cameras import world_to_camera
from distilled_gs_ns.rendering.gaussians import RenderGaussians


def planned_steps(trainer) -> int:
    """The step a run ends at: schedules given as fractions of a run are fractions of this.

    nerfstudio's `--max-num-iterations` counts the steps of this invocation, so a run resumed from
    step S ends at S + max_num_iterations; a fresh run at max_num_iterations.
    """
    return int(getattr(trainer, "_start_step", 0)) + int(trainer.config.max_num_iterations)


@dataclass
class SplatRenderModelConfig(SplatfactoModelConfig):
    """Splatfacto's settings plus the device-independent rendering of this package."""

    _target: Type = field(default_factory=lambda: SplatRenderModel)
    rasterizer: RasterBackend = "auto"
    """'auto': gsplat's CUDA kernels on CUDA, the compiled tile rasteriser ('numba') on CPU, the plain
    PyTorch one ('torch') on other devices."""
    cpu_tile_size: int = 8
    """Tile size of the 'numba' and 'torch' rasterisers (8 is fastest on CPUs for typical splats;
    'numba' takes up to 16)."""
    random_scale: float = 1.0
    """Without a point cloud, Gaussians start uniformly inside the region the training cameras look at
    (see models/initialisation.py), scaled by this factor about its centre. (splatfacto instead uses a
    fixed cube of this side, whatever the scene's size.)"""

    def __post_init__(self) -> None:
        for name in ("densify_grad_thresh", "cull_alpha_thresh", "ssim_lambda", "random_scale", "densify_size_thresh"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise UserInputError(f"pipeline.model.{name} must be a finite number, got {value}")
        if self.num_random <= 0:
            raise UserInputError(f"pipeline.model.num_random must be positive, got {self.num_random}")


class SplatRenderModel(SplatfactoModel):
    """Rendering, losses, metrics and loading shared by every splat model (see the module docstring)."""

    config: SplatRenderModelConfig

    def populate_modules(self) -> None:
        raise NotImplementedError("a splat model builds its scene representation and calls populate_common()")

    def populate_common(self) -> None:
        """What every splat model needs besides its scene representation: metrics, background, camera
        and colour correction."""
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")

        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = LazyLPIPS()
        self.step = 0
        self.crop_box = None
        if self.config.background_color == "random":
            # Viser's background colour: what "random" shows outside training.
            self.background_color = torch.tensor([0.1490, 0.1647, 0.2157])
        else:
            self.background_color = get_color(self.config.background_color)
        if self.config.use_bilateral_grid:
            self.bil_grids = BilateralGrid(
                num=self.num_train_data,
                grid_X=self.config.grid_shape[0],
                grid_Y=self.config.grid_shape[1],
                grid_W=self.config.grid_shape[2],
            )
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.info: Dict = {}

    def _initial_points(self) -> Tuple[Tensor, Optional[Tensor]]:
        """Seed positions [N, 3] and colours [N, 3] in [0, 1] (None when there are no colours).

        Sets `seeded_randomly`, which tells `place_random_seeds` whether there is anything to move.
        """
        self.seeded_randomly = not (
            self.seed_points is not None and not self.config.random_init and self.seed_points[0].shape[0] > 0
        )
        if not self.seeded_randomly:
            assert self.seed_points is not None
            means = self.seed_points[0].detach().float().cpu().clone()
            colors = self.seed_points[1].detach().float().cpu() / 255.0 if self.seed_points[1].shape[0] > 0 else None
            return means, colors
        return self._uniform_in(self.scene_box.aabb.float().cpu()), None

    def _uniform_in(self, box: Tensor) -> Tensor:
        centre = box.mean(dim=0)
        half = 0.5 * (box[1] - box[0]) * self.config.random_scale
        return centre + (torch.rand(self.config.num_random, 3) * 2 - 1) * half

    def place_random_seeds(self, box: Tensor) -> None:
        """Move randomly placed seeds inside `box` ([2, 3]); no-op for point-cloud seeds.

        The pipeline calls this once it knows the training cameras (the model alone does not).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ loading and resuming

    def update_to_step(self, step: int) -> None:
        """Called by nerfstudio before a checkpoint's state dict is loaded: keep the real step."""
        self.step = step

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        """torch's load: splatfacto's would set the step to 30000 and resize Gaussians a model may not have."""
        return torch.nn.Module.load_state_dict(self, state_dict, strict=strict, **kwargs)

    # ------------------------------------------------------------------ training hooks

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        return [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                self.step_cb,
                args=[training_callback_attributes.optimizers],
            ),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.step_post_backward),
        ]

    def step_cb(self, optimizers: Optimizers, step: int) -> None:
        self.step = step
        self.optimizers = optimizers.optimizers

    def step_post_backward(self, step: int) -> None:
        self.check_finite_parameters(step)

    def prepare_checkpoint(self) -> None:
        """Run on every process right before rank 0 saves a checkpoint: the place for collective
        work a save needs (momentum-gs gathers the blocks other processes trained)."""

    def check_finite_parameters(self, step: int) -> None:
        """Stop on non-finite Gaussians after an optimiser step.

        The rasteriser culls NaN Gaussians silently, so the loss can stay finite while a run rots;
        stopping here, before the trainer saves, keeps the last good checkpoint as the latest one.
        """
        params = self.trained_scene_parameters()
        finite = torch.stack([torch.isfinite(p).all() for p in params.values()])
        if not bool(finite.all()):  # one host sync per step; names only on failure
            bad = [name for name, ok in zip(params.keys(), finite.tolist()) if not ok]
            raise UserInputError(
                f"training diverged at step {step}: non-finite values in {', '.join(bad)}. No checkpoint "
                "was written for this step, so the last saved one is intact. Check the optimiser settings "
                "(learning rates, Adam eps > 0) and resume from that checkpoint with --load-dir."
            )

    def trained_scene_parameters(self) -> Dict[str, Tensor]:
        """The scene tensors the optimisers move, by name (checked for NaNs after every step)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ rendering

    @property
    def raster_backend(self) -> ResolvedBackend:
        return resolve_backend(self.config.rasterizer, self.device)

    @property
    def crop_positions(self) -> Tensor:
        """[N, 3] positions the viewer's crop box selects from; `crop_ids` index these rows."""
        raise NotImplementedError

    def gaussians_for_render(
        self, crop_ids: Optional[Tensor], camera: Optional[Cameras] = None, camera_to_world: Optional[Tensor] = None
    ) -> RenderGaussians:
        """The Gaussians sent to the rasteriser for `camera` (at render resolution, posed by
        `camera_to_world` [1, 3, 4]), restricted to the rows `crop_ids` selects."""
        raise NotImplementedError

    def rasterize_view(
        self,
        gaussians: RenderGaussians,
        camera: Cameras,
        camera_to_world: Optional[Tensor] = None,
        render_mode: Literal["RGB", "RGB+ED"] = "RGB",
    ) -> Tuple[Tensor, Tensor, Dict]:
        """Rasterise `gaussians` for one camera at its current resolution with this model's backend.

        Returns gsplat's (render [1, H, W, C], alpha [1, H, W, 1], info); colours are premultiplied
        (no background). `camera_to_world` overrides the camera's pose (e.g. after pose optimisation).
        """
        if self.config.rasterize_mode not in ("antialiased", "classic"):
            raise ValueError(f"Unknown rasterize_mode: {self.config.rasterize_mode}")
        pose = camera.camera_to_worlds if camera_to_world is None else camera_to_world
        backend = self.raster_backend
        extra = {"tile_size": self.config.cpu_tile_size} if backend in ("numba", "torch") else {}
        return rasterize(
            backend,
            means=gaussians.means,
            quats=gaussians.quats,
            scales=gaussians.scales,
            opacities=gaussians.opacities,
            colors=gaussians.colors,
            viewmats=world_to_camera(pose.to(self.device)),
            Ks=camera.get_intrinsics_matrices().to(self.device),
            width=int(camera.width.item()),
            height=int(camera.height.item()),
            near_plane=0.01,
            far_plane=1e10,
            render_mode=render_mode,
            sh_degree=gaussians.sh_degree,
            absgrad=self.config.use_absgrad,
            rasterize_mode=self.config.rasterize_mode,
            **extra,
        )

    def render_rgb(self, gaussians: RenderGaussians, camera: Cameras) -> Tensor:
        """[H, W, 3] image of `gaussians` from `camera`, over the configured background, clamped to
        [0, 1]: how an exported or baked splat looks next to the model's own `get_outputs`."""
        render, alpha, _ = self.rasterize_view(gaussians, camera)
        background = self.background_color.to(self.device)
        return torch.clamp(render[0, ..., :3] + (1 - alpha[0]) * background, 0.0, 1.0)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        if not isinstance(camera, Cameras):
            raise TypeError(f"{type(self).__name__}.get_outputs expects Cameras, got {type(camera).__name__}")
        if self.training:
            if camera.shape[0] != 1:
                raise ValueError("training renders one camera at a time")
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds

        crop_ids = None
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.crop_positions).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)

        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        render_mode = "RGB+ED" if self.config.output_depth_during_training or not self.training else "RGB"
        gaussians = self.gaussians_for_render(crop_ids, camera, camera_to_world)
        render, alpha, self.info = self.rasterize_view(gaussians, camera, camera_to_world, render_mode)
        camera.rescale_output_resolution(scale)
        H, W = render.shape[1:3]
        self.last_size = (H, W)
        if self.training and crop_ids is None:
            self.after_rasterize(self.info)

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        if self.config.use_bilateral_grid and self.training:
            if camera.metadata is not None and "cam_idx" in camera.metadata:
                rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], H, W)
        depth = None
        if render_mode == "RGB+ED":
            depth = render[..., 3:4]
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(H, W, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}

    def after_rasterize(self, info: Dict) -> None:
        """Training only: keep what the model reads from the rasteriser's `info` after backward."""

    # ------------------------------------------------------------------ losses and metrics

    def extra_losses(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Method-specific loss terms added to splatfacto's (none in the base)."""
        return {}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        loss_dict.update(self.extra_losses(outputs, batch))
        if self.training:
            total = sum(loss_dict.values())
            if not bool(torch.isfinite(total)):
                bad = ", ".join(k for k, v in loss_dict.items() if not bool(torch.isfinite(v)))
                raise UserInputError(
                    f"training diverged at step {self.step}: the loss is not finite ({bad}). No checkpoint was "
                    "written for this step, so the last saved one is intact. Lower the learning rates or check the "
                    "loss weights and data, then resume from that checkpoint with --load-dir."
                )
        return loss_dict

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """splatfacto's metrics, with LPIPS left out (not NaN) when its weights are unavailable."""
        gt_rgb = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        predicted_rgb = outputs["rgb"]
        combined_rgb = torch.cat([gt_rgb, predicted_rgb], dim=1)
        gt = torch.moveaxis(gt_rgb, -1, 0)[None, ...]
        candidates = {"": predicted_rgb}
        if self.config.color_corrected_metrics:
            candidates["cc_"] = color_correct(predicted_rgb, gt_rgb)
        metrics: Dict[str, float] = {}
        for prefix, rgb in candidates.items():
            pred = torch.moveaxis(rgb, -1, 0)[None, ...]
            metrics[f"{prefix}psnr"] = float(self.psnr(gt, pred).item())
            metrics[f"{prefix}ssim"] = float(self.ssim(gt, pred))
            lpips = self.lpips(gt, pred)
            if lpips is not None:
                metrics[f"{prefix}lpips"] = lpips
        metrics["gaussian_count"] = float(self.num_points)
        return metrics, {"img": combined_rgb}

    @staticmethod
    def k_nearest_sklearn(x: Tensor, k: int) -> Tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        from sklearn.neighbors import NearestNeighbors

        points = x.detach().cpu().numpy()
        k = min(k, max(1, points.shape[0] - 1))
        distances, indices = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
        return distances[:, 1:].astype(np.float32), indices[:, 1:].astype(np.int64)
