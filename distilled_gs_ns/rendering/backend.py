"""Choice of rasteriser per device: one call site for every splat model of the package."""

from __future__ import annotations

from typing import Dict, Literal, Tuple

import torch
from torch import Tensor

RasterBackend = Literal["auto", "gsplat", "numba", "torch"]
ResolvedBackend = Literal["gsplat", "numba", "torch"]


def resolve_backend(requested: RasterBackend, device: torch.device) -> ResolvedBackend:
    """`auto` means gsplat's CUDA kernels on CUDA tensors, the compiled (numba) tile compositor on
    CPU tensors, and the plain PyTorch one on any other device (e.g. MPS)."""
    if requested == "auto":
        return {"cuda": "gsplat", "cpu": "numba"}.get(device.type, "torch")
    if requested == "gsplat" and device.type != "cuda":
        raise ValueError(
            f"rasterizer backend 'gsplat' needs CUDA tensors, but the model is on {device}; "
            "use 'auto', 'numba' (CPU) or 'torch' on this device"
        )
    if requested == "numba" and device.type != "cpu":
        raise ValueError(
            f"rasterizer backend 'numba' needs CPU tensors, but the model is on {device}; "
            "use 'auto' or 'torch' on this device"
        )
    if requested not in ("gsplat", "numba", "torch"):
        raise ValueError(f"Unknown rasterizer backend {requested!r}; expected 'auto', 'gsplat', 'numba' or 'torch'")
    return requested


def rasterize(backend: ResolvedBackend, **kwargs) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterise with the resolved backend; keyword arguments are those of `gsplat.rasterization`."""
    if backend == "gsplat":
        from gsplat.rendering import rasterization

        return rasterization(packed=False, sparse_grad=False, **kwargs)
    from distilled_gs_ns.rendering.torch_backend import torch_rasterization

    return torch_rasterization(**kwargs, compositor=backend)
