"""Training schedules for short runs on small scenes (the shipped demo scene), as ns-train flags.

The methods' defaults are splatfacto's 30k-step recipe for full-size captures. The 100 px demo scene
trains on a CPU in minutes with everything scaled to the run length; the defaults below are the
demo's, and tests pick their own values through the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass
class ShortRun:
    """ns-train flags for a run of `steps` steps; None fields are derived from `steps`."""

    steps: int
    device: str = "cpu"
    num_random: Optional[int] = 10000  # None: the method's default
    background_color: Optional[str] = "white"  # None: the method's default
    warmup: Optional[int] = None  # steps / 15
    refine_every: Optional[int] = None  # steps / 30
    reset_alpha_every: int = 10  # in refinements
    stop_split_at: Optional[int] = None  # 2/3 of the run
    num_downscales: int = 1
    resolution_schedule: Optional[int] = None  # steps / 4
    sh_degree_interval: Optional[int] = None  # steps / 6
    save_every: Optional[int] = None  # steps / 3
    keep_all_checkpoints: bool = False
    eval_image_every: Optional[int] = None  # steps / 6

    def _part(self, value: Optional[int], divisor: int) -> int:
        return value if value is not None else max(self.steps // divisor, 1)

    def flags(self) -> List[str]:
        stop_split_at = self.stop_split_at if self.stop_split_at is not None else 2 * self.steps // 3
        flags = [
            "--machine.device-type", self.device,
            "--vis", "tensorboard",
            "--max-num-iterations", str(self.steps),
            "--steps-per-save", str(self._part(self.save_every, 3)),
            "--steps-per-eval-image", str(self._part(self.eval_image_every, 6)),
            "--steps-per-eval-all-images", str(10 * self.steps),
            "--pipeline.model.warmup-length", str(self._part(self.warmup, 15)),
            "--pipeline.model.refine-every", str(self._part(self.refine_every, 30)),
            "--pipeline.model.reset-alpha-every", str(self.reset_alpha_every),
            "--pipeline.model.stop-split-at", str(stop_split_at),
            "--pipeline.model.resolution-schedule", str(self._part(self.resolution_schedule, 4)),
            "--pipeline.model.num-downscales", str(self.num_downscales),
            "--pipeline.model.sh-degree-interval", str(self._part(self.sh_degree_interval, 6)),
            "--optimizers.means.scheduler.max-steps", str(max(self.steps, 1)),
        ]  # fmt: skip
        if self.background_color is not None:
            flags += ["--pipeline.model.background-color", self.background_color]
        if self.num_random is not None:
            flags += ["--pipeline.model.num-random", str(self.num_random)]
        if self.keep_all_checkpoints:
            flags += ["--save-only-latest-checkpoint", "False"]
        return flags


@dataclass
class ShortMomentumRun:
    """ns-train flags for a momentum-gs run of `steps` steps (all blocks of a process together)."""

    steps: int
    device: str = "cpu"
    block_grid: Tuple[int, int] = (2, 2)
    steps_per_block: int = 250
    num_random: int = 10000
    refine_every: int = 50
    save_every: Optional[int] = None  # steps / 3
    keep_all_checkpoints: bool = False
    eval_image_every: Optional[int] = None  # steps / 6

    def flags(self) -> List[str]:
        steps = max(self.steps, 1)
        flags = [
            "--machine.device-type", self.device,
            "--vis", "tensorboard",
            "--max-num-iterations", str(self.steps),
            "--steps-per-save", str(self.save_every or max(self.steps // 3, 1)),
            "--steps-per-eval-image", str(self.eval_image_every or max(self.steps // 6, 1)),
            "--steps-per-eval-all-images", str(10 * steps),
            "--pipeline.model.background-color", "white",
            "--pipeline.model.num-random", str(self.num_random),
            "--pipeline.model.block-grid", *map(str, self.block_grid),
            "--pipeline.model.steps-per-block", str(self.steps_per_block),
            "--pipeline.model.refine-every", str(self.refine_every),
            "--optimizers.anchor-offsets.scheduler.max-steps", str(steps),
            "--optimizers.opacity-mlp.scheduler.max-steps", str(steps),
            "--optimizers.color-mlp.scheduler.max-steps", str(steps),
        ]  # fmt: skip
        if self.keep_all_checkpoints:
            flags += ["--save-only-latest-checkpoint", "False"]
        return flags
