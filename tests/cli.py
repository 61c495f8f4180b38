"""Helpers to drive the real nerfstudio command-line entry points from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from distilled_gs_ns.configs.demo import ShortRun
from distilled_gs_ns.data import DEMO_SCENE

BIN = Path(sys.executable).parent
TEACHER_METHODS = ("distilled-3dgs-teacher", "distilled-3dgs-teacher-perturbed", "distilled-3dgs-teacher-dropout")
NUM_RANDOM = 5000
TRAIN_STEPS = 400

def short_schedule(steps: int) -> List[str]:
    """The tests' schedule on the demo scene: 5000 random seeds, densify every 50 steps after 100,
    full resolution from the start, SH bands every 100 steps, a checkpoint every 100 steps (all kept)."""
    return ShortRun(
        steps,
        num_random=NUM_RANDOM,
        warmup=100,
        refine_every=50,
        reset_alpha_every=100,
        stop_split_at=15000,
        num_downscales=0,
        sh_degree_interval=100,
        save_every=100,
        keep_all_checkpoints=True,
        eval_image_every=100000,
    ).flags()


def cli_threads() -> int:
    """Threads per process when pytest-xdist runs N workers: the cores split between them, so that
    parallel tests do not oversubscribe the machine (torch and the numba kernels follow this)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def run_cli(args: Sequence[str], timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run an ns-* command of this environment; on failure the output is in the assertion message."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", COLUMNS="400", OMP_NUM_THREADS=str(cli_threads()))
    cmd = [str(BIN / args[0]), *args[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@dataclass
class TrainedRun:
    method: str
    run_dir: Path
    log: str = ""

    @property
    def config(self) -> Path:
        return self.run_dir / "config.yml"

    @property
    def checkpoints(self) -> List[Path]:
        return sorted((self.run_dir / "nerfstudio_models").glob("step-*.ckpt"))

    def load_gaussians(self, checkpoint: Optional[Path] = None) -> Dict[str, torch.Tensor]:
        state = torch.load(checkpoint or self.checkpoints[-1], map_location="cpu", weights_only=False)
        prefix = "_model.gauss_params."
        return {k[len(prefix):]: v for k, v in state["pipeline"].items() if k.startswith(prefix)}

    def evaluate(self, output: Path) -> Dict[str, float]:
        run_cli(["ns-eval", "--load-config", str(self.config), "--output-path", str(output)])
        return json.loads(output.read_text())["results"]


def train(method: str, output_dir: Path, name: str, steps: int = TRAIN_STEPS, extra: Sequence[str] = ()) -> TrainedRun:
    proc = run_cli(
        [
            "ns-train", method,
            "--data", str(DEMO_SCENE),
            "--output-dir", str(output_dir),
            "--experiment-name", name,
            "--timestamp", "run",
            *short_schedule(steps),
            *extra,
        ]
    )
    return TrainedRun(method, output_dir / name / method / "run", proc.stdout + proc.stderr)
