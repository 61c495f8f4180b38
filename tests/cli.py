"""Helpers to drive the real nerfstudio command-line entry points from tests."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
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


def cli_env() -> Dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", COLUMNS="400", OMP_NUM_THREADS=str(cli_threads()))


class ForkServer:
    """This test process's tests/ns_forkserver.py: every ns-* command a fresh forked process,
    without paying nerfstudio's imports each time."""

    def __init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="ns-forkserver-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ns_forkserver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, bufsize=1, env=cli_env(), cwd=Path(__file__).resolve().parents[1],
        )
        self.reply()  # ready
        atexit.register(self.close)

    def reply(self, timeout: Optional[float] = None) -> Optional[dict]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the ns-* fork server died; its log: {Path(self.log.name).read_text()[-4000:]}")
        return json.loads(line)

    def run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            self.proc.stdin.write(json.dumps({"argv": list(args), "stdout": str(out), "stderr": str(err)}) + "\n")
            pid = self.reply()["pid"]
            ended = self.reply(timeout)
            if ended is None:
                os.kill(pid, signal.SIGKILL)
                self.reply()
                raise subprocess.TimeoutExpired(list(args), timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(list(args), ended["returncode"], out.read_text(), err.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        if self.proc.returncode == 0:
            os.unlink(self.log.name)


_FORK_SERVER: Optional[ForkServer] = None


def run_cli(args: Sequence[str], timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    """Run an ns-* command of this environment; on failure the output is in the assertion message.

    On Linux each command is a child forked from a process that has imported nerfstudio already
    (tests/ns_forkserver.py); elsewhere (fork is unsafe with torch on macOS) a fresh subprocess."""
    global _FORK_SERVER
    if sys.platform == "linux":
        if _FORK_SERVER is None:
            _FORK_SERVER = ForkServer()
        proc = _FORK_SERVER.run(args, timeout)
    else:
        cmd = [str(BIN / args[0]), *args[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=cli_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def machine_args(rank: int, port: int) -> List[str]:
    """ns-train flags for machine `rank` of two simulated on this one, one CPU process each."""
    return ["--machine.num-machines", "2", "--machine.machine-rank", str(rank), "--machine.num-devices", "1",
            "--machine.dist-url", f"tcp://127.0.0.1:{port}"]  # fmt: skip
