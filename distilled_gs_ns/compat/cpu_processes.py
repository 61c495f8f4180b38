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
  resume from, instead of torch's `ProcessExitedException` traceback;
- Ctrl-C / SIGTERM reach the workers once, through the launching process: each worker runs in its
  own process group (so a terminal's Ctrl-C is not delivered to every process at the same time,
  which the workers would take as a second, "exit now" signal), and the launcher forwards each
  signal it gets. The workers agree on a stop step, save and exit (engine/trainer.py); the launcher
  waits for that save and exits with 128 + the signal. torch's spawn already makes a worker whose
  launcher died get SIGINT, so it saves too.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

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
    # they slow each other down. An explicit OMP_NUM_THREADS is the user's choice and is kept.
    threads = os.environ.get("OMP_NUM_THREADS", "")
    share = max(1, (os.cpu_count() or 1) // num_devices_per_machine)
    torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else share)
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


def supervised_worker(local_rank: int, worker: Callable, *args: Any) -> Any:
    """A rank process: in its own process group (signals come from the launcher), then `worker`."""
    os.setpgid(0, 0)
    return worker(local_rank, *args)


SHUTDOWN_GRACE_S = 2.0
"""Seconds the other processes get to stop after one failed, then as many before SIGKILL."""


class RankFailed(UserInputError):
    """A process of a multi-process run died or failed; the message says which, why, and what is saved."""


_LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


def _cause(error: Exception) -> str:
    if isinstance(error, ProcessExitedException):
        if error.signal_name:
            return f"was killed by {error.signal_name}"
        return f"exited with status {error.exit_code}"
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(error).__name__
    if any(phrase in last for phrase in _LOST_PEER):
        return "lost its connection to another process of the run (that process or its machine is gone)"
    if "Timed out" in last or "timed out" in last:
        return "waited longer than --collective-timeout-s for another process of the run (hung or unreachable)"
    return f"raised {last}"


def _stopping_signal(error: Exception) -> Optional[signal.Signals]:
    """The signal an interrupted worker saved and exited on (status 128 + signal), if that is how it ended."""
    code = getattr(error, "exit_code", None)
    for sig in (signal.SIGINT, signal.SIGTERM):
        if code == 128 + sig:
            return sig
    return None


class SupervisedProcesses:
    """torch's ProcessContext for nerfstudio's workers, with a bounded shutdown, one-line failures
    and signals forwarded to the workers."""

    def __init__(self, context: Any, first_rank: int, config: Any) -> None:
        self.context, self.first_rank, self.config = context, first_rank, config
        self.interrupted: Optional[signal.Signals] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)

    def join(self, timeout: Optional[float] = None, grace_period: Optional[float] = None) -> bool:
        """Until every worker ended (or `timeout`): True when all ended cleanly. Raises RankFailed
        for a failed worker, SystemExit(128 + signal) once interrupted workers have saved."""
        with self._forwarding_signals():
            while True:
                try:
                    done = self.context.join(timeout=timeout, grace_period=self._grace(grace_period))
                except (ProcessExitedException, ProcessRaisedException) as error:
                    stopped_by = _stopping_signal(error)
                    if self.interrupted is not None and stopped_by == self.interrupted:
                        raise SystemExit(128 + self.interrupted) from None
                    rank = self.first_rank + error.error_index
                    cause = _cause(error)
                    if stopped_by is not None:  # it saved and stopped, on a signal this launcher never got
                        cause = f"stopped on a {stopped_by.name} that reached another process of the run (another machine)"
                    raise RankFailed(f"rank {rank} {cause}; the run was stopped. {self._resume_hint()}") from None
                if done or timeout is not None:
                    if done and self.interrupted is not None:
                        raise SystemExit(128 + self.interrupted)
                    return done

    def _grace(self, requested: Optional[float]) -> float:
        if requested is not None:
            return requested
        if self.interrupted is not None:  # the others are saving: give them a collective's time
            return float(getattr(self.config, "collective_timeout_s", 300.0))
        return SHUTDOWN_GRACE_S

    @contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        try:
            previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: signals stay with whoever handles them there
            yield
            return
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _forward(self, signum: int, _frame: object) -> None:
        if self.interrupted is None:
            self.interrupted = signal.Signals(signum)
        for process in self.context.processes:
            if process.is_alive():
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    pass

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
        worker = fn if device_type == "cuda" else cpu_worker
        args = (worker, main_func, world_size, per_machine, machine_rank, dist_url, config, timeout, device_type)
        context = SupervisedProcesses(
            original(supervised_worker, args=args, nprocs=nprocs, join=False, daemon=daemon, start_method=start_method),
            first_rank=machine_rank * per_machine,
            config=config,
        )
        if not join:
            return context
        context.join()
        return None

    spawn._distilled_gs_ns_cpu = True  # type: ignore[attr-defined]
    torch.multiprocessing.spawn = spawn
