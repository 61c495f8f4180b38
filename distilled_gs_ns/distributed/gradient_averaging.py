"""Adam that averages its gradients over all ranks before stepping.

The shared anchor decoder of Momentum-GS is trained by every rank on its own blocks; averaging its
gradients keeps one decoder (identical on all ranks, like DDP would). DDP itself does not fit:
nerfstudio wraps the whole model, whose anchor Parameters are per rank and replaced as blocks are
swapped. Averaging inside `step` puts the exchange exactly between backward and update, where
nerfstudio's trainer offers no hook; every rank steps every optimiser in the same order, so the
collectives line up.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Type

import torch
import torch.distributed as dist
from nerfstudio.engine.optimizers import AdamOptimizerConfig

from distilled_gs_ns.distributed.process_group import collective_device, is_distributed, world_size


class AveragedAdam(torch.optim.Adam):
    """torch.optim.Adam after an all-reduce mean of the gradients.

    The optimisers of one process (Momentum-GS has one per decoder MLP) share the exchange: the
    first of them to step in an iteration all-reduces every one's gradients in one flat buffer,
    the others find theirs already averaged. All ranks create and step them in the same order, so
    the one collective per iteration lines up.
    """

    _instances: "weakref.WeakSet[AveragedAdam]" = weakref.WeakSet()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._created = next(_creation_order)
        self._averaged: Dict[int, torch.Tensor] = {}
        """id(param) -> the averaged gradient installed on it (its identity marks it as done)."""
        AveragedAdam._instances.add(self)

    def _params(self) -> List[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _needs_exchange(self) -> bool:
        return any(p.grad is None or self._averaged.get(id(p)) is not p.grad for p in self._params())

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if is_distributed() and self._needs_exchange():
            _average_gradients(sorted(AveragedAdam._instances, key=lambda o: o._created))
        return super().step(closure)


_creation_order = itertools.count()


@torch.no_grad()
def _average_gradients(optimizers: List[AveragedAdam]) -> None:
    """One all-reduce (mean) of the gradients of all `optimizers`; each grad becomes a view of it."""
    params = [(optimizer, p) for optimizer in optimizers for p in optimizer._params()]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]).to(collective_device())
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for optimizer, p in params:
        count = p.numel()
        p.grad = flat[offset : offset + count].view_as(p).to(p.device)
        optimizer._averaged[id(p)] = p.grad
        offset += count


@dataclass
class AveragedAdamOptimizerConfig(AdamOptimizerConfig):
    """Adam whose gradients are averaged across processes (plain Adam in a single process)."""

    _target: Type = field(default_factory=lambda: AveragedAdam)
