"""Let nerfstudio's own launcher start CPU process groups (`--machine.device-type cpu`).

nerfstudio 1.1.5's `ns-train` spawns one worker per device with `torch.multiprocessing.spawn`, and
its worker asserts that CUDA is available before it creates the process group, although it picks
gloo for CPU itself. This shim swaps in a worker that does the same set-up without the CUDA
asserts, only when nerfstudio's worker is spawned for a non-CUDA device; CUDA runs are untouched.
It patches `torch.multiprocessing.spawn` (looked up by nerfstudio at call time) because
`nerfstudio.scripts.train` is still being imported when plugins are discovered, so its own
functions cannot be replaced from here.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing

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


def allow_cpu_process_groups() -> None:
    """Install the spawn wrapper once per process."""
    original = torch.multiprocessing.spawn
    if getattr(original, "_distilled_gs_ns_cpu", False):
        return

    def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
        is_nerfstudio_worker = (getattr(fn, "__module__", None), getattr(fn, "__name__", None)) == _NERFSTUDIO_WORKER
        if is_nerfstudio_worker and args and args[-1] != "cuda":
            fn = cpu_worker
        return original(fn, args=args, nprocs=nprocs, join=join, daemon=daemon, start_method=start_method)

    spawn._distilled_gs_ns_cpu = True  # type: ignore[attr-defined]
    torch.multiprocessing.spawn = spawn
