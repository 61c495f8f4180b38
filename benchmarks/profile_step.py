"""Where a CPU training step spends its time: one real `distilled-3dgs-teacher` step, phase by phase.

A teacher is first trained with `ns-train` on the demo scene to `--warm-steps` of the demo's
3000-step schedule (reused when present), so the profiled steps see a realistic model: full
resolution, SH degree 3, densification still active. Its checkpoint is then loaded into nerfstudio's
own `Trainer` in this process, once per compositor, and `--steps` iterations are run as
`Trainer.train` runs them (callbacks before, `train_iteration`, callbacks after), with timers around:

- data: `datamanager.next_train` (the cached image and camera);
- projection, SH, binning, compositing forward: the phases of `torch_rasterization`;
- loss forward: the model's loss dict (L1 + SSIM);
- loss backward: from the start of `backward()` to the moment the render's gradient exists;
- compositing backward: the compositor's hand-written backward;
- projection + SH backward: the rest of `backward()` (the compiled backward with `numba`, autograd
  through gsplat's reference maths with `torch`);
- optimiser: the Adam steps of every parameter group;
- densification: the callbacks after the iteration (the strategy's `step_post_backward`);
- other: the rest of the step (camera optimiser, background, nerfstudio's bookkeeping).

Writes `benchmarks/results/profile_step.json` and a Markdown table (milliseconds per step, mean of
the profiled steps, and each phase's share).

Usage: python benchmarks/profile_step.py [--compositors torch numba] [--steps 40] [--warm-steps 1500]
       [--threads N] [--runs DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence

import torch

from distilled_gs_ns.configs.demo import ShortRun
from distilled_gs_ns.data import DEMO_SCENE

PHASES = (
    "data",
    "projection",
    "sh",
    "binning",
    "compositing forward",
    "loss forward",
    "loss backward",
    "compositing backward",
    "projection + SH backward",
    "optimiser",
    "densification",
    "other",
)


class PhaseTimer:
    """Accumulates wall time per phase for the current step."""

    def __init__(self) -> None:
        self.step: Dict[str, float] = defaultdict(float)
        self.marks: Dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.step[name] += time.perf_counter() - start

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed


def warm_run(runs: Path, warm_steps: int, schedule_steps: int) -> Path:
    """Train (or reuse) the teacher whose checkpoint at `warm_steps` every profile starts from."""
    run_dir = runs / "warm" / "distilled-3dgs-teacher" / "run"
    checkpoint = run_dir / "nerfstudio_models" / f"step-{warm_steps - 1:09d}.ckpt"
    if checkpoint.exists():
        return run_dir
    flags = ShortRun(schedule_steps, save_every=warm_steps).flags()
    flags[flags.index("--max-num-iterations") + 1] = str(warm_steps)
    cmd = [
        str(Path(sys.executable).parent / "ns-train"), "distilled-3dgs-teacher", "--output-dir", str(runs),
        "--experiment-name", "warm", "--timestamp", "run", *flags, "--data", str(DEMO_SCENE),
    ]  # fmt: skip
    print(f"training the warm-up teacher ({warm_steps} steps): {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    if not checkpoint.exists():
        raise RuntimeError(f"the warm-up run wrote no checkpoint at {checkpoint}")
    return run_dir


def instrument(timer: PhaseTimer, trainer) -> None:
    """Route the phases of a step through `timer` (module attributes and bound methods of this process)."""
    from distilled_gs_ns.rendering import numba_rasterizer, tile_rasterizer, torch_backend

    for name in ("project_gaussians", "project_gaussians_numba"):
        setattr(torch_backend, name, timer.wrap("projection", getattr(torch_backend, name)))
    for name in ("colors_from_sh", "colors_from_sh_numba"):
        setattr(torch_backend, name, timer.wrap("sh", getattr(torch_backend, name)))
    torch_backend.bin_gaussians = timer.wrap("binning", torch_backend.bin_gaussians)

    def composite_with_mark(fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            with timer.phase("compositing forward"):
                render, alpha = fn(*args, **kwargs)
            if render.requires_grad:
                render.register_hook(lambda grad: timer.marks.__setitem__("render grad", time.perf_counter()))
            return render, alpha

        return timed

    for name, fn in list(torch_backend._COMPOSITORS.items()):
        torch_backend._COMPOSITORS[name] = composite_with_mark(fn)
    for function in (numba_rasterizer._RasterizeTilesNumba, tile_rasterizer._RasterizeTiles):
        function.backward = staticmethod(timer.wrap("compositing backward", function.backward))

    backward = torch.autograd.backward

    def timed_backward(*args, **kwargs):
        start = time.perf_counter()
        before = timer.step["compositing backward"]
        backward(*args, **kwargs)
        total = time.perf_counter() - start
        loss = timer.marks.pop("render grad", start) - start
        timer.step["loss backward"] += loss
        timer.step["projection + SH backward"] += total - loss - (timer.step["compositing backward"] - before)

    torch.autograd.backward = timed_backward
    pipeline = trainer.pipeline
    pipeline.datamanager.next_train = timer.wrap("data", pipeline.datamanager.next_train)
    pipeline.model.get_loss_dict = timer.wrap("loss forward", pipeline.model.get_loss_dict)
    trainer.optimizers.optimizer_scaler_step_some = timer.wrap("optimiser", trainer.optimizers.optimizer_scaler_step_some)


def profile(run_dir: Path, warm_steps: int, compositor: str, steps: int, threads: int) -> Dict:
    """`steps` training iterations from the warm checkpoint with `compositor`, timed per phase."""
    import yaml
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = yaml.load((run_dir / "config.yml").read_text(), Loader=yaml.Loader)
    config.load_dir = run_dir / "nerfstudio_models"
    config.load_step = warm_steps - 1
    config.pipeline.model.rasterizer = compositor
    config.vis = "tensorboard"
    config.set_timestamp()
    config.output_dir = run_dir.parent.parent.parent / "profile"
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    timer = PhaseTimer()
    instrument(timer, trainer)
    trainer.pipeline.train()
    per_step: List[Dict[str, float]] = []
    counts: List[int] = []
    first = trainer._start_step
    for step in range(first, first + steps + 2):
        timer.step.clear()
        start = time.perf_counter()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        with timer.phase("densification"):
            for callback in trainer.callbacks:
                callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        total = time.perf_counter() - start
        record = {phase: timer.step.get(phase, 0.0) for phase in PHASES if phase != "other"}
        record["other"] = total - sum(record.values())
        record["total"] = total
        if step >= first + 2:  # the first two warm the caches (and numba's compiled kernels)
            per_step.append(record)
            counts.append(trainer.pipeline.model.num_points)
    mean = {key: 1e3 * sum(r[key] for r in per_step) / len(per_step) for key in (*PHASES, "total")}
    return {
        "compositor": compositor,
        "threads": threads,
        "steps": [first + 2, first + steps + 1],
        "gaussians": [min(counts), max(counts)],
        "image": list(trainer.pipeline.model.last_size),
        "ms_per_step": mean,
    }


def format_table(results: Sequence[Dict]) -> str:
    names = [r["compositor"] for r in results]
    header = "| phase | " + " | ".join(f"{n} ms | {n} share" for n in names) + " |"
    lines = [header, "|---|" + "---|---|" * len(names)]
    for phase in (*PHASES, "total"):
        cells = []
        for r in results:
            ms = r["ms_per_step"][phase]
            cells.append(f"{ms:.1f} | {100 * ms / r['ms_per_step']['total']:.0f}%")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compositors", nargs="+", default=["torch", "numba"], choices=["torch", "numba"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warm-steps", type=int, default=1500)
    parser.add_argument("--schedule-steps", type=int, default=3000, help="length of the demo schedule the warm run follows")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runs", type=Path, default=Path("benchmarks/runs/profile_step"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/profile_step.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: profile this compositor and print JSON
    args = parser.parse_args(argv)

    run_dir = warm_run(args.runs, args.warm_steps, args.schedule_steps)
    if args.one:
        print("RESULT " + json.dumps(profile(run_dir, args.warm_steps, args.one, args.steps, args.threads)))
        return
    results = []
    for compositor in args.compositors:  # a fresh process each: the instrumentation patches modules
        proc = subprocess.run(
            [sys.executable, __file__, "--one", compositor, "--steps", str(args.steps), "--warm-steps",
             str(args.warm_steps), "--threads", str(args.threads), "--runs", str(args.runs)],
            capture_output=True, text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
        )  # fmt: skip
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"profiling {compositor} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        results.append(json.loads(line[0][len("RESULT "):]))
        print(f"{compositor}: {results[-1]['ms_per_step']['total']:.1f} ms per step", flush=True)
    table = format_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "table": table}, indent=2))
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
