"""nerfstudio's Trainer with no lost work: atomic checkpoints, resume that skips broken ones, and
Ctrl-C / SIGTERM that save.

- Saving: `step-N.ckpt` is written atomically (engine/checkpoint_files.py); with
  `save_only_latest_checkpoint` the older ones are deleted only once the new one is complete.
- Resuming (`--load-dir` without `--load-step`): the newest checkpoint that reads and fits the model
  is used; each one skipped is named with its reason. An explicit `--load-step` or
  `--load-checkpoint` gets no fallback, only the one-line reason.
- SIGINT / SIGTERM: the step in progress finishes, a checkpoint is saved at it and the run exits
  with status 128 + signal and a line saying how to resume. A second signal exits at once. With
  several processes, the launcher forwards the signal (compat/cpu_processes.py) and after every
  step the processes all-reduce whether any was signalled, so all stop after the same step; every
  process then does the model's collective part of a save (e.g. momentum-gs gathers its blocks)
  and rank 0 writes the file.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from nerfstudio.engine.trainer import Trainer
from nerfstudio.utils import writer
from nerfstudio.utils import comms
from nerfstudio.utils.rich_utils import CONSOLE

from distilled_gs_ns.engine.checkpoint_files import (
    LOAD_ERRORS,
    CheckpointError,
    checkpoint_path,
    checkpoints_in,
    mismatch_error,
    read_checkpoint,
    remove_stale_partials,
    save_atomically,
)

def say(text: str, style: Optional[str] = None) -> None:
    """One unwrapped line (paths and reasons stay greppable), without rich markup in the text."""
    CONSOLE.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


class TrainingInterrupted(SystemExit):
    """Raised after the interrupted run saved; exits with 128 + the signal's number."""


class SplatTrainer(Trainer):
    """The package's trainer (every method's `TrainerConfig._target`)."""

    _interrupt: Optional[signal.Signals] = None
    _interrupt_step: int = -1

    # ------------------------------------------------------------------ saving

    def save_checkpoint(self, step: int) -> None:
        """Called on every process: the model's collective preparation, then rank 0 writes."""
        self.pipeline.model.prepare_checkpoint()
        if not comms.is_main_process():
            return
        module = getattr(self.pipeline, "module", self.pipeline)
        path = checkpoint_path(self.checkpoint_dir, step)
        save_atomically(
            {
                "step": step,
                "pipeline": module.state_dict(),
                "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
                "scalers": self.grad_scaler.state_dict(),
            },
            path,
        )
        if self.config.save_only_latest_checkpoint:
            for _, older in checkpoints_in(self.checkpoint_dir):
                if older != path:
                    older.unlink(missing_ok=True)

    # ------------------------------------------------------------------ resuming

    def _load_checkpoint(self) -> None:
        load_dir, load_step, load_checkpoint = self.config.load_dir, self.config.load_step, self.config.load_checkpoint
        if load_dir is not None and load_step is None:
            self._resume_from_newest_valid(Path(load_dir))
        elif load_dir is not None or load_checkpoint is not None:
            path = checkpoint_path(Path(load_dir), load_step) if load_dir is not None else Path(load_checkpoint)
            self._apply(read_checkpoint(path), path)
        else:
            CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
        for folder in {Path(load_dir) if load_dir is not None else None, self.checkpoint_dir} - {None}:
            for stale in remove_stale_partials(folder):
                say(f"removed {stale}, the unfinished file of a save that was cut short", "yellow")

    def _resume_from_newest_valid(self, folder: Path) -> None:
        found = checkpoints_in(folder)
        if not found:
            raise CheckpointError(f"no checkpoint (step-*.ckpt) in {folder}")
        skipped = []
        for step, path in reversed(found):
            try:
                self._apply(read_checkpoint(path), path)
            except CheckpointError as error:
                skipped.append(str(error))
                say(f"warning: skipping a checkpoint that cannot be resumed from: {error}", "bold yellow")
                continue
            if skipped:
                say(f"warning: resuming from {path} (step {step}), the newest valid checkpoint", "bold yellow")
            return
        raise CheckpointError(f"no valid checkpoint in {folder}: " + " | ".join(skipped))

    def _apply(self, state: Dict[str, Any], path: Path) -> None:
        """Load a read checkpoint into the pipeline, optimisers, schedulers and grad scaler."""
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
            self.optimizers.load_optimizers(state["optimizers"])
            if "schedulers" in state and self.config.load_scheduler:
                self.optimizers.load_schedulers(state["schedulers"])
            self.grad_scaler.load_state_dict(state["scalers"])
        except LOAD_ERRORS as error:
            raise mismatch_error(path, error, self.config.method_name) from None
        self._start_step = int(state["step"]) + 1
        say(f"Done loading Nerfstudio checkpoint from {path}")

    # ------------------------------------------------------------------ interruption

    def train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return super().train()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            super().train()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self._interrupt is not None:
            print(f"\n{name} again: exiting now without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self._interrupt = signal.Signals(signum)
        if self.world_size > 1:  # the processes agree on the step after it (train_iteration)
            if comms.is_main_process():
                print(f"\n{name}: finishing the current step on every process, then saving", file=sys.stderr, flush=True)
            return
        self._interrupt_step = self.step
        self.stop_training = True
        print(f"\n{name}: finishing step {self.step}, then saving (again to exit at once)", file=sys.stderr, flush=True)

    def train_iteration(self, step: int):  # type: ignore[no-untyped-def]
        result = super().train_iteration(step)
        if self.world_size > 1:
            self._agree_on_stop(step)
        return result

    def _agree_on_stop(self, step: int) -> None:
        """All processes stop after the same step: the largest signal number any of them got."""
        device = self.device if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([0 if self._interrupt is None else int(self._interrupt)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()):
            self._interrupt = signal.Signals(int(flag.item()))
            self._interrupt_step = step
            self.stop_training = True

    def _after_train(self) -> None:
        if self._interrupt is None and self.config.max_num_iterations == 0:
            # A run of no steps (a splat file imported as a run, for ns-eval/ns-viewer): its starting
            # state is the checkpoint; nerfstudio's stats writer has no step to report and would crash.
            self.training_state = "completed"
            self.save_checkpoint(self._start_step)
            say(f"no training steps: saved the starting state as {checkpoint_path(self.checkpoint_dir, self._start_step)}")
            return
        if self._interrupt is None:
            return super()._after_train()
        step = self._interrupt_step
        self.step = step
        if step >= self._start_step:
            self.save_checkpoint(step)
            writer.write_out_storage()
            saved = f"saved {checkpoint_path(self.checkpoint_dir, step)}"
        else:
            saved = "no step of this session finished, nothing new saved"
        if self.world_size > 1:
            dist.barrier()  # nobody exits (which the launcher would take as a failure) before the file is written
        if comms.is_main_process():
            say(
                f"{self._interrupt.name}: training stopped after step {step}; {saved}. "
                f"Resume by running the same ns-train command with --load-dir {self.checkpoint_dir}",
                "bold yellow",
            )
        elif self.local_rank == 0:  # another machine: say where its checkpoint went
            say(
                f"{self._interrupt.name}: training stopped after step {step}; the first machine (rank 0) saved "
                f"{checkpoint_path(self.checkpoint_dir, step).name} in its run's nerfstudio_models/",
                "bold yellow",
            )
        self.shutdown()
        raise TrainingInterrupted(128 + int(self._interrupt))
