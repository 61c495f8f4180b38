"""One resumable momentum-gs benchmark run: the real ns-train, then ns-eval on the held-out views.

Shared by bench_momentum_gs.py and bench_block_regime.py. A run whose eval.json exists is kept, so
an ablation can be built over several sittings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

BIN = Path(sys.executable).parent
METHOD = "momentum-gs"


def run(args: Sequence[str]) -> str:
    """Run an ns-* command of this environment; stop with its output's tail if it fails."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def slug(name: str) -> str:
    """A row name as a folder name."""
    return name.replace(" ", "-").replace("+", "plus").replace(",", "").replace("*", "x")


def train_and_evaluate(experiment: str, scene: Path, runs: Path, flags: List[str]) -> Path:
    """`ns-train momentum-gs` with `flags` into runs/experiment/momentum-gs/run, then ns-eval; skipped
    once evaluated. Returns the run folder."""
    run_dir = runs / experiment / METHOD / "run"
    if not (run_dir / "eval.json").exists():
        run(
            [
                "ns-train", METHOD, "--data", str(scene), "--output-dir", str(runs),
                "--experiment-name", experiment, "--timestamp", "run", *flags,
                "--viewer.quit-on-train-completion", "True",
            ]
        )  # fmt: skip
        run(["ns-eval", "--load-config", str(run_dir / "config.yml"), "--output-path", str(run_dir / "eval.json")])
    return run_dir
