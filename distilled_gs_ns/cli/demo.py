"""The demo: the whole Distilled-3DGS recipe on the scene shipped in the package.

Trains the three teachers, distils the student from them, trains what a user could pick instead at
the student's Gaussian count (3DGS-MCMC capped at it; the standard teacher pruned to it by
importance and fine-tuned) and two same-budget baselines without distillation (3DGS capped at the
student's count, and the student's budget recipe without teachers), exports every model to a PLY
and evaluates the held-out views. Every stage runs the real
nerfstudio command (`ns-train`, `ns-export gaussian-splat`, `ns-eval`), exactly as a user would,
so the demo also proves the plugin works end to end. Finished stages are kept: running the demo
again with the same settings resumes after the last finished stage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from distilled_gs_ns.configs.demo import ShortRun
from distilled_gs_ns.data import DEMO_SCENE
from distilled_gs_ns.metrics.render_speed import render_fps

BIN = Path(sys.executable).parent
TEACHERS = {
    "teacher": "distilled-3dgs-teacher",
    "teacher-perturbed": "distilled-3dgs-teacher-perturbed",
    "teacher-dropout": "distilled-3dgs-teacher-dropout",
}
STUDENT = "distilled-3dgs-student"
MCMC = "distilled-3dgs-mcmc"
PRUNE_FINETUNE = "distilled-3dgs-prune-finetune"


@dataclass
class DemoResult:
    name: str
    method: str
    gaussians: int
    ply_mb: float
    psnr: float
    ssim: float
    lpips: Optional[float]
    train_seconds: float
    steps: int
    device: str
    flags: List[str]
    config: str
    data: str = str(DEMO_SCENE)
    render_fps: Optional[float] = None
    """Held-out views rendered per second (measured after all stages, not cached)."""


def _run(args: Sequence[str], log: Path) -> None:
    """Run an ns-* command; its progress goes to the terminal and to `log`."""
    print(f"\n$ {' '.join(args)}", flush=True)
    with log.open("w") as handle:
        proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            handle.write(line)
        if proc.wait() != 0:
            raise SystemExit(f"error: {args[0]} failed (exit {proc.returncode}); its output is in {log}")


def train_and_report(
    name: str,
    method: str,
    output_dir: Path,
    steps: int,
    device: str,
    extra: Sequence[str] = (),
    data: Path = DEMO_SCENE,
    schedule: Optional[Sequence[str]] = None,
    parser: Sequence[str] = (),
) -> DemoResult:
    """Train `method` on `data` (the demo scene by default), export its PLY, evaluate the held-out
    views (renders kept).

    `schedule` replaces the ShortRun flags of `steps`; `parser` selects and configures the dataparser
    (e.g. `colmap --downscale-factor 2`). A stage that already finished with the same steps, device,
    flags and data is not run again.
    """
    stage_dir = output_dir / name
    saved = stage_dir / "result.json"
    flags = [*(schedule or []), *extra, *parser]
    if saved.exists():
        result = DemoResult(**json.loads(saved.read_text()))
        same = (result.steps, result.device, result.flags, result.data) == (steps, device, flags, str(data))
        if same and Path(result.config).exists():
            print(f"\n{name}: finished earlier ({saved}), reused")
            return result
    run_dir = stage_dir / method / "demo"
    start = time.perf_counter()
    _run(
        [
            "ns-train", method, "--output-dir", str(output_dir), "--experiment-name", name, "--timestamp", "demo",
            *(schedule or ShortRun(steps, device).flags()), *extra, *parser, "--data", str(data),
        ],
        output_dir / f"{name}-train.log",
    )  # fmt: skip
    train_seconds = time.perf_counter() - start
    config = run_dir / "config.yml"
    export_dir = stage_dir / "export"
    _run(
        ["ns-export", "gaussian-splat", "--load-config", str(config), "--output-dir", str(export_dir)],
        output_dir / f"{name}-export.log",
    )
    metrics_path = stage_dir / "eval.json"
    _run(
        [
            "ns-eval", "--load-config", str(config), "--output-path", str(metrics_path),
            "--render-output-path", str(stage_dir / "renders"),
        ],
        output_dir / f"{name}-eval.log",
    )  # fmt: skip
    metrics = json.loads(metrics_path.read_text())["results"]
    ply = export_dir / "splat.ply"
    result = DemoResult(
        name=name,
        method=method,
        gaussians=int(metrics["gaussian_count"]),
        ply_mb=ply.stat().st_size / 1e6,
        psnr=metrics["psnr"],
        ssim=metrics["ssim"],
        lpips=metrics.get("lpips"),
        train_seconds=train_seconds,
        steps=steps,
        device=device,
        flags=flags,
        config=str(config),
        data=str(data),
    )
    saved.write_text(json.dumps(asdict(result), indent=2))
    return result


def student_stage(teacher_configs: Sequence[str]) -> Tuple[str, List[str]]:
    """The student's method and flags: the three teachers, in the demo's order, and the defaults."""
    return STUDENT, ["--pipeline.teachers", *teacher_configs]


def same_budget_stages(teacher_config: str, budget: int) -> Dict[str, Tuple[str, List[str]]]:
    """Method and flags of every model trained at the student's Gaussian count, in training order.

    - baseline: standard 3DGS whose count is capped at the budget (as many seeds as the budget,
      densification never beyond it); the importance steps then have nothing to remove.
    - baseline-pruned: the student's capped-growth-and-importance recipe without teachers.
    - mcmc: 3DGS-MCMC capped at the budget (from as many of the seeds as the cap).
    - prune-finetune: the standard teacher pruned to the budget by importance, then fine-tuned.
    """
    count = str(budget)
    no_teachers = ["--pipeline.model.initialisation", "seeds", "--pipeline.model.prune-rounds", "0",
                   "--pipeline.model.kd-weight", "0", "--pipeline.model.structure-weight", "0"]  # fmt: skip
    return {
        "baseline": (STUDENT, [*no_teachers, "--pipeline.model.max-gaussians", count,
                               "--pipeline.model.growth-cap", "1", "--pipeline.model.num-random", count]),
        "baseline-pruned": (STUDENT, [*no_teachers, "--pipeline.model.max-gaussians", count]),
        "mcmc": (MCMC, ["--pipeline.model.max-gaussians", count]),
        "prune-finetune": (PRUNE_FINETUNE, ["--pipeline.teachers", teacher_config, "--pipeline.model.max-gaussians", count]),
    }  # fmt: skip


def format_table(results: Sequence[DemoResult]) -> str:
    rows = ["| model | Gaussians | PLY MB | PSNR | SSIM | LPIPS | render FPS | train s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lpips = f"{r.lpips:.3f}" if r.lpips is not None else "n/a (offline)"
        fps = f"{r.render_fps:.0f}" if r.render_fps is not None else "-"
        rows.append(
            f"| {r.name} | {r.gaussians} | {r.ply_mb:.2f} | {r.psnr:.2f} | {r.ssim:.3f} | {lpips} | {fps} | {r.train_seconds:.0f} |"
        )
    return "\n".join(rows)


def bar_margins(teacher: DemoResult, student: DemoResult, peers: Dict[str, DemoResult]) -> Dict[str, float]:
    """The student's margins (positive: the student is ahead), by PSNR, against the teacher and each
    same-budget model."""
    margins = {
        "student_fraction_of_teacher": student.gaussians / teacher.gaussians,
        "psnr_vs_teacher_db": student.psnr - teacher.psnr,
    }
    margins.update({f"psnr_vs_{name}_db": student.psnr - peer.psnr for name, peer in peers.items()})
    return margins


def side_by_side(sources: Dict[str, Path], output: Path, view: int = 0) -> None:
    """One held-out view: ground truth, then each model's render, left to right.

    ns-eval's `--render-output-path` writes [ground truth | render] per view; the ground truth is
    taken from the first source.
    """
    import numpy as np
    from PIL import Image

    panels = []
    for index, folder in enumerate(sources.values()):
        image = np.asarray(Image.open(folder / f"eval_img_{view:04d}.png").convert("RGB"))
        half = image.shape[1] // 2
        if index == 0:
            panels.append(image[:, :half])
        panels.append(image[:, half:])
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    strip = [panels[0]]
    for panel in panels[1:]:
        strip += [gap, panel]
    Image.fromarray(np.concatenate(strip, axis=1)).save(output)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("demo_outputs"), help="where runs, PLYs and logs go")
    parser.add_argument("--steps", type=int, default=3000, help="training steps of every model (default 3000)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--fresh", action="store_true", help="retrain every stage instead of reusing finished ones")
    parser.add_argument(
        "--data", type=Path, default=DEMO_SCENE,
        help="another scene in nerfstudio format (e.g. the 200 px lego of scripts/make_demo_scene.py --size 200)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.steps < 30:
        parser.error("--steps must be at least 30")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for name in [*TEACHERS, "student", "mcmc", "prune-finetune", "baseline", "baseline-pruned"]:
            (output_dir / name / "result.json").unlink(missing_ok=True)
    data = args.data.resolve()
    if not (data / "transforms.json").exists():
        parser.error(f"{data} has no transforms.json: --data takes a scene in nerfstudio's format")
    print(f"Scene: {data} (see ATTRIBUTION.txt there: Lego model by Heinzelnisse, CC-BY 3.0)")

    results: List[DemoResult] = [
        train_and_report(name, method, output_dir, args.steps, device, data=data) for name, method in TEACHERS.items()
    ]
    teacher = results[0]
    teacher_configs = [r.config for r in results]
    method, flags = student_stage(teacher_configs)
    student = train_and_report("student", method, output_dir, args.steps, device, flags, data=data)
    same_budget = {
        name: train_and_report(name, method, output_dir, args.steps, device, flags, data=data)
        for name, (method, flags) in same_budget_stages(teacher.config, student.gaussians).items()
    }
    baseline, pruned = same_budget["baseline"], same_budget["baseline-pruned"]
    mcmc, prune_finetune = same_budget["mcmc"], same_budget["prune-finetune"]
    results += [student, mcmc, prune_finetune, baseline, pruned]
    print("\nmeasuring render speed on the held-out views ...", flush=True)
    for result in results:
        result.render_fps = render_fps(Path(result.config))
    peers = {"mcmc": mcmc, "prune-finetune": prune_finetune, "baseline": baseline, "baseline-pruned": pruned}
    best_peer = max((mcmc, prune_finetune), key=lambda r: r.psnr)

    panels = (teacher, student, best_peer, baseline)
    side_by_side({r.name: output_dir / r.name / "renders" for r in panels}, output_dir / "side_by_side.png")
    margins = bar_margins(teacher, student, peers)
    table = format_table(results)
    versus = ", ".join(f"{margins[f'psnr_vs_{name}_db']:+.2f} dB vs {name}" for name in peers)
    summary = (
        f"student: {margins['student_fraction_of_teacher']:.1%} of the standard teacher's Gaussians; "
        f"PSNR {margins['psnr_vs_teacher_db']:+.2f} dB vs the teacher; at the same count {versus}"
    )
    (output_dir / "results.json").write_text(
        json.dumps({"results": [asdict(r) for r in results], "bar": margins}, indent=2)
    )
    (output_dir / "results.md").write_text(
        f"{table}\n\n{summary}\n\nside_by_side.png: ground truth, "
        + ", ".join(r.name for r in panels)
        + " (held-out view 0)\n"
    )
    print("\nHeld-out views of the demo scene:\n" + table + "\n\n" + summary)
    print(f"\nPLYs: {output_dir}/*/export/splat.ply; side_by_side.png and results.* in {output_dir}")


def entrypoint() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()


if __name__ == "__main__":
    entrypoint()
