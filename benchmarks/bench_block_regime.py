"""Momentum-GS where blocks are needed: a long street that one block cannot hold under a
per-process anchor cap (`max-active-anchors`, standing in for a device's memory), and the paper's
ablation at that cap.

Rows, every one trained through the real ns-train at the same cap and scored with ns-eval on the
held-out views (every 8th):
  1 block, S steps (as many as each block gets) | 1 block, N*S steps (equal compute)
  | N independent blocks (shared decoder, no teacher, no weighting) | + momentum distillation
  | + block weighting (the full method) | 1 block without a cap (what the cap costs)
  | + momentum / full with a slower teacher (m 0.99, lambda_c 5)
  | with --processes-row: 2N blocks on 2 gloo processes (blocks > processes), independent and full.
Memory per row (max over the run, from the model's tensorboard metrics): the active block's anchor
state (anchors + Adam moments), the shared decoder (+ moments + teacher), and the step's activations
(tensors autograd saves for backward); the host copies of inactive blocks are not counted.

Each (row, seed) is its own run directory and is skipped once evaluated, so the table can be built
over several sittings; the JSON and table hold the mean over the seeds done so far.

Usage: python benchmarks/bench_block_regime.py [--steps-per-block 1500] [--blocks 4] [--cap 2000]
         [--seeds 0 1 2] [--objects 32] [--views 192] [--runs DIR] [--out PATH] [--processes-row]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List

from momentum_runs import slug, train_and_evaluate
from tensorboard_events import scalars

from distilled_gs_ns.configs.demo import ShortMomentumRun
from distilled_gs_ns.data.wide_scene import make_wide_scene

SLOW_TEACHER = ["--pipeline.model.momentum", "0.99", "--pipeline.model.consistency-weight", "5"]
"""A teacher that remembers ~100 steps instead of ~10, at a tenth of the paper's lambda_c."""
MEMORY_TAGS = ("device_anchor_state_mb", "device_decoder_state_mb", "device_activation_mb")


def rows(blocks: int, steps: int, processes_row: bool) -> Dict[str, Dict]:
    """Row name -> grid, steps per process, processes, teacher, weighting, cap on/off. The street runs
    along the partition's first ground axis (x), so its N blocks are N rows."""
    grid = (blocks, 1)
    table = {
        "1 block, S steps": dict(grid=(1, 1), steps=steps, teacher=False, weighting=False),
        "1 block, N*S steps": dict(grid=(1, 1), steps=blocks * steps, teacher=False, weighting=False),
        "N independent blocks": dict(grid=grid, steps=blocks * steps, teacher=False, weighting=False),
        "+ momentum distillation": dict(grid=grid, steps=blocks * steps, teacher=True, weighting=False),
        "+ block weighting (full)": dict(grid=grid, steps=blocks * steps, teacher=True, weighting=True),
        "1 block, N*S steps, no cap": dict(grid=(1, 1), steps=blocks * steps, teacher=False, weighting=False, cap=False),
        "+ momentum, m 0.99, lambda_c 5": dict(grid=grid, steps=blocks * steps, teacher=True, weighting=False, flags=SLOW_TEACHER),
        "full, m 0.99, lambda_c 5": dict(grid=grid, steps=blocks * steps, teacher=True, weighting=True, flags=SLOW_TEACHER),
    }
    if processes_row:
        parallel = dict(grid=(blocks, 2), steps=blocks * steps, processes=2)
        table["independent, 2N blocks on 2 processes"] = dict(parallel, teacher=False, weighting=False)
        table["full, 2N blocks on 2 processes"] = dict(parallel, teacher=True, weighting=True)
    return table


