"""Adam that averages its gradients over all ranks before stepping.

The shared anchor decoder of Momentum-GS is trained by every rank on its own blocks; averaging its
gradients keeps one decoder (identical on all ranks, like DDP would). DDP itself does not fit:
nerfstudio wraps the whole model, whose anchor Parameters are per rank and replaced as blocks are
swapped. Averaging inside `step` puts the exchange exactly between backward and update, where
nerfstudio's trainer offers no hook; every rank steps every optimiser in the same order, so the
collectives line up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

import torch
import torch.distributed as dist
from nerfstudio.engine.optimizers import AdamOptimizerConfig

from distilled_gs_ns.distributed.process_group import collective_device, is_distributed, world_size


class AveragedAdam(torch.optim.Adam):
    """torch.optim.Adam after an all-reduce mean of the gradients (one flat buffer per step)."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if is_distributed():
            params = [p for group in self.param_groups for p in group["params"]]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads]).to(collective_device())
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= world_size()
            offset = 0
            for p in params:
                count = p.numel()
                p.grad = flat[offset : offset + count].view_as(p).to(p.device)
                offset += count
        return super().step(closure)


@dataclass
class AveragedAdamOptimizerConfig(AdamOptimizerConfig):
    """Adam whose gradients are averaged across processes (plain Adam in a single process)."""

    _target: Type = field(default_factory=lambda: AveragedAdam)
