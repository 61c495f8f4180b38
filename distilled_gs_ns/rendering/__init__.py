"""Rasterisation backends: gsplat's CUDA kernels on NVIDIA GPUs, the project's tile rasteriser elsewhere
(compiled with numba on CPUs, plain PyTorch on other devices)."""

from distilled_gs_ns.rendering.backend import RasterBackend, ResolvedBackend, rasterize, resolve_backend

__all__ = ["RasterBackend", "ResolvedBackend", "rasterize", "resolve_backend"]
