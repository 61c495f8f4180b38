"""Versions of the environment and gsplat's CUDA extension loaded (the kit's prebuilt one, or gsplat's
own JIT compile when that does not load), with the seconds it took; on a GPU also one small render and
backward through gsplat's kernels. Written as JSON for the GPU check (docs/gpu.md).

Usage: python benchmarks/gpu/gsplat_check.py --out FILE
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import platform
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

PACKAGES = ("torch", "torchvision", "numpy", "numba", "nerfstudio", "gsplat", "distilled-gs-ns", "tyro", "viser", "scipy")


def load_extension() -> Dict:
    """Import gsplat's CUDA backend; say which extension it holds and how long that took."""
    start = time.perf_counter()
    from gsplat.cuda import _backend

    seconds = time.perf_counter() - start
    module = _backend._C
    if module is None:
        return {"loaded": False, "seconds": seconds}
    source = "prebuilt (gsplat.csrc, from the kit)" if module.__name__ == "gsplat.csrc" else "compiled here by gsplat's JIT"
    return {"loaded": True, "source": source, "file": getattr(module, "__file__", None), "seconds": seconds}


def render_smoke() -> Dict:
    """One render and backward of 1000 Gaussians through gsplat's CUDA kernels."""
    from gsplat.rendering import rasterization

    g = torch.Generator().manual_seed(0)
    means = (torch.randn(1000, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 3.0])).cuda().requires_grad_()
    quats = torch.randn(1000, 4, generator=g).cuda()
    scales = torch.full((1000, 3), 0.02).cuda()
    opacities = torch.full((1000,), 0.5).cuda()
    colors = torch.rand(1000, 3, generator=g).cuda()
    Ks = torch.tensor([[[100.0, 0.0, 64.0], [0.0, 100.0, 64.0], [0.0, 0.0, 1.0]]]).cuda()
    image, alpha, _ = rasterization(means, quats, scales, opacities, colors, torch.eye(4)[None].cuda(), Ks, 128, 128)
    image.sum().backward()
    torch.cuda.synchronize()
    return {"image_mean": float(image.mean()), "alpha_max": float(alpha.max()), "grad_finite": bool(torch.isfinite(means.grad).all())}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    info: Dict = {
        "python": platform.python_version(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30, "capability": list(torch.cuda.get_device_capability(0))}
    info["gsplat_extension"] = load_extension()
    if info["cuda_available"] and info["gsplat_extension"]["loaded"]:
        info["gsplat_render"] = render_smoke()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    if not info["gsplat_extension"]["loaded"]:
        raise SystemExit("gsplat's CUDA extension did not load (see the messages above)")


if __name__ == "__main__":
    main()
