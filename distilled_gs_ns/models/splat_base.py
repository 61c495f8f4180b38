"""Explicit Gaussians: the splat model of every Distilled-3DGS method (teachers, student, peers).

On top of the shared shell (`splat_render.py`) it holds splatfacto's Gaussian Parameters, seeds them
from the point cloud (or randomly inside the cameras' view), densifies with gsplat's strategy, and
on resume (`--load-dir`) resizes the Parameters to the checkpoint and re-attaches the optimisers to
them (splatfacto keeps the pre-load ones and crashes at the next densification).

Subclasses change what is rendered through `gaussians_for_render` (e.g. dropout), `after_rasterize`
and `extra_losses`, and the densification through `build_strategy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Type

import torch
from gsplat.strategy import DefaultStrategy
from torch import Tensor
from torch.nn import Parameter

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.splatfacto import RGB2SH, num_sh_bases, random_quat_tensor

from distilled_gs_ns.models.splat_render import SplatRenderModel, SplatRenderModelConfig
from distilled_gs_ns.rendering.gaussians import RenderGaussians

GAUSSIAN_PARAMS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


@dataclass
class SplatBaseModelConfig(SplatRenderModelConfig):
    """Splatfacto's Gaussians and densification, rendered by the package's shell."""

    _target: Type = field(default_factory=lambda: SplatBaseModel)


class SplatBaseModel(SplatRenderModel):
    """Splatfacto's explicit Gaussians on the shared shell (see the module docstring)."""

    config: SplatBaseModelConfig

    def populate_modules(self) -> None:
        self.populate_gaussians()
        self.populate_common()
        self.strategy = self.build_strategy()
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)

    def populate_gaussians(self) -> None:
        """Explicit Gaussians from the seed points (or random seeds inside the scene box)."""
        means, colors = self._initial_points()
        num_points = means.shape[0]
        dim_sh = num_sh_bases(self.config.sh_degree)
        shs = torch.zeros(num_points, dim_sh, 3)
        if colors is not None:
            if self.config.sh_degree > 0:
                shs[:, 0, :] = RGB2SH(colors)
            else:
                shs[:, 0, :] = torch.logit(colors, eps=1e-10)
        else:
            shs[:, 0, :] = torch.rand(num_points, 3)
        self.gauss_params = torch.nn.ParameterDict(
            {
                "means": Parameter(means),
                "scales": Parameter(self._initial_log_scales(means)),
                "quats": Parameter(random_quat_tensor(num_points)),
                "features_dc": Parameter(shs[:, 0, :].contiguous()),
                "features_rest": Parameter(shs[:, 1:, :].contiguous()),
                "opacities": Parameter(torch.logit(0.1 * torch.ones(num_points, 1))),
            }
        )

    def strategy_settings(self) -> Dict[str, object]:
        """gsplat DefaultStrategy arguments from splatfacto's densification settings."""
        return dict(
            prune_opa=self.config.cull_alpha_thresh,
            grow_grad2d=self.config.densify_grad_thresh,
            grow_scale3d=self.config.densify_size_thresh,
            grow_scale2d=self.config.split_screen_size,
            prune_scale3d=self.config.cull_scale_thresh,
            prune_scale2d=self.config.cull_screen_size,
            refine_scale2d_stop_iter=self.config.stop_screen_size_at,
            refine_start_iter=self.config.warmup_length,
            refine_stop_iter=self.config.stop_split_at,
            reset_every=self.config.reset_alpha_every * self.config.refine_every,
            refine_every=self.config.refine_every,
            pause_refine_after_reset=self.num_train_data + self.config.refine_every,
            absgrad=self.config.use_absgrad,
            revised_opacity=False,
            verbose=False,
        )

    def build_strategy(self) -> DefaultStrategy:
        """The densification strategy; subclasses may return a DefaultStrategy subclass."""
        return DefaultStrategy(**self.strategy_settings())

    def _initial_log_scales(self, means: Tensor) -> Tensor:
        """Isotropic log-scales from the mean distance to the 3 nearest seeds (as 3DGS)."""
        distances, _ = self.k_nearest_sklearn(means, 3)
        return torch.log(torch.from_numpy(distances).mean(dim=-1, keepdim=True).clamp(min=1e-7)).repeat(1, 3)

    @torch.no_grad()
    def place_random_seeds(self, box: Tensor) -> None:
        """Re-sample randomly seeded Gaussians inside `box` ([2, 3]); no-op for point-cloud seeds.

        The pipeline calls this once it knows the training cameras (the model alone does not).
        """
        if not self.seeded_randomly:
            return
        means = self._uniform_in(box.float().cpu())
        self.gauss_params["means"].data.copy_(means.to(self.device))
        self.gauss_params["scales"].data.copy_(self._initial_log_scales(means).to(self.device))

    # ------------------------------------------------------------------ loading and resuming

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):  # type: ignore[override]
        """Resize the Gaussian Parameters to the checkpoint's count, then load (keeps `self.step`)."""
        if "means" in state_dict:
            for name in GAUSSIAN_PARAMS:
                state_dict[f"gauss_params.{name}"] = state_dict.pop(name)
        count = state_dict["gauss_params.means"].shape[0]
        for name, param in self.gauss_params.items():
            self.gauss_params[name] = Parameter(param.new_zeros((count,) + tuple(param.shape[1:])))
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def _attach_optimizers(self, optimizers: Optimizers) -> None:
        """Point each Gaussian optimizer at the live Parameter, carrying its Adam state across.

        nerfstudio builds the optimizers before `--load-dir` replaces the Parameters; without this the
        loaded Gaussians would never be optimised and densification would index stale tensors.
        """
        for name in GAUSSIAN_PARAMS:
            if name not in optimizers.optimizers:
                continue
            opt = optimizers.optimizers[name]
            live = self.gauss_params[name]
            group = opt.param_groups[0]
            stale = group["params"][0]
            if stale is live:
                continue
            state = opt.state.pop(stale, {})
            if any(torch.is_tensor(v) and v.dim() > 0 and v.shape != live.shape for v in state.values()):
                state = {}
            group["params"] = [live]
            if state:
                opt.state[live] = {k: v.to(live.device) if torch.is_tensor(v) else v for k, v in state.items()}
            optimizers.parameters[name] = [live]

    # ------------------------------------------------------------------ training hooks

    def step_cb(self, optimizers: Optimizers, step: int) -> None:
        self._attach_optimizers(optimizers)
        super().step_cb(optimizers, step)

    def step_post_backward(self, step: int) -> None:
        super().step_post_backward(step)
        self.strategy.step_post_backward(
            params=self.gauss_params,
            optimizers=self.optimizers,
            state=self.strategy_state,
            step=step,
            info=self.info,
            **self.strategy_step_arguments(),
        )

    def strategy_step_arguments(self) -> Dict[str, object]:
        """What the strategy's step_post_backward takes besides params, state, step and info."""
        return {"packed": False}

    def trained_scene_parameters(self) -> Dict[str, Tensor]:
        """The scene tensors the optimisers move, by name (checked for NaNs after every step)."""
        return dict(self.gauss_params.items())

    # ------------------------------------------------------------------ rendering

    @property
    def crop_positions(self) -> Tensor:
        """[N, 3] positions the viewer's crop box selects from; `crop_ids` index these rows."""
        return self.means

    def active_sh_degree(self) -> int:
        """SH bands in use at this step: splatfacto adds one every sh_degree_interval steps."""
        return min(self.step // self.config.sh_degree_interval, self.config.sh_degree)

    def gaussians_for_render(
        self, crop_ids: Optional[Tensor], camera: Optional[Cameras] = None, camera_to_world: Optional[Tensor] = None
    ) -> RenderGaussians:
        """The Gaussians sent to the rasteriser for `camera` (at render resolution, posed by
        `camera_to_world` [1, 3, 4]); explicit splats ignore the view. Subclasses override to alter
        them (e.g. dropout) or to decode view-dependent ones (anchors)."""

        def pick(t: Tensor) -> Tensor:
            return t if crop_ids is None else t[crop_ids]

        colors = torch.cat([pick(self.features_dc)[:, None, :], pick(self.features_rest)], dim=1)
        if self.config.sh_degree > 0:
            sh_degree: Optional[int] = self.active_sh_degree()
        else:
            colors = torch.sigmoid(colors[:, 0, :])
            sh_degree = None
        return RenderGaussians(
            means=pick(self.means),
            quats=pick(self.quats),
            scales=torch.exp(pick(self.scales)),
            opacities=torch.sigmoid(pick(self.opacities)).squeeze(-1),
            colors=colors,
            sh_degree=sh_degree,
        )

    def after_rasterize(self, info: Dict) -> None:
        """Training only: let the densification strategy keep what it reads after backward."""
        self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, info)
