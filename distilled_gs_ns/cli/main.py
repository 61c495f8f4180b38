"""`distilled-gs`: the package's own commands, as tyro subcommands in nerfstudio's style."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import tyro
from typing_extensions import Annotated

from distilled_gs_ns.cli.demo import Demo
from distilled_gs_ns.cli.distill import Distill
from distilled_gs_ns.cli.export import Export
from distilled_gs_ns.errors import install_cli_excepthook

Commands = Union[
    Annotated[Distill, tyro.conf.subcommand(name="distill")],
    Annotated[Export, tyro.conf.subcommand(name="export")],
    Annotated[Demo, tyro.conf.subcommand(name="demo")],
]


def main(argv: Optional[Sequence[str]] = None) -> None:
    tyro.cli(Commands, args=argv, prog="distilled-gs").main()


def entrypoint() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    install_cli_excepthook()
    main()


if __name__ == "__main__":
    entrypoint()
