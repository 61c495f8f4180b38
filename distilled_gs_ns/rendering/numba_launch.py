"""Running numba's parallel kernels next to PyTorch: one thread budget, one launch at a time."""

from __future__ import annotations

import threading

import numba
import numpy as np
import torch
from torch import Tensor

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}

# One parallel launch at a time per process: numba's workqueue threading layer (the fallback when
# neither TBB nor OpenMP is available) aborts on concurrent parallel launches, e.g. a viewer thread
# rendering while the trainer steps.
_LAUNCH_LOCK = threading.Lock()


def as_numpy(t: Tensor) -> np.ndarray:
    """A CPU tensor's data as a NumPy array (a view when it is already contiguous)."""
    return t.detach().contiguous().numpy()


def launch(kernel, *args, chunksize: int = 0) -> None:
    """Run a kernel with as many threads as torch may use, so that processes given one torch thread
    each do not oversubscribe the cores. `chunksize=1` hands out loop iterations one at a time (for
    loops over uneven work such as tiles sorted most crowded first); 0 keeps numba's static split.

    Numba's OpenMP threading layer shares libgomp with torch, and starting its thread pool sets the
    OpenMP thread count that torch reads back as its own; torch's setting is restored afterwards.
    """
    torch_threads = torch.get_num_threads()
    with _LAUNCH_LOCK:
        numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            with numba.parallel_chunksize(chunksize):
                kernel(*args)
        finally:
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)
