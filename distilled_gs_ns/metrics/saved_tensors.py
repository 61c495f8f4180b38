"""The activation memory of a training step, measured as what autograd keeps for backward.

On a GPU the step's peak is mostly these tensors; on the CPU the resident set also holds the host
copies of inactive blocks and the allocator's caches, so counting tensors is the only way to tell
what a step would need on a device. Parameters are state, not activations, and are left out.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor


class SavedTensorBytes:
    """`with SavedTensorBytes() as saved: forward and loss`, then `saved.nbytes`: the bytes of the
    distinct storages autograd saved for backward inside the block (views of one storage count once)."""

    def __init__(self) -> None:
        self._storages: Dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: Tensor) -> Tensor:
        base = tensor if tensor._base is None else tensor._base
        if not (base.is_leaf and base.requires_grad):  # a parameter or a view of one (weight.t())
            storage = tensor.untyped_storage()
            self._storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def nbytes(self) -> int:
        return sum(self._storages.values())

    def __enter__(self) -> SavedTensorBytes:
        self._storages.clear()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
