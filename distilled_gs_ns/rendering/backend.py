"""Choice of rasteriser per device: one call site for every splat model of the package."""

from __future__ import annotations

from typing import Dict, Literal, Tuple

import torch
from torch import Tensor

RasterBackend = Literal["auto", "gsplat", "torch"]


def resolve_backend(requested: RasterBackend, device: torch.device) -> Literal["gsplat", "torch"]:
    """`auto` means gsplat's CUDA kernels on CUDA tensors and the PyTorch tile rasteriser otherwise."""
    if requested == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    if requested == "gsplat" and device.type != "cuda":
        raise ValueError(
            f"rasterizer backend 'gsplat' needs CUDA tensors, but the model is on {device}; "
            "use 'auto' or 'torch' on this device"
        )
    if requested not in ("gsplat", "torch"):
        raise ValueError(f"Unknown rasterizer backend {requested!r}; expected 'auto', 'gsplat' or 'torch'")
    return requested


def rasterize(backend: Literal["gsplat", "torch"], **kwargs) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterise with the resolved backend; keyword arguments are those of `gsplat.rasterization`."""
    if backend == "gsplat":
        from gsplat.rendering import rasterization

        return rasterization(packed=False, sparse_grad=False, **kwargs)
    from distilled_gs_ns.rendering.torch_backend import torch_rasterization

    return torch_rasterization(**kwargs)
