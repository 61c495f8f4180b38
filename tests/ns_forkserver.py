"""A process that imports nerfstudio once and forks a fresh child for every ns-* command.

Starting an ns-* command costs ~11 s of CPU before it does any work (torch, torchvision through
torch._dynamo, nerfstudio's method registry), and the tests run about sixty of them: most of the
suite's time. Each child here is still a separate process that runs the installed console-script
entry point (`nerfstudio.scripts.train:entrypoint` for ns-train, as found in the package metadata)
with its own argv, output files and exit code; it only skips repeating those imports. Nothing runs
in this process but imports: some of them run a small torch op, so this process keeps torch to one
thread (no OpenMP pool exists to be copied half-alive into a child) and each child takes the
OMP_NUM_THREADS it was given, as a fresh process would. (numpy's and scipy's OpenBLAS start idle
pools at import; OpenBLAS shuts them down around a fork itself.)

Protocol, one JSON line each way on stdin/stdout: request {"argv", "stdout", "stderr"} -> reply
{"pid"} when the child starts, then {"returncode"} when it ends.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from importlib.metadata import entry_points
from typing import Callable, Dict

COMMANDS = ("ns-train", "ns-eval", "ns-export", "ns-viewer", "distilled-gs")


def load_entry_points() -> Dict[str, Callable[[], object]]:
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in COMMANDS}
    missing = set(COMMANDS) - set(scripts)
    if missing:
        raise RuntimeError(f"console scripts not installed: {sorted(missing)}")
    return {name: ep.load() for name, ep in scripts.items()}


def run_child(entrypoint: Callable[[], object], request: dict) -> int:
    """In the forked child: become the command (argv, stdout, stderr) and run it to its exit code."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = list(request["argv"])
    try:
        result = entrypoint()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, (int, type(None))):
            print(exit_.code, file=sys.stderr)
    except BaseException:
        sys.excepthook(*sys.exc_info())  # what the interpreter does with an uncaught exception
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve() -> None:
    import torch

    threads = torch.get_num_threads()  # from OMP_NUM_THREADS
    torch.set_num_threads(1)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the imports print goes to the log, not into the protocol
    commands = load_entry_points()
    if threading.active_count() > 1:
        raise RuntimeError("a thread was started while importing nerfstudio: forking would copy it half-alive")
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        entrypoint = commands[request["argv"][0]]
        pid = os.fork()
        if pid == 0:
            replies.close()
            torch.set_num_threads(threads)
            os._exit(run_child(entrypoint, request))
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
