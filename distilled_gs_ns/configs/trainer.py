"""nerfstudio's TrainerConfig with the checks that turn deep failures into one clear sentence.

- A checkpoint folder without checkpoints: nerfstudio sets `load_dir` both for `ns-train --load-dir`
  and, in `eval_setup`, for ns-viewer, ns-export and ns-eval, and fails deep inside with an IndexError
  or FileNotFoundError. It is checked on assignment.
- Optimiser settings that can only produce NaNs (a non-finite learning rate, Adam eps <= 0, which
  divides 0 by 0 for Gaussians no view has seen yet) are refused before training starts.

Its trainer is engine/trainer.py's: atomic checkpoints, resume from the newest valid one, and
Ctrl-C that saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Type

from nerfstudio.engine.trainer import TrainerConfig

from distilled_gs_ns.engine.checkpoint_files import install_eval_loading
from distilled_gs_ns.engine.trainer import SplatTrainer
from distilled_gs_ns.errors import UserInputError


@dataclass
class SplatTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: SplatTrainer)
    collective_timeout_s: float = 300.0
    """Multi-process runs: how long a process waits in a collective (gradient averaging, gathers) for
    the others before the run is ended. A hung or lost process (another machine down, a network
    split) ends the job after this long instead of nerfstudio's 30 min. Raise it when machines may
    legitimately lag (first-step compilation, slow checkpoint saves on a network disk)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.collective_timeout_s) and self.collective_timeout_s > 0):
            raise UserInputError(f"collective-timeout-s must be a positive number of seconds, got {self.collective_timeout_s}")
        for group, spec in self.optimizers.items():
            optimizer = spec.get("optimizer")
            lr = getattr(optimizer, "lr", None)
            if lr is not None and not (math.isfinite(lr) and lr >= 0):
                raise UserInputError(f"optimizers.{group}.optimizer.lr must be a finite number >= 0, got {lr}")
            eps = getattr(optimizer, "eps", None)
            if eps is not None and not eps > 0:
                raise UserInputError(
                    f"optimizers.{group}.optimizer.eps must be > 0, got {eps}: Adam divides by sqrt(v) + eps, "
                    "and v is 0 for Gaussians that no view has seen yet, which would turn them into NaN"
                )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "load_dir" and value is not None:
            install_eval_loading()  # eval_setup sets load_dir right before it loads the checkpoint
            folder = Path(value)
            if not folder.is_dir() or not any(folder.glob("step-*.ckpt")):
                raise UserInputError(
                    f"no checkpoint found in {folder}: the run's nerfstudio_models/ folder is missing or empty "
                    "(deleted, or training never saved). Point --load-dir / --load-config at a run that has "
                    "step-*.ckpt files."
                )
        if name == "load_checkpoint" and value is not None and not Path(value).is_file():
            raise UserInputError(f"checkpoint file {value} does not exist")
        super().__setattr__(name, value)
