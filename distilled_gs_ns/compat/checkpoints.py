"""Let nerfstudio 1.1.5 checkpoints load under torch >= 2.6.

torch 2.6 made `torch.load(weights_only=True)` the default, and nerfstudio 1.1.5 calls `torch.load`
without the argument (trainer `--load-dir`, and `eval_setup` behind ns-viewer, ns-export, ns-eval).
Its checkpoints hold numpy scalars (scheduler learning rates computed with numpy), which the safe
unpickler rejects. Allow-listing numpy's scalar reconstructor and dtypes keeps the safe loader and
lets those files load; nothing else is widened.
"""

from __future__ import annotations

import importlib
from typing import List

import numpy as np
import torch


def _numpy_safe_globals() -> List[object]:
    found: List[object] = [np.dtype]
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, "scalar"):
            found.append(module.scalar)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found.extend(getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType"))
    return found


def allow_nerfstudio_checkpoints() -> None:
    """Register numpy scalar types as safe for `torch.load(weights_only=True)` (no-op on old torch)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:
        add(_numpy_safe_globals())
