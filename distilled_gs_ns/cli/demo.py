"""`distilled-gs demo`: `distilled-gs distill` on the scene shipped in the package.

The three teachers, the student distilled from them, what a user could pick instead at the student's
Gaussian count (3DGS-MCMC capped at it; the standard teacher pruned to it by importance and
fine-tuned) and two same-budget baselines without distillation (3DGS capped at the student's count,
and the student's budget recipe without teachers), all with the demo's short schedule; every stage
is trained by ns-train and exported and evaluated by ns-export's and ns-eval's own code, so the demo
also proves the plugin works end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

from distilled_gs_ns.cli.distill import Distill, run_distill
from distilled_gs_ns.data import DEMO_SCENE
from distilled_gs_ns.errors import UserInputError


@dataclass
class Demo:
    """The whole Distilled-3DGS recipe on the scene shipped in the package (teachers, student, the
    student's same-budget peers), trained with ns-train, exported and evaluated by ns-export's and ns-eval's code; prints the table."""

    output_dir: Path = Path("demo_outputs")
    """Where runs, PLYs and logs go."""
    steps: int = 3000
    """Training steps of every model."""
    device: Optional[Literal["cpu", "cuda"]] = None
    """Default: cuda if available, else cpu."""
    fresh: bool = False
    """Retrain every stage instead of reusing finished ones."""
    data: Path = DEMO_SCENE
    """Another scene in nerfstudio format (e.g. the 200 px lego of scripts/make_demo_scene.py --size 200)."""

    def main(self) -> None:
        run_demo(self)


def main(argv: Optional[Sequence[str]] = None) -> None:
    import tyro

    tyro.cli(Demo, args=argv, prog="distilled-gs demo").main()


def run_demo(args: Demo) -> None:
    data = args.data.resolve()
    if not (data / "transforms.json").exists():
        raise UserInputError(f"{data} has no transforms.json: --data takes a scene in nerfstudio's format")
    print(f"Scene: {data} (see ATTRIBUTION.txt there: Lego model by Heinzelnisse, CC-BY 3.0)", flush=True)
    options = Distill(
        data=data, output_dir=args.output_dir, steps=args.steps, device=args.device, format="ply",
        peers=("mcmc", "prune-finetune", "baseline", "baseline-pruned"), fresh=args.fresh,
    )  # fmt: skip
    run_distill(options, scaled_for_demo_scene=True, scene_name="the demo scene")
