"""Short runs of the package's methods through the real `ns-train`, `ns-eval` and `distilled-gs export`,
each command under its own time limit: the training steps of the GPU check and of the clean-room test
(docs/gpu.md). One JSON record per run: pass/fail and where, times, metrics, peak GPU memory.

Runs without teachers (the teachers, momentum-gs) go first, side by side (`--parallel`: a small scene
leaves most of a GPU and its cores idle); then the student (from every teacher that finished, the
standard one first), prune-finetune (from the standard teacher) and MCMC, both at the student's
Gaussian budget (12% of the standard teacher's count).
A command that runs past its limit is killed with its process group; no command outlives
`--deadline` seconds from the start, so one hang cannot eat the GPU call.

Usage: python benchmarks/gpu/run_methods.py --device cuda --runs DIR --out FILE [--steps 300]
           [--methods teacher student momentum-gs] [--momentum-grids 2x2] [--data SCENE] [--render-fps]
           [--train-only] [--parallel N] [--train-limit S] [--eval-limit S] [--deadline S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from distilled_gs_ns.configs.demo import ShortMomentumRun, ShortRun
from distilled_gs_ns.data import DEMO_SCENE

BIN = Path(sys.executable).parent
METHODS = {
    "teacher": "distilled-3dgs-teacher",
    "teacher-perturbed": "distilled-3dgs-teacher-perturbed",
    "teacher-dropout": "distilled-3dgs-teacher-dropout",
    "student": "distilled-3dgs-student",
    "mcmc": "distilled-3dgs-mcmc",
    "prune-finetune": "distilled-3dgs-prune-finetune",
    "momentum-gs": "momentum-gs",
}
FROM_TEACHER = ("student", "mcmc", "prune-finetune")
"""Runs that need the standard teacher: its config (student, prune-finetune) or its Gaussian count (the budget)."""
BUDGET_FRACTION = 0.12
"""The student's default share of the teacher's Gaussians; the same-budget peers get as many."""
LOG_TAIL = 3000


@dataclass
class RunSpec:
    name: str
    method: str
    flags: List[str]


@dataclass
class CommandResult:
    command: str
    returncode: Optional[int]
    """None: killed at its time limit."""
    seconds: float


@dataclass
class RunRecord:
    name: str
    method: str
    device: str
    steps: int
    ok: bool = False
    failed_at: Optional[str] = None
    commands: List[CommandResult] = field(default_factory=list)
    train_seconds: Optional[float] = None
    step_ms_median: Optional[float] = None
    peak_gpu_mb: Optional[float] = None
    eval: Dict[str, float] = field(default_factory=dict)
    render_fps: Optional[float] = None
    spz_bytes: Optional[int] = None
    config: Optional[str] = None
    log_tail: Optional[str] = None


class Deadline:
    """Seconds left for every later command, from one start time."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def limit(self, own: float) -> float:
        return max(0.0, min(own, self.end - time.monotonic()))


def run_command(args: Sequence[str], log: Path, limit: float) -> CommandResult:
    """Run one of this environment's console scripts, output appended to `log`; past `limit` seconds
    its whole process group is killed."""
    start = time.monotonic()
    with log.open("a") as handle:
        handle.write(f"\n$ {' '.join(args)}   (limit {limit:.0f} s)\n")
        handle.flush()
        if limit <= 0:
            return CommandResult(args[0], None, 0.0)
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode: Optional[int] = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
            handle.write(f"\n[killed after {limit:.0f} s]\n")
    return CommandResult(args[0], returncode, time.monotonic() - start)


def training_scalars(run_dir: Path) -> Tuple[Optional[float], Optional[float]]:
    """(median step time in ms, peak GPU memory in MB) from the run's tensorboard events: nerfstudio
    logs both every `steps_per_log` steps, the step time as the mean of the last 20 steps (so a short
    run's includes the first, slow steps); a killed run's: what was flushed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(run_dir.glob("events.out.tfevents.*"))
    if not events:
        return None, None
    accumulator = EventAccumulator(str(events[-1]), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    step_ms = None
    if "Train Iter (time)" in tags:
        times = [e.value for e in accumulator.Scalars("Train Iter (time)") if e.step > 0]
        step_ms = 1000 * statistics.median(times) if times else None
    peak = None
    if "GPU Memory (MB)" in tags:
        peak = max(e.value for e in accumulator.Scalars("GPU Memory (MB)"))
    return step_ms, peak


def execute(spec: RunSpec, record: RunRecord, runs: Path, options: argparse.Namespace, deadline: Deadline) -> None:
    """`run` with any error of this driver recorded as the run's failure, so the other runs go on."""
    try:
        run(spec, record, runs, options, deadline)
    except Exception:
        record.ok, record.failed_at, record.log_tail = False, "driver", traceback.format_exc()[-LOG_TAIL:]


