"""Momentum-GS throughput of several processes: block-steps per second of 1 process (all cores'
threads) vs 2 gloo processes (one share of the cores each), same scene and blocks.

Each run trains a 2x2-block momentum-gs model on the synthetic wide scene through the real
ns-train (the full method: momentum teacher and block weighting on). The per-step time is
nerfstudio's own timer (rank 0's tensorboard events), the first 10% of steps skipped as warm-up;
with P processes a step trains P blocks at once, so block-steps/s = P / mean step time.

Shared 2-core machines are noisy (a neighbour's load moves a run by 20-30%), so code versions are
compared in one call: every repeat runs each version's settings back to back, and the table
holds the median over the repeats. A version is a source tree put first on PYTHONPATH, with its
own extra ns-train flags (e.g. to match an older version's defaults):

  python benchmarks/bench_block_throughput.py --code "before=/tmp/old" \
      --code "after=.::--pipeline.model.block-init cell" [--repeats 3] [--steps 600] [--one-thread]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from tensorboard_events import scalars

from distilled_gs_ns.configs.demo import ShortMomentumRun
from distilled_gs_ns.data.wide_scene import make_wide_scene

BIN = Path(sys.executable).parent


def train(scene: Path, runs: Path, processes: int, steps: int, code: Path, extra: List[str], threads: str = "") -> Path:
    name = f"p{processes}" + (f"t{threads}" if threads else "")
    run_dir = runs / name / "momentum-gs" / "run"
    shutil.rmtree(run_dir.parent.parent, ignore_errors=True)
    flags = ShortMomentumRun(steps, block_grid=(2, 2), steps_per_block=max(steps // 6, 1)).flags()
    command = [
        str(BIN / "ns-train"), "momentum-gs", "--data", str(scene), "--output-dir", str(runs),
        "--experiment-name", name, "--timestamp", "run", *flags,
        "--steps-per-eval-image", str(10 * steps), "--steps-per-save", str(10 * steps),
        "--machine.num-devices", str(processes), "--viewer.quit-on-train-completion", "True", *extra,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(code.resolve()))
    if threads:
        env["OMP_NUM_THREADS"] = threads
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"ns-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return run_dir


def block_steps_per_second(run_dir: Path, processes: int) -> float:
    times = scalars(run_dir, "Train Iter (time)")
    steps = sorted(times)
    return processes / statistics.fmean(times[s] for s in steps[len(steps) // 10 :])


def parse_code(spec: str) -> Tuple[str, Path, List[str]]:
    name, _, rest = spec.partition("=")
    path, _, flags = rest.partition("::")
    if not name or not path:
        raise SystemExit(f"--code takes NAME=PATH[::FLAGS], got {spec!r}")
    return name, Path(path), shlex.split(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", action="append", default=None, help="NAME=PATH[::FLAGS] (default: this tree)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600, help="steps per process")
    parser.add_argument(
        "--one-thread", action="store_true",
        help="also 1 process on 1 thread: 2x its rate is what 2 processes reach if nothing but compute is shared",
    )  # fmt: skip
    parser.add_argument("--runs", type=Path, default=Path("benchmark_outputs/block_throughput"))
    parser.add_argument("--out", type=Path, default=Path("benchmark_outputs/block_throughput.json"))
    args = parser.parse_args()

    codes = [parse_code(spec) for spec in (args.code or [f"this tree={Path(__file__).resolve().parents[1]}"])]
    scene = args.runs / "wide_scene"
    if not (scene / "transforms.json").exists():
        make_wide_scene(scene)
    settings = [("1 process", 1, ""), ("2 processes", 2, "")] + ([("1 process, 1 thread", 1, "1")] if args.one_thread else [])
    rates: Dict[str, Dict[str, List[float]]] = {name: {s[0]: [] for s in settings} for name, _, _ in codes}
    for repeat in range(args.repeats):
        for label, processes, threads in settings:
            for name, path, extra in codes:
                run_dir = train(scene, args.runs, processes, args.steps, path, extra, threads)
                rates[name][label].append(block_steps_per_second(run_dir, processes))
                print(f"repeat {repeat}: {name}, {label}: {rates[name][label][-1]:.1f} block-steps/s", flush=True)
    report = {"steps": args.steps, "repeats": args.repeats, "cores": os.cpu_count(), "versions": {}}
    print("\n| code | 1 process (block-steps/s) | 2 processes | speedup | 2x one thread / 1 process |")
    print("|---|---|---|---|---|")
    for name, _, extra in codes:
        median = {label: statistics.median(values) for label, values in rates[name].items()}
        row = {"flags": " ".join(extra), "runs": rates[name], "median": median,
               "speedup": median["2 processes"] / median["1 process"]}  # fmt: skip
        ideal = "-"
        if args.one_thread:
            row["one_thread_bound"] = 2 * median["1 process, 1 thread"] / median["1 process"]
            ideal = f"{row['one_thread_bound']:.2f}x"
        report["versions"][name] = row
        print(f"| {name} | {median['1 process']:.1f} | {median['2 processes']:.1f} | {row['speedup']:.2f}x | {ideal} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
