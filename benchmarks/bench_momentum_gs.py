"""Momentum-GS on the synthetic wide scene: the ablation table and the cost of block-wise training.

Ablation, every setting trained through the real ns-train and scored with ns-eval on the held-out
views. Each block gets as many steps as the single-block model (as when each block has a device
of its own), so the 4-block runs take 4x the steps in one process:
  1 block (Scaffold-GS) | 4 independent blocks (shared decoder, no teacher, no weighting)
  | + momentum distillation | + block weighting (the full method) | full method on 2 gloo processes.
Cost, from nerfstudio's per-step timer in each run's tensorboard events (median after warm-up):
  per-step time of 4 blocks in one process vs 1 block (target <= 1.15x); anchor state on the
  device (active block + its Adam moments, tracked by the model) for 4 blocks vs 1, plus
  "GPU Memory (MB)" when run on CUDA; throughput (block-steps per second of training time) of 2
  gloo processes vs 1. Also the export fidelity of the full model: PSNR of its exported PLY's render
  against the model's own render on training views.

Usage: python benchmarks/bench_momentum_gs.py [--steps 2000] [--runs DIR] [--out PATH] [--device cpu] [--variants]
       python benchmarks/bench_momentum_gs.py --export-only   (the full method's export at every bake and SH degree)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict

from momentum_runs import METHOD, run, slug, train_and_evaluate
from tensorboard_events import scalars

from distilled_gs_ns.configs.demo import ShortMomentumRun
from distilled_gs_ns.data.wide_scene import make_wide_scene

SETTINGS = {
    "1 block": dict(grid=(1, 1), teacher=False, weighting=False, processes=1),
    "4 independent blocks": dict(grid=(2, 2), teacher=False, weighting=False, processes=1),
    "+ momentum distillation": dict(grid=(2, 2), teacher=True, weighting=False, processes=1),
    "+ block weighting (full)": dict(grid=(2, 2), teacher=True, weighting=True, processes=1),
    "full, 2 gloo processes": dict(grid=(2, 2), teacher=True, weighting=True, processes=2),
}
VARIANTS = {
    "4 independent blocks, 2 gloo processes": dict(grid=(2, 2), teacher=False, weighting=False, processes=2),
    "+ momentum distillation, 2 gloo processes": dict(grid=(2, 2), teacher=True, weighting=False, processes=2),
    "+ momentum distillation (lambda_c 5), 2 gloo processes": dict(grid=(2, 2), teacher=True, weighting=False,
                                                                   processes=2,
                                                                   extra=["--pipeline.model.consistency-weight", "5"]),
    "+ momentum distillation (lambda_c 0.5), 2 gloo processes": dict(grid=(2, 2), teacher=True, weighting=False,
                                                                     processes=2,
                                                                     extra=["--pipeline.model.consistency-weight", "0.5"]),
    "+ momentum distillation (m 0.999, lambda_c 0.5), 2 gloo processes": dict(
        grid=(2, 2), teacher=True, weighting=False, processes=2,
        extra=["--pipeline.model.momentum", "0.999", "--pipeline.model.consistency-weight", "0.5"]),
    "+ momentum distillation (m 0.999)": dict(grid=(2, 2), teacher=True, weighting=False, processes=1,
                                              extra=["--pipeline.model.momentum", "0.999"]),
    "4 independent blocks, block-init seen": dict(grid=(2, 2), teacher=False, weighting=False, processes=1,
                                                 extra=["--pipeline.model.block-init", "seen"]),
    "full, block-init cell": dict(grid=(2, 2), teacher=True, weighting=True, processes=1,
                                  extra=["--pipeline.model.block-init", "cell"]),
}  # fmt: skip
"""With --variants: the ablation's steps on 2 processes (blocks trained in parallel, as in the paper), a
10x and 100x weaker consistency loss, a slow teacher (m 0.999: a horizon of ~1000 steps, several
block switches) at the full and a 100x weaker consistency weight, a block starting from its cell
and what its cameras see (VastGaussian's coverage selection) instead of every seed, and the full
method on its cell only (the lowest-memory start)."""


def train(name: str, setting: Dict, scene: Path, runs: Path, steps: int, device: str) -> Path:
    blocks = setting["grid"][0] * setting["grid"][1]
    per_process_steps = steps * blocks // setting["processes"]
    flags = ShortMomentumRun(
        per_process_steps, device=device, block_grid=setting["grid"], steps_per_block=max(steps // 8, 1)
    ).flags()
    flags += [
        "--machine.num-devices", str(setting["processes"]),
        "--pipeline.model.momentum-teacher", str(setting["teacher"]),
        "--pipeline.model.block-weighting", str(setting["weighting"]),
        *setting.get("extra", []),
    ]  # fmt: skip
    return train_and_evaluate(slug(name), scene, runs, flags)


def step_cost(run_dir: Path, skip_fraction: float = 0.1) -> Dict[str, float]:
    times = scalars(run_dir, "Train Iter (time)")
    steps = sorted(times)
    kept = [times[s] for s in steps[int(len(steps) * skip_fraction) :]]
    state = scalars(run_dir, "Train Metrics Dict/device_anchor_state_mb")
    cost = {
        "median_step_ms": statistics.median(kept) * 1e3,
        "mean_step_ms": statistics.fmean(kept) * 1e3,
        "train_seconds": sum(times.values()),
        "steps": len(times),
        "device_anchor_state_mb_max": max(state.values()),
    }
    try:
        cost["gpu_memory_mb_max"] = max(scalars(run_dir, "GPU Memory (MB)").values())
    except KeyError:
        pass
    return cost


EXPORT_VARIANTS = [
    ("export-direction", 0, 0), ("export-direction", 3, 0), ("mean-visible", 3, 0),
    ("export-direction", 0, 1000), ("export-direction", 3, 1000), ("export-direction", 3, 3000),
]
"""(bake, SH degree, render-fit steps) measured beside the default by --export-only."""


def export_fidelity(run_dir: Path, variants: bool = False) -> Dict[str, Dict[str, float]]:
    """Exported PLY rendered against the model's own render, on every training view and every
    held-out view: the default through the real ns-export, then (with `variants`) EXPORT_VARIANTS."""
    import time

    from nerfstudio.utils.eval_utils import eval_setup

    from distilled_gs_ns.export.formats import FORMATS
    from distilled_gs_ns.export.splat_data import from_model
    from distilled_gs_ns.metrics.export_fidelity import export_psnr

    _, pipeline, _, _ = eval_setup(run_dir / "config.yml", test_mode="test")
    model, device = pipeline.model, pipeline.model.device
    _ = pipeline.datamanager.cached_eval  # undistorts the held-out images and updates their cameras
    train_cameras = pipeline.datamanager.train_dataset.cameras
    eval_cameras = pipeline.datamanager.eval_dataset.cameras

    def summary(exported, seconds: float) -> Dict[str, float]:
        train = export_psnr(model, exported, train_cameras)
        held_out = export_psnr(model, exported, eval_cameras)
        return {"mean_psnr": statistics.fmean(train), "min_psnr": min(train), "views": len(train),
                "heldout_mean_psnr": statistics.fmean(held_out), "heldout_min_psnr": min(held_out),
                "gaussians": int(exported.means.shape[0]), "seconds": seconds}  # fmt: skip

    export_dir = run_dir / "export"
    start = time.perf_counter()
    run(["ns-export", "gaussian-splat", "--load-config", str(run_dir / "config.yml"), "--output-dir", str(export_dir)])
    exported = FORMATS["ply"].decode((export_dir / "splat.ply").read_bytes()).render_gaussians(device)
    table = {"default (ns-export)": summary(exported, time.perf_counter() - start)}
    for mode, degree, steps in EXPORT_VARIANTS if variants else []:
        model.config.export_bake, model.config.sh_degree, model.config.export_refine_steps = mode, degree, steps
        model._bake_cache = None
        start = time.perf_counter()
        data = FORMATS["ply"].decode(FORMATS["ply"].encode(from_model(model)))
        key = f"{mode}, SH {degree}, {steps} fit steps"
        table[key] = summary(data.render_gaussians(device), time.perf_counter() - start)
        print(f"export {key}: {table[key]['mean_psnr']:.2f} dB mean, {table[key]['min_psnr']:.2f} dB worst training view; "
              f"held-out {table[key]['heldout_mean_psnr']:.2f} / {table[key]['heldout_min_psnr']:.2f}", flush=True)  # fmt: skip
    return table


def export_only(args: argparse.Namespace, scene: Path) -> None:
    """Train the full method only and measure its export."""
    name = "+ block weighting (full)"
    run_dir = train(name, SETTINGS[name], scene, args.runs, args.steps, args.device)
    fidelity = export_fidelity(run_dir, variants=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps_per_block": args.steps, "device": args.device, "export": fidelity}, indent=2))
    print("\n| export | Gaussians | training views: mean / worst PSNR vs model render | held-out views: mean / worst | s |")
    print("|---|---|---|---|---|")
    for key, row in fidelity.items():
        print(f"| {key} | {row['gaussians']} | {row['mean_psnr']:.2f} / {row['min_psnr']:.2f} | "
              f"{row['heldout_mean_psnr']:.2f} / {row['heldout_min_psnr']:.2f} | {row['seconds']:.0f} |")
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps per block")
    parser.add_argument("--runs", type=Path, default=Path("benchmark_outputs/momentum_gs"))
    parser.add_argument("--out", type=Path, default=Path("benchmark_outputs/momentum_gs.json"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", action="store_true", help="also train the VARIANTS (reported after the table)")
    parser.add_argument("--export-only", action="store_true", help="train only the full method; measure its export")
    args = parser.parse_args()

    scene = args.runs / "wide_scene"
    if not (scene / "transforms.json").exists():
        make_wide_scene(scene)
    if args.export_only:
        export_only(args, scene)
        return
    rows = {}
    for name, setting in SETTINGS.items():
        run_dir = train(name, setting, scene, args.runs, args.steps, args.device)
        results = json.loads((run_dir / "eval.json").read_text())["results"]
        summary = json.loads((run_dir / "blocks.json").read_text())
        rows[name] = {
            "psnr": results["psnr"],
            "ssim": results["ssim"],
            "anchors": summary["merged_anchors"],
            "steps_per_block": summary["steps_per_block_trained"],
            **step_cost(run_dir),
        }
        print(f"{name:28s} PSNR {results['psnr']:6.2f}  SSIM {results['ssim']:.4f}  {rows[name]['median_step_ms']:6.1f} ms/step")

    one, four, two = rows["1 block"], rows["+ block weighting (full)"], rows["full, 2 gloo processes"]
    cost = {
        "step_time_ratio_4_vs_1_block": four["median_step_ms"] / one["median_step_ms"],
        "device_state_ratio_4_vs_1_block": four["device_anchor_state_mb_max"] / one["device_anchor_state_mb_max"],
        "block_steps_per_second_1_process": four["steps"] / four["train_seconds"],
        "block_steps_per_second_2_processes": 2 * two["steps"] / two["train_seconds"],
    }
    cost["gloo_speedup"] = cost["block_steps_per_second_2_processes"] / cost["block_steps_per_second_1_process"]
    fidelity = export_fidelity(args.runs / "plus-block-weighting-(full)" / METHOD / "run")
    variants = {}
    for name, setting in (VARIANTS.items() if args.variants else []):
        run_dir = train(name, setting, scene, args.runs, args.steps, args.device)
        results = json.loads((run_dir / "eval.json").read_text())["results"]
        variants[name] = {"psnr": results["psnr"], "ssim": results["ssim"]}
        print(f"{name:28s} PSNR {results['psnr']:6.2f}  SSIM {results['ssim']:.4f}")
    report = {
        "steps_per_block": args.steps,
        "device": args.device,
        "ablation": rows,
        "cost": cost,
        "export": fidelity,
        "variants": variants,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    print("\n| setting | PSNR | SSIM | anchors | ms/step (median) | device anchor state MB |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['anchors']} | "
            f"{row['median_step_ms']:.1f} | {row['device_anchor_state_mb_max']:.2f} |"
        )
    print(f"\nstep time 4 blocks / 1 block: {cost['step_time_ratio_4_vs_1_block']:.2f}x (target <= 1.15x)")
    print(f"device anchor state 4 blocks / 1 block: {cost['device_state_ratio_4_vs_1_block']:.2f}x")
    print(
        f"throughput: {cost['block_steps_per_second_1_process']:.1f} block-steps/s on 1 process, "
        f"{cost['block_steps_per_second_2_processes']:.1f} on 2 gloo processes ({cost['gloo_speedup']:.2f}x)"
    )
    default = fidelity["default (ns-export)"]
    print(f"export vs model render on {default['views']} training views: {default['mean_psnr']:.2f} dB mean, "
          f"{default['min_psnr']:.2f} dB min")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
