"""Small wrappers over torch.distributed that are no-ops in a single process.

nerfstudio's launcher creates the default process group (NCCL on CUDA, gloo on CPU); models and
pipelines only ask who they are and exchange a few tensors or objects with the other ranks.
"""

from __future__ import annotations

from typing import Any, List

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def collective_device() -> torch.device:
    """Where tensors must be for collectives: the current GPU for NCCL, the CPU for gloo."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Element-wise sum over ranks (a copy; `tensor` itself is left alone)."""
    if not is_distributed():
        return tensor.clone()
    buffer = tensor.detach().to(collective_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's `obj`, in rank order (pickled: for block states and summaries, not per step)."""
    if not is_distributed():
        return [obj]
    gathered: List[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


@torch.no_grad()
def broadcast_module_(module: torch.nn.Module, source: int = 0) -> None:
    """Overwrite every rank's parameters and buffers of `module` with those of rank `source`."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        buffer = tensor.detach().to(collective_device(), copy=True)
        dist.broadcast(buffer, src=source)
        tensor.copy_(buffer.to(tensor.device))
