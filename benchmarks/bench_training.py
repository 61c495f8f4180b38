"""Whole training runs with each CPU rasteriser, side by side: `ns-train distilled-3dgs-teacher` on
the demo scene with the demo's schedule (3000 steps), once per `--pipeline.model.rasterizer`.

Each run goes through the demo's own stage runner (`ns-train`, then `ns-export gaussian-splat` and
`ns-eval` on the 13 held-out views), so the time is what a user waits for `ns-train` including its
start-up, and the held-out metrics show that the faster backend trains the same model. Finished
runs with the same settings are reused (`--fresh` retrains them).

Writes `benchmarks/results/training.json` and a Markdown table.

Usage: python benchmarks/bench_training.py [--rasterizers torch numba] [--steps 3000] [--runs DIR] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from distilled_gs_ns.cli.stages import TEACHERS, StageResult, train_and_report


def format_table(results: Sequence[StageResult], rasterizers: Sequence[str]) -> str:
    lines = [
        "| rasterizer | ns-train s | speed-up vs first | Gaussians | PSNR | SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for rasterizer, result in zip(rasterizers, results):
        speedup = results[0].train_seconds / result.train_seconds
        lines.append(
            f"| {rasterizer} | {result.train_seconds:.0f} | {speedup:.2f}x | {result.gaussians} | "
            f"{result.psnr:.2f} | {result.ssim:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rasterizers", nargs="+", default=["torch", "numba"], choices=["torch", "numba"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs/training"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.json"))
    parser.add_argument("--fresh", action="store_true", help="retrain runs that finished earlier")
    args = parser.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    results = []
    for rasterizer in args.rasterizers:
        if args.fresh:
            (runs / rasterizer / "result.json").unlink(missing_ok=True)
        results.append(
            train_and_report(
                rasterizer, TEACHERS["teacher"], runs, args.steps, "cpu", ["--pipeline.model.rasterizer", rasterizer]
            )
        )
        print(f"{rasterizer}: ns-train took {results[-1].train_seconds:.0f} s", flush=True)
    table = format_table(results, args.rasterizers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"threads": torch.get_num_threads(), "results": [asdict(r) for r in results], "table": table}, indent=2
        )
    )
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
