"""distilled-gs-ns: nerfstudio methods for compact (Distilled-3DGS) and large-scene (Momentum-GS) splats.

Importing the package (nerfstudio does, to discover the methods) only registers four small things:
numpy scalars as safe for torch's weights-only checkpoint loader, eval-time checkpoint loading with
one-line errors for broken files (engine/checkpoint_files.py), a handler that prints this package's
`UserInputError`s as one-line messages, and CPU (gloo) process groups for nerfstudio's
multi-process launcher.
"""

from distilled_gs_ns.compat.checkpoints import allow_nerfstudio_checkpoints
from distilled_gs_ns.compat.cpu_processes import allow_cpu_process_groups
from distilled_gs_ns.engine.checkpoint_files import install_eval_loading
from distilled_gs_ns.errors import install_cli_excepthook

__version__ = "0.1.0"

allow_nerfstudio_checkpoints()
allow_cpu_process_groups()
install_eval_loading()
install_cli_excepthook()