def run(spec: RunSpec, record: RunRecord, runs: Path, options: argparse.Namespace, deadline: Deadline) -> None:
    """ns-train, then (unless --train-only) ns-eval, distilled-gs export --format spz and, when asked,
    the render speed of one run. Step times and peak memory are read even from a run that was killed."""
    log = runs / f"{spec.name}.log"
    run_dir = runs / spec.name / spec.method / "run"
    config = run_dir / "config.yml"
    steps: List[Tuple[str, List[str], float]] = [
        ("ns-train", ["ns-train", spec.method, "--output-dir", str(runs), "--experiment-name", spec.name,
                      "--timestamp", "run", *spec.flags], options.train_limit),
        ("ns-eval", ["ns-eval", "--load-config", str(config), "--output-path", str(runs / spec.name / "eval.json")],
         options.eval_limit),
        ("export", ["distilled-gs", "export", "--load-config", str(config), "--format", "spz",
                    "--output", str(runs / spec.name / "splat.spz")], options.eval_limit),
    ]  # fmt: skip
    for stage, args, own_limit in steps[:1] if options.train_only else steps:
        result = run_command(args, log, deadline.limit(own_limit))
        record.commands.append(result)
        if stage == "ns-train":
            record.train_seconds = result.seconds
            record.step_ms_median, peak = training_scalars(run_dir)
            record.peak_gpu_mb = peak if options.device == "cuda" else None
        if result.returncode != 0:
            record.failed_at = stage
            record.log_tail = log.read_text()[-LOG_TAIL:]
            return
    record.config = str(config)
    if not options.train_only:
        results = json.loads((runs / spec.name / "eval.json").read_text())["results"]
        record.eval = {k: results[k] for k in ("psnr", "ssim", "lpips", "fps", "gaussian_count") if k in results}
        record.spz_bytes = (runs / spec.name / "splat.spz").stat().st_size
    if options.render_fps:
        from distilled_gs_ns.metrics.render_speed import render_fps

        record.render_fps = render_fps(config)
    record.ok = True


def plan(args: argparse.Namespace) -> List[RunSpec]:
    """The runs of `args.methods` in order; momentum-gs once per block grid."""
    data = ["--data", str(args.data)]
    specs = []
    for name in args.methods:
        if name == "momentum-gs":
            for grid in args.momentum_grids:
                rows, cols = map(int, grid.split("x"))
                per_block = max(args.steps // (4 * rows * cols), 1)
                flags = ShortMomentumRun(args.steps, args.device, block_grid=(rows, cols), steps_per_block=per_block).flags()
                specs.append(RunSpec(f"momentum-gs-{grid}", METHODS[name], [*flags, *data]))
        else:
            specs.append(RunSpec(name, METHODS[name], [*ShortRun(args.steps, args.device).flags(), *data]))
    return specs


def teacher_flags(spec: RunSpec, teachers: Sequence[RunRecord]) -> List[str]:
    """The student learns from every teacher that finished (the standard one first, as in the demo)."""
    teacher = teachers[0]
    budget = str(max(1, round(BUDGET_FRACTION * teacher.eval["gaussian_count"])))
    return {
        "student": ["--pipeline.teachers", *(str(t.config) for t in teachers)],
        "mcmc": ["--pipeline.model.max-gaussians", budget],
        "prune-finetune": ["--pipeline.teachers", str(teacher.config), "--pipeline.model.max-gaussians", budget],
    }[spec.name]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], required=True)
    parser.add_argument("--runs", type=Path, required=True, help="folder for the runs and their logs")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the records")
    parser.add_argument("--data", type=Path, default=DEMO_SCENE, help="nerfstudio-format scene (default: the demo scene)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--momentum-grids", nargs="+", default=["2x2"], help="block grids of the momentum-gs runs, e.g. 1x1 2x2")
    parser.add_argument("--parallel", type=int, default=1, help="runs side by side")
    parser.add_argument("--train-limit", type=float, default=300.0, help="seconds for one ns-train")
    parser.add_argument("--eval-limit", type=float, default=120.0, help="seconds for one ns-eval or export")
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds for everything")
    parser.add_argument("--render-fps", action="store_true", help="also time the held-out views' renders")
    parser.add_argument("--train-only", action="store_true", help="ns-train alone (step times, peak memory)")
    args = parser.parse_args(argv)
    if any(name in args.methods for name in FROM_TEACHER) and "teacher" not in args.methods:
        parser.error(f"{', '.join(FROM_TEACHER)} need the teacher among --methods")
    if args.train_only and any(name in args.methods for name in FROM_TEACHER):
        parser.error(f"{', '.join(FROM_TEACHER)} need the teacher's evaluation: not with --train-only")

    deadline = Deadline(args.deadline)
    args.runs.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    specs = plan(args)
    records = {s.name: RunRecord(s.name, s.method, args.device, args.steps) for s in specs}
    saving = threading.Lock()

    def save() -> List[Dict]:
        """All records so far, written again after every run: a kill from outside keeps what finished."""
        with saving:
            ordered = [asdict(records[s.name]) for s in specs]
            args.out.write_text(json.dumps(ordered, indent=2))
        return ordered

    def execute_and_save(spec: RunSpec) -> None:
        execute(spec, records[spec.name], args.runs, args, deadline)
        save()

    first = [s for s in specs if s.name not in FROM_TEACHER]
    second = [s for s in specs if s.name in FROM_TEACHER]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        list(pool.map(execute_and_save, first))
        teachers = [records[n] for n in ("teacher", "teacher-perturbed", "teacher-dropout") if n in records and records[n].ok]
        for spec in second:
            if not teachers or teachers[0].name != "teacher":
                records[spec.name].failed_at = "teacher"
            else:
                spec.flags += teacher_flags(spec, teachers)
        list(pool.map(execute_and_save, [s for s in second if records[s.name].failed_at is None]))

    ordered = save()
    for record in ordered:
        status = "ok" if record["ok"] else f"FAILED at {record['failed_at']}"
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in record["eval"].items())
        print(f"{record['name']:>22}: {status}; train {record['train_seconds'] or 0:.1f} s; {metrics}")
    if not all(r["ok"] for r in ordered):
        sys.exit(1)


if __name__ == "__main__":
    main()
