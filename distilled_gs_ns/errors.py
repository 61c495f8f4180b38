"""User-facing errors: a one-line message on the command line instead of a traceback.

Code of this package raises `UserInputError` for problems the user can fix (a missing data folder,
a deleted checkpoint, settings that make training diverge). `install_cli_excepthook` makes an
uncaught `UserInputError` print just its message; every other exception keeps Python's normal report.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Dict, Optional, Tuple, Type


class UserInputError(RuntimeError):
    """Something the user asked for cannot work; the message says what and how to fix it."""


def check_model_settings(config: object, rules: Dict[str, Tuple[bool, str]]) -> None:
    """Refuse the first model setting whose rule fails: {field: (holds, "what it must be")}."""
    for name, (holds, rule) in rules.items():
        if not holds:
            raise UserInputError(f"pipeline.model.{name} must be {rule}, got {getattr(config, name)}")


def _hook(previous):
    def excepthook(exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
        if isinstance(exc, UserInputError):
            print(f"\nerror: {exc}", file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    excepthook._distilled_gs_ns = True  # type: ignore[attr-defined]
    return excepthook


def install_cli_excepthook() -> None:
    """Print `UserInputError`s as plain messages; idempotent, leaves other exceptions alone."""
    if not getattr(sys.excepthook, "_distilled_gs_ns", False):
        sys.excepthook = _hook(sys.excepthook)