def train(name: str, row: Dict, seed: int, scene: Path, runs: Path, cap: int, steps_per_block: int) -> Path:
    switch = min(500, max(1, steps_per_block // 4))
    flags = ShortMomentumRun(row["steps"], block_grid=row["grid"], steps_per_block=switch).flags()
    flags += [
        "--machine.seed", str(seed), "--machine.num-devices", str(row.get("processes", 1)),
        "--pipeline.model.max-active-anchors", str(cap if row.get("cap", True) else 0),
        "--pipeline.model.momentum-teacher", str(row["teacher"]),
        "--pipeline.model.block-weighting", str(row["weighting"]), *row.get("flags", []),
    ]  # fmt: skip
    return train_and_evaluate(f"{slug(name)}-seed{seed}", scene, runs, flags)


def measure(run_dir: Path) -> Dict[str, float]:
    results = json.loads((run_dir / "eval.json").read_text())["results"]
    summary = json.loads((run_dir / "blocks.json").read_text())
    row = {"psnr": results["psnr"], "ssim": results["ssim"], "merged_anchors": summary["merged_anchors"]}
    for tag in MEMORY_TAGS:
        row[tag] = max(scalars(run_dir, f"Train Metrics Dict/{tag}").values())
    row["device_total_mb"] = sum(row[tag] for tag in MEMORY_TAGS)
    return row


def mean_over_seeds(per_seed: List[Dict[str, float]]) -> Dict[str, float]:
    out = {key: statistics.fmean(r[key] for r in per_seed) for key in per_seed[0]}
    out["psnr_per_seed"] = [r["psnr"] for r in per_seed]  # type: ignore[assignment]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-per-block", type=int, default=1500)
    parser.add_argument("--blocks", type=int, default=4, help="N: blocks along the street")
    parser.add_argument("--cap", type=int, default=2000, help="max-active-anchors of every row but the no-cap one")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--objects", type=int, default=32)
    parser.add_argument("--views", type=int, default=192)
    parser.add_argument("--only", nargs="*", default=None, help="row names to run (default: all)")
    parser.add_argument("--processes-row", action="store_true", help="also 2N blocks on 2 gloo processes")
    parser.add_argument("--runs", type=Path, default=Path("benchmark_outputs/block_regime"))
    parser.add_argument("--out", type=Path, default=Path("benchmark_outputs/block_regime.json"))
    args = parser.parse_args()

    scene = args.runs / f"street_{args.objects}x{args.views}"
    if not (scene / "transforms.json").exists():
        make_wide_scene(scene, num_objects=args.objects, num_views=args.views)
    table: Dict[str, Dict] = {}
    for name, row in rows(args.blocks, args.steps_per_block, args.processes_row).items():
        if args.only is not None and name not in args.only:
            continue
        per_seed = []
        for seed in args.seeds:
            run_dir = train(name, row, seed, scene, args.runs, args.cap, args.steps_per_block)
            per_seed.append(measure(run_dir))
            print(f"{name:34s} seed {seed}: PSNR {per_seed[-1]['psnr']:.2f}", flush=True)
        table[name] = mean_over_seeds(per_seed)
    report = {
        "scene": {"objects": args.objects, "views": args.views},
        "steps_per_block": args.steps_per_block, "blocks": args.blocks, "cap": args.cap, "seeds": args.seeds,
        "rows": table,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{args.objects} objects, {args.views} views; cap {args.cap} anchors per process; "
          f"S = {args.steps_per_block} steps per block; N = {args.blocks}; seeds {args.seeds}")  # fmt: skip
    print("| setting | PSNR (mean) | per seed | SSIM | merged anchors | device MB: anchors / decoder / activations |")
    print("|---|---|---|---|---|---|")
    for name, r in table.items():
        seeds = ", ".join(f"{p:.2f}" for p in r["psnr_per_seed"])  # type: ignore[union-attr]
        print(f"| {name} | {r['psnr']:.2f} | {seeds} | {r['ssim']:.3f} | {r['merged_anchors']:.0f} | "
              f"{r['device_anchor_state_mb']:.2f} / {r['device_decoder_state_mb']:.2f} / {r['device_activation_mb']:.2f} |")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
