"""Checkpoint files that survive crashes, and one clear line when one did not.

nerfstudio 1.1.5 writes `step-N.ckpt` in place with `torch.save` and then deletes every other
checkpoint, so a crash or a full disk during a save can leave a run whose only checkpoint is cut
short; loading it ends in a long traceback from torch's zip reader. Here:
- `save_atomically` writes to a hidden temporary file in the same folder, flushes it to disk and
  renames it into place (a rename within one filesystem is atomic), so `step-N.ckpt` is either
  complete or absent;
- `read_checkpoint` turns every way a file can be unreadable into a `CheckpointError` naming the
  file and what is wrong;
- `checkpoints_in` lists only finished checkpoints (nerfstudio's own listing parses every file name
  in the folder and breaks on anything else).
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Tuple

import torch

from distilled_gs_ns.errors import UserInputError

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
PARTIAL_PREFIX = ".partial-"
REQUIRED_KEYS = ("step", "pipeline")
LOAD_ERRORS = (RuntimeError, KeyError, ValueError, IndexError, TypeError, AttributeError)
"""What applying a readable checkpoint to a model it does not fit raises (state_dict mismatches)."""


class CheckpointError(UserInputError):
    """A checkpoint file that cannot be used; the message names the file and the reason."""


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:09d}.ckpt"


def checkpoints_in(folder: Path) -> List[Tuple[int, Path]]:
    """(step, path) of every finished checkpoint in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / name) for name in os.listdir(folder) if (m := CHECKPOINT_NAME.match(name))]
    return sorted(found)


def save_atomically(state: Dict[str, Any], path: Path) -> None:
    """Write `state` to `path` so that a crash at any moment leaves either the complete file or none."""
    write_atomically(path, lambda handle: torch.save(state, handle))


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Let `write` fill a hidden temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f"{PARTIAL_PREFIX}{path.name}"
    try:
        with open(partial, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_stale_partials(folder: Path) -> List[Path]:
    """Delete temporary files a crashed save left behind; returns them."""
    stale = sorted(folder.glob(f"{PARTIAL_PREFIX}*")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """The checkpoint's contents, or a `CheckpointError` saying why the file cannot be read."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    size = path.stat().st_size
    try:
        state = torch.load(path, map_location="cpu")
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({size} bytes; torch could not read it: {reason}). "
            "A crash or a full disk during a save leaves such a file; delete it to use an older checkpoint."
        ) from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a nerfstudio checkpoint (no {', '.join(missing)} in it)")
    return state


def mismatch_error(path: Path, error: BaseException, method: str) -> CheckpointError:
    """The one line for a readable checkpoint whose tensors do not fit the run's model."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CheckpointError(
        f"checkpoint {path} does not match this run's model ({method}): {reason[:300]}. "
        "Is it another method's or another scene's checkpoint?"
    )


def load_for_eval(config: Any, pipeline: Any) -> Tuple[Path, int]:
    """nerfstudio's `eval_load_checkpoint` (ns-viewer, ns-export, ns-eval) with one-line errors.

    The newest finished checkpoint (or `load_step`'s) is loaded; a corrupt one is named together
    with the newest older one, which the user can keep by deleting the broken file.
    """
    folder = Path(config.load_dir)
    found = checkpoints_in(folder)
    if config.load_step is None:
        if not found:
            raise CheckpointError(f"no checkpoint (step-*.ckpt) in {folder}")
        step, path = found[-1]
    else:
        step, path = int(config.load_step), checkpoint_path(folder, int(config.load_step))
    try:
        state = read_checkpoint(path)
    except CheckpointError as error:
        older = [p.name for s, p in found if s < step]
        hint = f" (the newest older checkpoint is {older[-1]})" if older else ""
        raise CheckpointError(f"{error}{hint}") from None
    try:
        pipeline.load_pipeline(state["pipeline"], state["step"])
    except LOAD_ERRORS as error:
        raise mismatch_error(path, error, getattr(config, "method_name", "?")) from None
    print(f"Done loading checkpoint from {path}")
    return path, step


def install_eval_loading() -> None:
    """Route nerfstudio's eval-time checkpoint loading through `load_for_eval` (idempotent).

    nerfstudio imports this package while `eval_utils` itself is still being imported (its imports
    discover the methods), and the rest of that module would then overwrite the patch. So it is
    applied only to a fully imported module; `SplatTrainerConfig` calls this again when `eval_setup`
    sets `load_dir`, just before the checkpoint is loaded.
    """
    eval_utils = sys.modules.get("nerfstudio.utils.eval_utils")
    if eval_utils is None:
        import nerfstudio.utils.eval_utils as eval_utils
    if hasattr(eval_utils, "eval_setup"):  # defined after eval_load_checkpoint: the module is complete
        eval_utils.eval_load_checkpoint = load_for_eval
