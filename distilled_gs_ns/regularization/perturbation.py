"""Random perturbation of Gaussians at scheduled steps (the Distilled-3DGS "perturbed" teacher).

At each scheduled step, Gaussian noise is added to the positions, log-scales, rotations and opacity
logits of the selected Gaussians, with a per-channel standard deviation of
`noise_scale * max(1, mean |value|)`, and the Adam moments of the touched entries are zeroed so the
optimiser does not immediately undo the jump. The paper's official schedule is every 1000 steps
between 15k and 25k of 30k; here it is expressed as fractions of the run so short runs still perturb.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Literal, Optional

import torch
from torch import Tensor

PERTURBED_PARAMS = ("means", "scales", "quats", "opacities")


@dataclass
class PerturbationSchedule:
    """Perturbation events as fractions of the run: every `every` from `start` to `stop` (inclusive)."""

    start: float = 0.5
    stop: float = 25 / 30
    every: float = 1 / 30

    def steps(self, max_num_iterations: int) -> List[int]:
        if not 0 <= self.start <= self.stop <= 1 or self.every <= 0:
            raise ValueError(f"invalid perturbation schedule {self}: need 0 <= start <= stop <= 1 and every > 0")
        interval = max(1, round(self.every * max_num_iterations))
        first = max(1, round(self.start * max_num_iterations))
        last = round(self.stop * max_num_iterations)
        return list(range(first, last + 1, interval))


class GradientTracker:
    """Running mean of each Gaussian's screen-space gradient norm, over the views that saw it.

    Kept apart from the densification strategy's statistics, which stop with densification.
    """

    def __init__(self) -> None:
        self.grad_sum: Optional[Tensor] = None
        self.count: Optional[Tensor] = None

    def reset(self, num: int, device: torch.device) -> None:
        self.grad_sum = torch.zeros(num, device=device)
        self.count = torch.zeros(num, device=device)

    def update(self, info: Dict, use_absgrad: bool) -> None:
        means2d = info.get("means2d")
        if means2d is None:
            return
        grad = getattr(means2d, "absgrad", None) if use_absgrad else means2d.grad
        if grad is None:
            return
        grad = grad.detach().clone()
        grad[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grad[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        num = grad.shape[1]
        if self.grad_sum is None or self.grad_sum.shape[0] != num:
            self.reset(num, grad.device)
        visible = info["radii"] > 0  # [C, N]
        self.grad_sum += (grad.norm(dim=-1) * visible).sum(0)
        self.count += visible.sum(0)

    def mean(self) -> Optional[Tensor]:
        if self.grad_sum is None or self.count is None:
            return None
        return self.grad_sum / self.count.clamp(min=1)


@dataclass
class GaussianPerturbation:
    """Selects Gaussians and perturbs them in place, resetting their Adam moments."""

    noise_scale: float = 0.1
    selection: Literal["clone_candidates", "all"] = "clone_candidates"
    grad_threshold: float = 0.0008
    scale_threshold: float = 0.01

    def select(self, params: Dict[str, Tensor], mean_grad: Optional[Tensor]) -> Tensor:
        """Boolean mask of the Gaussians to perturb.

        `clone_candidates` are those 3DGS would clone: high mean screen-space gradient and a small
        3D scale (official code's choice); before any gradient is seen, nothing qualifies.
        """
        num = params["means"].shape[0]
        if self.selection == "all":
            return torch.ones(num, dtype=torch.bool, device=params["means"].device)
        if mean_grad is None or mean_grad.shape[0] != num:
            return torch.zeros(num, dtype=torch.bool, device=params["means"].device)
        small = torch.exp(params["scales"]).amax(dim=-1) <= self.scale_threshold
        return (mean_grad >= self.grad_threshold) & small

    @torch.no_grad()
    def apply(
        self, params: Dict[str, torch.nn.Parameter], optimizers: Dict[str, torch.optim.Optimizer], mask: Tensor
    ) -> int:
        """Perturb the masked Gaussians; returns how many were touched."""
        count = int(mask.sum())
        if count == 0:
            return 0
        for name in PERTURBED_PARAMS:
            param = params[name]
            flat = param.data.reshape(param.shape[0], -1)
            std = self.noise_scale * flat.abs().mean(dim=0).clamp(min=1.0)
            flat[mask] += torch.randn_like(flat[mask]) * std
            optimizer = optimizers.get(name)
            if optimizer is None:
                continue
            state = optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][mask] = 0.0
        return count
