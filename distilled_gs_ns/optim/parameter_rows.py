"""Replacing a trained Parameter inside its optimiser while keeping (or reshaping) its Adam state.

Anchors are added, removed and swapped between host and device during Momentum-GS training; each
time the Parameter object changes, the optimiser must point at the new one and carry its moments
row by row, or the new rows would start with another row's moments (or the old rows with none).
These helpers assume one Parameter per optimiser, as nerfstudio's per-group optimisers have.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor
from torch.nn import Parameter

State = Dict[str, object]


def _row_state(value: object, param: Tensor) -> bool:
    """Adam's per-element moments have the Parameter's shape; `step` is a scalar."""
    return torch.is_tensor(value) and value.dim() > 0 and value.shape == param.shape


def optimizer_state(optimizer: torch.optim.Optimizer, param: Tensor, device: torch.device) -> State:
    """A copy of the optimiser's state for `param` on `device` (empty if it never stepped)."""
    return {k: (v.detach().to(device, copy=True) if torch.is_tensor(v) else v) for k, v in optimizer.state.get(param, {}).items()}


def install_parameter(optimizer: torch.optim.Optimizer, param: Parameter, state: State) -> None:
    """Make `param` the optimiser's only Parameter, with `state` as its state: moments moved to its
    device, Adam's scalar `step` left on the host where torch keeps it (no device sync per step)."""
    group = optimizer.param_groups[0]
    for old in group["params"]:
        optimizer.state.pop(old, None)
    group["params"] = [param]
    if state:
        optimizer.state[param] = {
            k: (v.to(param.device) if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in state.items()
        }


def keep_rows(optimizer: torch.optim.Optimizer, param: Parameter, keep: Tensor) -> Parameter:
    """A new Parameter with the rows of `param` where `keep` [N] is True, moments filtered alike."""
    new = Parameter(param.detach()[keep].clone(), requires_grad=param.requires_grad)
    state = {k: (v[keep] if _row_state(v, param) else v) for k, v in optimizer.state.get(param, {}).items()}
    install_parameter(optimizer, new, state)
    return new


def append_rows(optimizer: torch.optim.Optimizer, param: Parameter, rows: Tensor) -> Parameter:
    """A new Parameter with `rows` appended to `param`; the new rows start with zero moments."""
    new = Parameter(torch.cat([param.detach(), rows.to(param)], dim=0), requires_grad=param.requires_grad)
    state = {}
    for key, value in optimizer.state.get(param, {}).items():
        if _row_state(value, param):
            value = torch.cat([value, value.new_zeros((rows.shape[0],) + tuple(value.shape[1:]))], dim=0)
        state[key] = value
    install_parameter(optimizer, new, state)
    return new
