"""Rasterisation backends: gsplat's CUDA kernels on NVIDIA GPUs, the project's tile rasteriser elsewhere."""

from distilled_gs_ns.rendering.backend import RasterBackend, rasterize, resolve_backend

__all__ = ["RasterBackend", "rasterize", "resolve_backend"]
