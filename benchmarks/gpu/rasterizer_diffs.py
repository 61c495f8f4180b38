"""How closely the package's rasterisers match gsplat's CUDA kernels: the largest absolute difference of
every output and gradient (images, alphas, radii, gradients w.r.t. means, quats, scales, opacities,
colours, means2d, and absgrad) on the scenes of tests/test_rasterizer_cuda.py, as JSON.

The test asserts tolerances; this records the numbers. Compared with gsplat (CUDA): the PyTorch tile
rasteriser on the GPU and the compiled (numba) one on the CPU, given the same inputs. Without CUDA (the
GPU check's dry run) the reference is the PyTorch rasteriser on the CPU, so everything but gsplat runs.

Usage: python benchmarks/gpu/rasterizer_diffs.py --out FILE
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from distilled_gs_ns.rendering.torch_backend import torch_rasterization
from tests.test_rasterizer_cuda import CONFIGS, gsplat_rasterization, make_cameras, make_splats, run_backend

WIDTH, HEIGHT, GAUSSIANS = 96, 80, 4000
Side = Tuple[str, torch.device]
"""A rasteriser and the device of its inputs."""


def render(side: Side, splats: Dict[str, torch.Tensor], cotangents, kwargs: Dict) -> Dict[str, torch.Tensor]:
    """Outputs and gradients of one rasteriser, on the CPU."""
    name, device = side
    fn = gsplat_rasterization if name == "gsplat" else lambda **kw: torch_rasterization(**kw, compositor=name)
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    out = run_backend(fn, {k: v.to(device) for k, v in splats.items()}, tuple(c.to(device) for c in cotangents), **moved)
    return {k: v.detach().cpu() for k, v in out.items() if isinstance(v, torch.Tensor)}


def differences(ours: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, float]]:
    """Per output: max |ours - ref|, that relative to max |ref|, and max |ref|."""
    result = {}
    for key, expected in ref.items():
        diff = float((ours[key].double() - expected.double()).abs().max())
        scale = float(expected.double().abs().max())
        result[key] = {"max_abs": diff, "max_abs_over_max_ref": diff / scale if scale > 0 else None, "max_ref": scale}
    return result


def scene(cfg: Dict, seed: int):
    splats = make_splats(GAUSSIANS, seed=seed, device="cpu", sh_bases=None if cfg["sh_degree"] is None else 16)
    viewmats, Ks = make_cameras(WIDTH, HEIGHT, "cpu")
    channels = 4 if "D" in cfg["render_mode"] else 3
    g = torch.Generator().manual_seed(seed + 1)
    cotangents = (torch.randn(2, HEIGHT, WIDTH, channels, generator=g), torch.randn(2, HEIGHT, WIDTH, 1, generator=g))
    backgrounds = torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.1, 0.3]]) if cfg["backgrounds"] else None
    kwargs = dict(
        viewmats=viewmats, Ks=Ks, width=WIDTH, height=HEIGHT, sh_degree=cfg["sh_degree"], render_mode=cfg["render_mode"],
        rasterize_mode=cfg["rasterize_mode"], tile_size=cfg["tile_size"], absgrad=True, backgrounds=backgrounds,
    )  # fmt: skip
    return splats, cotangents, kwargs


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_float32_matmul_precision("highest")  # TF32 would cost the PyTorch rasteriser three digits

    cuda = torch.cuda.is_available()
    cpu = torch.device("cpu")
    reference: Side = ("gsplat", torch.device("cuda")) if cuda else ("torch", cpu)
    compared: List[Side] = [("torch", torch.device("cuda")), ("numba", cpu)] if cuda else [("numba", cpu)]
    records = []
    for seed, cfg in enumerate(CONFIGS):
        splats, cotangents, kwargs = scene(cfg, seed)
        ref = render(reference, splats, cotangents, kwargs)
        for side in compared:
            ours = render(side, splats, cotangents, kwargs)
            records.append({
                "scene": cfg, "rasterizer": side[0], "device": side[1].type,
                "visible_gaussians": int((ref["radii"] > 0).sum()), "differences": differences(ours, ref),
            })  # fmt: skip
            worst = max(d["max_abs_over_max_ref"] or 0.0 for d in records[-1]["differences"].values())
            print(f"{side[0]} ({side[1].type}) vs {reference[0]} ({reference[1].type}), {cfg}: worst max |diff| / max |ref| {worst:.2e}")
    summary = {"reference": {"rasterizer": reference[0], "device": reference[1].type}, "image": [WIDTH, HEIGHT],
               "gaussians": GAUSSIANS, "cameras": 2, "comparisons": records}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
