"""CPU cost of the tile rasteriser: one training step (forward + backward) per configuration.

What is timed: `torch_rasterization` from 3D Gaussians (projection, SH colours, tile binning, tile
compositing) in float32 with `absgrad=True`, an L1 loss against a fixed target, and `backward()`;
the median over the repeats, after warm-up steps. The dense reference (projection + SH +
`rasterize_dense`, autograd) runs the same step where its [H, W, N] tensors fit (see
`--dense-max-elements`); its median divided by the tile rasteriser's is the speed-up column.

Backends side by side (`BACKEND_CASES`): the same step with the PyTorch compositor and with the
compiled numba one (`compositor="torch"` / `"numba"`), plus the compositing step alone (forward +
backward of `rasterize_tiles` / `rasterize_tiles_numba` on fixed projected Gaussians and tile lists),
each timed in its own fresh process after warm-up (numba's compilation is cached on disk and done
in the warm-up). The compile cost is measured apart: the first numba step of a new process with an
empty kernel cache (`NUMBA_CACHE_DIR` set to a temporary directory) and of the next process, which
loads that cache.

Peak memory: every configuration and method runs in fresh subprocesses, one for timing and one for
memory. The memory run takes one warm-up step (one-time initialisation of thread pools, the autograd
engine, ...), resets the kernel's resident-set high-water mark (`echo 5 > /proc/self/clear_refs`,
Linux >= 4.0), runs one more step, and reports VmHWM minus the VmRSS just before that step: the
extra resident memory the step needed (autograd graph, blocks, cache, outputs), read by the kernel,
not sampled. It runs with a fixed glibc mmap threshold (MALLOC_MMAP_THRESHOLD_) so that blocks freed
after the warm-up step go back to the kernel instead of staying resident and hiding the next step's
use. Where clear_refs is unavailable the fallback is `ru_maxrss` minus the RSS before the step (only
exact when the step sets a new process high), and the JSON says which was used. tracemalloc is not
used: it does not see PyTorch's allocations.

Threads: one intra-op thread by default (`--threads`), so that numbers depend less on what else
runs on the machine (competing OpenMP threads slow steps down by an order of magnitude); the JSON
records the thread count and the load average.

Scenes look like a trained splat: Gaussians spread through the view frustum at depths 2..6, screen
standard deviations log-uniform in 0.5..3 px whatever the resolution (3-sigma radii of a few pixels),
random rotations, opacities in 0.1..0.9, random SH (degree 3) coefficients.

Usage:
    PYTHONPATH=. python benchmarks/bench_rasterizer.py [--quick] [--backends-only] [--out PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

SIZES = [64, 128, 256]
COUNTS = [5_000, 20_000, 100_000]
TARGET = dict(width=100, height=100, n=20_000, sh_degree=3)
BACKEND_CASES = [dict(width=100, height=100, n=20_000), dict(width=256, height=256, n=100_000)]
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "rasterizer.json"


# ----------------------------------------------------------------------------------------------
# worker side (one configuration, one method, fresh process)
# ----------------------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r


def make_scene(n: int, width: int, height: int, sh_degree: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    f = 1.1 * width
    z = 2.0 + 4.0 * torch.rand(n, generator=g)
    # Uniform over the image (plus a small margin) at each depth.
    u = (torch.rand(n, generator=g) * 1.1 - 0.05) * width
    v = (torch.rand(n, generator=g) * 1.1 - 0.05) * height
    means = torch.stack([(u - width / 2) * z / f, (v - height / 2) * z / f, z], -1)
    sigma_px = torch.exp(math.log(0.5) + math.log(6.0) * torch.rand(n, 3, generator=g))
    scales = sigma_px * z[:, None] / f
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.1 + 0.8 * torch.rand(n, generator=g)
    sh = 0.3 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    sh[:, 0] = (torch.rand(n, 3, generator=g) - 0.5) / 0.2820948  # DC: colours spread over 0..1
    viewmat = torch.eye(4)[None]
    K = torch.tensor([[[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]])
    target = torch.rand(1, height, width, 3, generator=g)
    params = dict(
        means=means,
        quats=quats,
        log_scales=scales.log(),
        logit_opacities=torch.logit(opacities),
        sh=sh,
    )
    return params, viewmat, K, target


def make_step(method: str, params, viewmat, K, target, width: int, height: int, sh_degree: int, absgrad: bool):
    import torch

    from distilled_gs_ns.rendering.dense_reference import rasterize_dense
    from distilled_gs_ns.rendering.projection import colors_from_sh, project_gaussians
    from distilled_gs_ns.rendering.torch_backend import torch_rasterization

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    stats: Dict[str, float] = {}

    def step():
        for v in leaves.values():
            v.grad = None
        scales, opacities = leaves["log_scales"].exp(), torch.sigmoid(leaves["logit_opacities"])
        if method in ("tile", "numba"):
            render, _, info = torch_rasterization(
                leaves["means"], leaves["quats"], scales, opacities, leaves["sh"], viewmat, K, width, height,
                sh_degree=sh_degree, absgrad=absgrad, compositor="numba" if method == "numba" else "torch",
            )  # fmt: skip
            info["means2d"].retain_grad()
            stats["num_intersections"] = info["num_intersections"]
            stats["visible"] = int((info["radii"] > 0).sum())
        else:
            proj = project_gaussians(leaves["means"], leaves["quats"], scales, opacities, viewmat, K, width, height)
            cols = colors_from_sh(leaves["means"], leaves["sh"], viewmat, sh_degree, proj.radii)
            img, _ = rasterize_dense(
                proj.means2d[0], proj.conics[0], proj.opacities[0], cols[0], proj.depths[0], proj.radii[0], width, height
            )
            render = img[None]
            stats["visible"] = int((proj.radii > 0).sum())
        (render - target).abs().mean().backward()

    return step, stats


def make_composite_step(
    method: str, params, viewmat, K, target, width: int, height: int, sh_degree: int, absgrad: bool
):
    """Forward + backward of the compositing step alone, on fixed projected Gaussians and tile lists."""
    import torch

    from distilled_gs_ns.rendering.numba_rasterizer import rasterize_tiles_numba
    from distilled_gs_ns.rendering.projection import colors_from_sh, project_gaussians
    from distilled_gs_ns.rendering.tile_rasterizer import rasterize_tiles
    from distilled_gs_ns.rendering.tiles import bin_gaussians

    with torch.no_grad():
        scales, opacities = params["log_scales"].exp(), torch.sigmoid(params["logit_opacities"])
        proj = project_gaussians(params["means"], params["quats"], scales, opacities, viewmat, K, width, height)
        cols = colors_from_sh(params["means"], params["sh"], viewmat, sh_degree, proj.radii)
        bins = [bin_gaussians(proj.means2d[0], proj.radii[0], proj.depths[0], width, height, 8)]
    composite = rasterize_tiles_numba if method == "numba" else rasterize_tiles

    def step():
        leaves = [t.clone().requires_grad_(True) for t in (proj.means2d, proj.conics, proj.opacities, cols)]
        render, _ = composite(*leaves, bins, width, height, absgrad=absgrad)
        (render - target).abs().mean().backward()

    return step


def _timed(step, warmup: int, repeats: int) -> Dict:
    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu_times.append((time.process_time() - c0) * 1e3)
    return dict(
        median_ms=statistics.median(times),
        min_ms=min(times),
        times_ms=[round(t, 2) for t in times],
        median_cpu_ms=statistics.median(cpu_times),
    )


def worker(cfg: Dict) -> Dict:
    """`mode` "time": warm-up, then timed repeats. `mode` "memory": one warm-up step (one-time
    initialisation of thread pools, autograd engine, ...), then the peak of one more step."""
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    width, height, n, sh_degree = cfg["width"], cfg["height"], cfg["n"], cfg["sh_degree"]
    params, viewmat, K, target = make_scene(n, width, height, sh_degree)
    step, stats = make_step(cfg["method"], params, viewmat, K, target, width, height, sh_degree, cfg["absgrad"])
    out = dict(cfg, torch_threads=torch.get_num_threads())

    if cfg["mode"] == "memory":
        step()
        gc.collect()
        rss0 = _proc_status_kib("VmRSS")
        reset = _reset_peak_rss()
        maxrss0 = _maxrss_kib()
        step()
        if reset and rss0 is not None and _proc_status_kib("VmHWM") is not None:
            peak_kib, method = _proc_status_kib("VmHWM") - rss0, "VmHWM after clear_refs"
        else:
            peak_kib = max(0, _maxrss_kib() - (rss0 or maxrss0))
            method = "ru_maxrss delta (a lower bound unless the step set a new process high)"
        out.update(peak_extra_rss_mib=peak_kib / 1024.0, memory_method=method, rss_before_mib=(rss0 or 0) / 1024.0)
        return dict(out, **stats)

    if cfg["mode"] == "first call":
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        return dict(out, first_call_s=first, **_timed(step, 0, 1), **stats)

    out.update(_timed(step, cfg["warmup"], cfg["repeats"]))
    if cfg.get("composite"):
        composite = make_composite_step(
            cfg["method"], params, viewmat, K, target, width, height, sh_degree, cfg["absgrad"]
        )
        out["composite"] = _timed(composite, cfg["warmup"], cfg["repeats"])
    if cfg["method"] == "numba":
        import numba

        out["numba_threads"] = numba.get_num_threads()
    return dict(out, **stats)


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------


# glibc's default (dynamic) mmap threshold keeps freed blocks of up to 32 MiB in the heap, so the
# resident set before the measured step would already hold the warm-up step's blocks and hide them.
# A fixed 128 KiB threshold returns every large block to the kernel on free: RSS then tracks live
# memory. Used only in the memory runs; the timed runs keep the default allocator behaviour.
MEMORY_RUN_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _subprocess(cfg: Dict, extra_env: Optional[Dict[str, str]] = None) -> Dict:
    env = dict(os.environ)
    env.update(extra_env or {})
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        return dict(cfg, error=(proc.stderr or proc.stdout)[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_costs(base: Dict) -> Dict:
    """The numba step's first call in a new process with an empty kernel cache (compiles every
    kernel and writes the cache) and in the next process (loads it), against a second call."""
    with tempfile.TemporaryDirectory() as cache:
        cfg = dict(base, **TARGET, method="numba", mode="first call")
        cold = _subprocess(cfg, {"NUMBA_CACHE_DIR": cache})
        cached = _subprocess(cfg, {"NUMBA_CACHE_DIR": cache})
        size = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file())
    return dict(cold=cold, cached=cached, cache_kib=size / 1024)


def run_in_subprocess(cfg: Dict) -> Dict:
    """Timing run and memory run of one configuration, each in a fresh process."""
    timed = _subprocess(dict(cfg, mode="time"))
    if "error" in timed:
        return timed
    mem = _subprocess(dict(cfg, mode="memory"), MEMORY_RUN_ENV)
    if "error" in mem:
        return dict(timed, peak_extra_rss_mib=float("nan"), memory_error=mem["error"])
    timed.update({k: mem[k] for k in ("peak_extra_rss_mib", "memory_method", "rss_before_mib")})
    return timed


def _fmt_ms(r: Optional[Dict]) -> str:
    if r is None:
        return "-"
    if "error" in r:
        return "error"
    return f"{r['median_ms']:.0f}"


def markdown(results: Dict) -> str:
    lines = [
        "| image | Gaussians | visible | intersections | tile fwd+bwd ms | tile peak MiB | dense fwd+bwd ms | dense peak MiB | dense / tile |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["grid"]:
        t, d = row["tile"], row.get("dense")
        if "error" in t:
            lines.append(f"| {row['width']}x{row['height']} | {row['n']} | error: {t['error'][-200:]!r} |")
            continue
        if d is None:
            dense_ms, dense_mem, ratio = f"skipped ({row['dense_skip_reason']})", "-", "-"
        elif "error" in d:
            dense_ms, dense_mem, ratio = "error", "-", "-"
        else:
            dense_ms = f"{d['median_ms']:.0f}"
            dense_mem = f"{d['peak_extra_rss_mib']:.0f}"
            ratio = f"{d['median_ms'] / t['median_ms']:.1f}x"
        lines.append(
            f"| {row['width']}x{row['height']} | {row['n']:,} | {t['visible']:,} | {t['num_intersections']:,} | "
            f"{t['median_ms']:.0f} | {t['peak_extra_rss_mib']:.0f} | {dense_ms} | {dense_mem} | {ratio} |"
        )
    tg = results["target"]
    lines.append("")
    if "error" in tg:
        lines.append(f"Target case failed: {tg['error'][-500:]}")
    else:
        lines.append(
            f"Target case ({tg['width']}x{tg['height']}, {tg['n']:,} Gaussians, SH degree {tg['sh_degree']}, absgrad): "
            f"median {tg['median_ms']:.0f} ms per forward+backward (min {tg['min_ms']:.0f} ms, "
            f"{tg['num_intersections']:,} intersections, peak +{tg['peak_extra_rss_mib']:.0f} MiB)."
        )
    return "\n".join(lines)


def backends_markdown(rows: List[Dict]) -> str:
    """Table of the PyTorch and numba compositors side by side."""
    lines = [
        "| image | Gaussians | intersections | step ms torch | step ms numba | step speed-up | "
        "compositing ms torch | compositing ms numba | compositing speed-up | peak MiB torch | peak MiB numba |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t, n = row["torch"], row["numba"]
        if "error" in t or "error" in n:
            err = t.get("error") or n.get("error")
            lines.append(f"| {row['width']}x{row['height']} | {row['n']:,} | error: {err[-200:]!r} |")
            continue
        tc, nc = t["composite"]["median_ms"], n["composite"]["median_ms"]
        lines.append(
            f"| {row['width']}x{row['height']} | {row['n']:,} | {t['num_intersections']:,} | "
            f"{t['median_ms']:.0f} | {n['median_ms']:.0f} | {t['median_ms'] / n['median_ms']:.1f}x | "
            f"{tc:.0f} | {nc:.1f} | {tc / nc:.1f}x | {t['peak_extra_rss_mib']:.0f} | {n['peak_extra_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def compile_markdown(cost: Dict) -> str:
    cold, cached = cost["cold"], cost["cached"]
    if "error" in cold or "error" in cached:
        return f"numba compile cost: error {(cold.get('error') or cached.get('error'))[-300:]!r}"
    return (
        f"numba first step in a new process ({TARGET['width']}x{TARGET['height']}, {TARGET['n']:,} Gaussians): "
        f"empty cache {cold['first_call_s']:.1f} s, cached {cached['first_call_s']:.2f} s, "
        f"then {cached['median_ms']:.0f} ms per step; cache {cost['cache_kib']:.0f} KiB"
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 warm-up step and 3 timed repeats instead of 2 and 7")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument(
        "--dense-max-elements",
        type=float,
        default=1e8,
        help="run the dense reference only where H*W*N is at most this (default 1e8: ~5 GiB of float32 autograd state)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1; 0 = torch's default). On a machine shared with other jobs, "
        "OpenMP threads competing for the cores make steps an order of magnitude slower, not faster",
    )
    parser.add_argument(
        "--backends-only",
        action="store_true",
        help="only the torch vs numba comparison (BACKEND_CASES), not the grid against the dense reference",
    )
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    warmup, repeats = (1, 3) if args.quick else (2, 7)
    base = dict(sh_degree=3, absgrad=True, warmup=warmup, repeats=repeats, threads=args.threads)
    started = time.time()
    load_before = os.getloadavg()
    grid = []
    for size in [] if args.backends_only else SIZES:
        for n in COUNTS:
            cfg = dict(base, width=size, height=size, n=n)
            print(f"[bench] {size}x{size}, {n} Gaussians: tile ...", file=sys.stderr, flush=True)
            row = dict(width=size, height=size, n=n, tile=run_in_subprocess(dict(cfg, method="tile")))
            elements = size * size * n
            if elements > args.dense_max_elements:
                row["dense"] = None
                row["dense_skip_reason"] = f"H*W*N = {elements:.1e} > {args.dense_max_elements:.0e}"
            else:
                print(f"[bench] {size}x{size}, {n} Gaussians: dense ...", file=sys.stderr, flush=True)
                dense_cfg = dict(cfg, method="dense", warmup=min(1, warmup), repeats=min(3, repeats))
                row["dense"] = run_in_subprocess(dense_cfg)
            grid.append(row)
    target = None
    if not args.backends_only:
        print("[bench] target case ...", file=sys.stderr, flush=True)
        target = run_in_subprocess(dict(base, method="tile", **TARGET))
    backends = []
    for case in BACKEND_CASES:
        row = dict(case)
        for method in ("torch", "numba"):
            label = f"{case['width']}x{case['height']}, {case['n']} Gaussians: {method}"
            print(f"[bench] {label} ...", file=sys.stderr, flush=True)
            cfg = dict(base, **case, method="tile" if method == "torch" else "numba", composite=True)
            row[method] = run_in_subprocess(cfg)
        backends.append(row)
    print("[bench] numba compile cost (empty cache, then cached) ...", file=sys.stderr, flush=True)
    compile_cost = compile_costs(base)

    import torch

    results = dict(
        description=(
            "float32 CPU training step (torch_rasterization forward + L1 loss + backward, SH degree 3, absgrad; "
            "'backends': compositor torch vs numba, and the compositing step alone); "
            "median wall-clock ms over the timed repeats after warm-up; peak_extra_rss_mib = resident memory one "
            "step added after a warm-up step (kernel high-water mark after clear_refs, separate fresh process "
            "with a fixed glibc mmap threshold)"
        ),
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor(),
            cpu_count=os.cpu_count(),
            python=platform.python_version(),
            torch=torch.__version__,
            load_average_before=load_before,
            load_average_after=os.getloadavg(),
        ),
        quick=args.quick,
        warmup=warmup,
        repeats=repeats,
        dense_max_elements=args.dense_max_elements,
        grid=grid,
        target=target,
        backends=backends,
        numba_compile=compile_cost,
        wall_s=time.time() - started,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    if not args.backends_only:
        print(markdown(results))
        print()
    print(backends_markdown(backends))
    print(compile_markdown(compile_cost))
    print(f"\n(written to {args.out})")


if __name__ == "__main__":
    main()
