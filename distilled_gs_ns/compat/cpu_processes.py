"""Let nerfstudio's own launcher start CPU process groups (`--machine.device-type cpu`), and end a
multi-process run cleanly when one of its processes fails.

nerfstudio 1.1.5's `ns-train` spawns one worker per device with `torch.multiprocessing.spawn`, and
its worker asserts that CUDA is available before it creates the process group, although it picks
gloo for CPU itself. This shim swaps in a worker that does the same set-up without the CUDA
asserts, only when nerfstudio's worker is spawned for a non-CUDA device; CUDA runs are untouched.
It patches `torch.multiprocessing.spawn` (looked up by nerfstudio at call time) because
`nerfstudio.scripts.train` is still being imported when plugins are discovered, so its own
functions cannot be replaced from here.

The same wrapper supervises nerfstudio's workers on every device type:
- the collectives' timeout is the run's `collective_timeout_s` (default 5 min) instead of
  nerfstudio's fixed 30 min, so a hung or lost process ends the job that much later at most;
- when a process dies or fails, the others get 2 s to stop, then SIGTERM and 2 s more before
  SIGKILL, and the job ends with one line naming the rank, the cause and the newest checkpoint to
  resume from, instead of torch's `ProcessExitedException` traceback.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing
from torch.multiprocessing.spawn import ProcessExitedException, ProcessRaisedException

from distilled_gs_ns.errors import UserInputError

_NERFSTUDIO_WORKER = ("nerfstudio.scripts.train", "_distributed_worker")


def cpu_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_devices_per_machine: int,
    machine_rank: int,
    dist_url: str,
    config: Any,
    timeout: timedelta,
    device_type: str = "cpu",
) -> Any:
    """nerfstudio's `_distributed_worker` for CPU processes: gloo group, local groups, then train."""
    from nerfstudio.utils import comms

    # Processes share the machine's cores: without this each one starts a thread per core and
    # they slow each other down.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_devices_per_machine))
    global_rank = machine_rank * num_devices_per_machine + local_rank
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
    )
    for machine in range(world_size // num_devices_per_machine):
        group = dist.new_group(list(range(machine * num_devices_per_machine, (machine + 1) * num_devices_per_machine)))
        if machine == machine_rank:
            comms.LOCAL_PROCESS_GROUP = group
    output = main_func(local_rank, world_size, config, global_rank)
    comms.synchronize()
    dist.destroy_process_group()
    return output


SHUTDOWN_GRACE_S = 2.0
"""Seconds the other processes get to stop after one failed, then as many before SIGKILL."""


class RankFailed(UserInputError):
    """A process of a multi-process run died or failed; the message says which, why, and what is saved."""


def _cause(error: Exception) -> str:
    if isinstance(error, ProcessExitedException):
        if error.signal_name:
            return f"was killed by {error.signal_name}"
        return f"exited with status {error.exit_code}"
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"raised {lines[-1].strip() if lines else type(error).__name__}"


class SupervisedProcesses:
    """torch's ProcessContext for nerfstudio's workers, with a bounded shutdown and one-line failures."""

    def __init__(self, context: Any, first_rank: int, config: Any) -> None:
        self.context, self.first_rank, self.config = context, first_rank, config

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)

    def join(self, timeout: Optional[float] = None, grace_period: Optional[float] = None) -> bool:
        try:
            return self.context.join(timeout=timeout, grace_period=SHUTDOWN_GRACE_S if grace_period is None else grace_period)
        except (ProcessExitedException, ProcessRaisedException) as error:
            rank = self.first_rank + error.error_index
            raise RankFailed(f"rank {rank} {_cause(error)}; the run was stopped. {self._resume_hint()}") from None

    def _resume_hint(self) -> str:
        from distilled_gs_ns.engine.checkpoint_files import checkpoints_in

        try:
            folder = Path(self.config.get_checkpoint_dir())
        except Exception:  # a config without a run folder: nothing to point at
            return "No checkpoint to resume from."
        found = checkpoints_in(folder)
        if not found:
            return f"No checkpoint was saved yet in {folder}."
        return f"Newest checkpoint safe to resume from: {found[-1][1]} (ns-train ... --load-dir {folder})."


def allow_cpu_process_groups() -> None:
    """Install the spawn wrapper once per process."""
    original = torch.multiprocessing.spawn
    if getattr(original, "_distilled_gs_ns_cpu", False):
        return

    def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        is_nerfstudio_worker = (getattr(fn, "__module__", None), getattr(fn, "__name__", None)) == _NERFSTUDIO_WORKER
        if not (is_nerfstudio_worker and len(args) == 8):
            return original(fn, args=args, nprocs=nprocs, join=join, daemon=daemon, start_method=start_method)
        main_func, world_size, per_machine, machine_rank, dist_url, config, timeout, device_type = args
        seconds = getattr(config, "collective_timeout_s", None)
        if seconds is not None:
            timeout = timedelta(seconds=seconds)
        if device_type != "cuda":
            fn = cpu_worker
        args = (main_func, world_size, per_machine, machine_rank, dist_url, config, timeout, device_type)
        context = SupervisedProcesses(
            original(fn, args=args, nprocs=nprocs, join=False, daemon=daemon, start_method=start_method),
            first_rank=machine_rank * per_machine,
            config=config,
        )
        if not join:
            return context
        while not context.join():
            pass
        return None

    spawn._distilled_gs_ns_cpu = True  # type: ignore[attr-defined]
    torch.multiprocessing.spawn = spawn
