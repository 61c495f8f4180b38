"""The stages of the Distilled-3DGS recipe, each the nerfstudio commands a user would run.

A stage trains one model (`ns-train`, its own process), exports it (`ns-export gaussian-splat`'s PLY,
and another format, both written as `distilled-gs export` writes them) and evaluates the held-out
views (`ns-eval`), the last two in this process; its result is kept in
`<output>/<name>/result.json`, so running again with the same settings reuses finished stages.
Used by `distilled-gs distill`, `distilled-gs demo` and the benchmarks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from distilled_gs_ns.configs.demo import ShortRun
from distilled_gs_ns.data import DEMO_SCENE
from distilled_gs_ns.export.frames import Frame

BIN = Path(sys.executable).parent
TEACHERS = {
    "teacher": "distilled-3dgs-teacher",
    "teacher-perturbed": "distilled-3dgs-teacher-perturbed",
    "teacher-dropout": "distilled-3dgs-teacher-dropout",
}
TEACHER_KINDS = {"standard": "teacher", "perturbed": "teacher-perturbed", "dropout": "teacher-dropout"}
"""`distilled-gs distill --train-teachers` names -> stage names."""
STUDENT = "distilled-3dgs-student"
MCMC = "distilled-3dgs-mcmc"
PRUNE_FINETUNE = "distilled-3dgs-prune-finetune"


@dataclass
class StageResult:
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
    file_mb: Optional[float] = None
    """Size of the model's file in the run's chosen format (`distilled-gs distill --format`)."""
    resumed: bool = False
    """The training was stopped and resumed from a checkpoint: train_seconds covers the last part only."""
    defaults: Optional[str] = None
    """Fingerprint of the method's default pipeline and model settings when it was trained (see
    `method_defaults`); None for stages recorded before it was kept."""


def method_defaults(method: str) -> str:
    """A fingerprint of `method`'s default pipeline and model settings in this package version, so
    that a stage trained before a default changed is trained again instead of reused (its flags alone
    are the same)."""
    from nerfstudio.plugins.types import MethodSpecification

    from distilled_gs_ns import method_configs

    for spec in vars(method_configs).values():
        if isinstance(spec, MethodSpecification) and spec.config.method_name == method:
            return hashlib.sha1(repr(spec.config.pipeline).encode()).hexdigest()[:16]
    raise KeyError(f"{method} is not a method of this package")


def same_settings(saved: Dict, settings: Dict) -> bool:
    """Whether a stage's recorded settings are `settings`; a record without the defaults'
    fingerprint (written before it was kept) is compared on the rest."""
    if "defaults" not in saved:
        settings = {key: value for key, value in settings.items() if key != "defaults"}
    return saved == settings


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


def train_command(name: str, method: str, output_dir: Path, flags: Sequence[str], parser: Sequence[str], data: Path) -> List[str]:
    """The stage's ns-train command line: the trainer's and model's `flags` before the dataparser
    subcommand (tyro applies every flag to the subcommand before it)."""
    return ["ns-train", method, "--output-dir", str(output_dir), "--experiment-name", name, "--timestamp", "demo",
            *flags, *parser, "--data", str(data)]  # fmt: skip


def _resume_flags(stage_dir: Path, run_dir: Path, settings: Dict) -> List[str]:
    """`--load-dir` of a stage that started with the same settings and was stopped (a session ended,
    a kill) after writing a checkpoint, so that it goes on from there; otherwise the stage starts
    afresh, without the checkpoints of an earlier run with other settings (ns-eval would load the
    newest of them)."""
    started = stage_dir / "started.json"
    checkpoints = run_dir / "nerfstudio_models"
    if started.exists() and same_settings(json.loads(started.read_text()), settings) and any(checkpoints.glob("step-*.ckpt")):
        print(f"\n{stage_dir.name}: resuming the stopped run from its newest checkpoint in {checkpoints}", flush=True)
        return ["--load-dir", str(checkpoints)]
    shutil.rmtree(checkpoints, ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps(settings, indent=2))
    return []


def export_and_evaluate(config: Path, export_dir: Path, metrics_path: Path, renders: Path) -> None:
    """The run's PLY and `ns-eval`, in this process, without two interpreter start-ups (about 10 s of
    imports each on 2 cores) per stage. The PLY is `ns-export gaussian-splat`'s file, byte for byte,
    written by `distilled-gs export` (tests/test_cli_export.py), which needs no open3d (not on the
    GPU machine, docs/gpu.md); ns-eval is the class its command runs, with the same arguments."""
    from nerfstudio.scripts.eval import ComputePSNR

    from distilled_gs_ns.export.writer import export_run, resolve_format

    ply = export_dir / "splat.ply"
    print(f"\n$ distilled-gs export --load-config {config} --format ply --output {ply}   (in process)", flush=True)
    print(export_run(config, resolve_format("ply"), ply).line(), flush=True)
    print(f"\n$ ns-eval --load-config {config} --output-path {metrics_path} --render-output-path {renders}   (in process)", flush=True)
    ComputePSNR(load_config=config, output_path=metrics_path, render_output_path=renders).main()


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
) -> StageResult:
    """Train `method` on `data` (the demo scene by default), export its PLY, evaluate the held-out
    views (renders kept).

    `schedule` replaces the ShortRun flags of `steps`; `parser` selects and configures the dataparser
    (e.g. `colmap --downscale-factor 2`). A stage that already finished with the same steps, device,
    flags, data and method defaults (`method_defaults`) is not run again; one that was stopped
    part-way goes on from its newest checkpoint.
    """
    stage_dir = output_dir / name
    saved = stage_dir / "result.json"
    flags = [*(schedule or []), *extra, *parser]
    settings = {"steps": steps, "device": device, "flags": flags, "data": str(data), "defaults": method_defaults(method)}
    if saved.exists():
        result = StageResult(**json.loads(saved.read_text()))
        recorded = {"steps": result.steps, "device": result.device, "flags": result.flags, "data": result.data}
        if result.defaults is not None:
            recorded["defaults"] = result.defaults
        if same_settings(recorded, settings) and Path(result.config).exists():
            print(f"\n{name}: finished earlier ({saved}), reused")
            return result
    run_dir = stage_dir / method / "demo"
    resume = _resume_flags(stage_dir, run_dir, settings)
    start = time.perf_counter()
    _run(train_command(name, method, output_dir, [*(schedule or ShortRun(steps, device).flags()), *extra, *resume], parser, data),
         output_dir / f"{name}-train.log")  # fmt: skip
    train_seconds = time.perf_counter() - start
    config = run_dir / "config.yml"
    export_dir = stage_dir / "export"
    metrics_path = stage_dir / "eval.json"
    export_and_evaluate(config, export_dir, metrics_path, stage_dir / "renders")
    metrics = json.loads(metrics_path.read_text())["results"]
    ply = export_dir / "splat.ply"
    result = StageResult(
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
        resumed=bool(resume),
        defaults=settings["defaults"],
    )
    saved.write_text(json.dumps(asdict(result), indent=2))
    return result


def teacher_stages(kinds: Sequence[str]) -> Dict[str, str]:
    """Stage name -> method of the teachers of `kinds` (TEACHER_KINDS), in training order."""
    wanted = {TEACHER_KINDS[kind] for kind in kinds}
    return {name: method for name, method in TEACHERS.items() if name in wanted}


def student_stage(teacher_configs: Sequence[str]) -> Tuple[str, List[str]]:
    """The student's method and flags: the three teachers, in the demo's order, and the defaults."""
    return STUDENT, ["--pipeline.teachers", *teacher_configs]


def same_budget_stages(teacher_config: str, budget: int) -> Dict[str, Tuple[str, List[str]]]:
    """Method and flags of every model trained at the student's Gaussian count, in training order.

    - baseline: standard 3DGS whose count is capped at the budget (as many seeds as the budget,
      densification never beyond it); the importance steps then have nothing to remove.
    - baseline-pruned: the student's capped-growth-and-importance recipe without teachers (the
      importance it was measured with: the plain blending weight; consensus is measured only for
      the teacher start).
    - mcmc: 3DGS-MCMC capped at the budget (from as many of the seeds as the cap).
    - prune-finetune: the standard teacher pruned to the budget by importance, then fine-tuned.
    """
    count = str(budget)
    no_teachers = ["--pipeline.model.initialisation", "seeds", "--pipeline.model.prune-rounds", "0",
                   "--pipeline.model.kd-weight", "0", "--pipeline.model.structure-weight", "0",
                   "--pipeline.model.importance", "blending"]  # fmt: skip
    return {
        "baseline": (STUDENT, [*no_teachers, "--pipeline.model.max-gaussians", count,
                               "--pipeline.model.growth-cap", "1", "--pipeline.model.num-random", count]),
        "baseline-pruned": (STUDENT, [*no_teachers, "--pipeline.model.max-gaussians", count]),
        "mcmc": (MCMC, ["--pipeline.model.max-gaussians", count]),
        "prune-finetune": (PRUNE_FINETUNE, ["--pipeline.teachers", teacher_config, "--pipeline.model.max-gaussians", count]),
    }  # fmt: skip


def format_table(results: Sequence[StageResult], file_format: str = "ply") -> str:
    extra = file_format != "ply" and any(r.file_mb is not None for r in results)
    head = "| model | Gaussians | PLY MB |" + (f" {file_format} MB |" if extra else "") + " PSNR | SSIM | LPIPS | render FPS | train s |"
    rows = [head, "|" + "---|" * head.count(" |")]
    for r in results:
        lpips = f"{r.lpips:.3f}" if r.lpips is not None else "n/a (offline)"
        fps = f"{r.render_fps:.0f}" if r.render_fps is not None else "-"
        file_mb = (f" {r.file_mb:.3f} |" if r.file_mb is not None else " - |") if extra else ""
        rows.append(
            f"| {r.name} | {r.gaussians} | {r.ply_mb:.2f} |{file_mb} {r.psnr:.2f} | {r.ssim:.3f} | {lpips} | {fps} | {r.train_seconds:.0f} |"
        )
    return "\n".join(rows)


def bar_margins(teacher: StageResult, student: StageResult, peers: Dict[str, StageResult]) -> Dict[str, float]:
    """The student's margins (positive: the student is ahead), by PSNR, against the teacher and each
    same-budget model."""
    margins = {
        "student_fraction_of_teacher": student.gaussians / teacher.gaussians,
        "psnr_vs_teacher_db": student.psnr - teacher.psnr,
    }
    margins.update({f"psnr_vs_{name}_db": student.psnr - peer.psnr for name, peer in peers.items()})
    return margins


def export_file(result: StageResult, output_dir: Path, fmt: str, frame: Frame = "dataparser") -> Path:
    """The stage's model in `fmt` and `frame` (the dataparser-frame PLY is the stage's own); written
    once (in this process, as `distilled-gs export` does), kept with the stage. Capture-frame files
    are called splat.capture.<suffix>."""
    if fmt == "ply" and frame == "dataparser":
        return Path(result.config).parent.parent.parent / "export" / "splat.ply"
    from distilled_gs_ns.export.writer import export_run, resolve_format

    chosen = resolve_format(fmt)
    path = output_dir / result.name / "export" / f"splat{'.capture' if frame == 'capture' else ''}{chosen.suffix}"
    if not path.exists() or path.stat().st_mtime < Path(result.config).stat().st_mtime:
        print(f"\n$ distilled-gs export --load-config {result.config} --format {fmt} --frame {frame} --output {path}", flush=True)
        print(export_run(Path(result.config), chosen, path, frame=frame).line(), flush=True)
    return path


def file_teacher_stage(path: Path, frame: Frame) -> Tuple[str, List[str]]:
    """A splat file as the teacher row: a run of no steps whose model is the file's Gaussians (all of
    them: prune-and-fine-tune started at the file's own count, every SH band rendered from step 0),
    so that ns-eval, ns-export, ns-viewer and the peers treat it like a trained teacher."""
    from distilled_gs_ns.pipelines.splat_file_teacher import read_header

    count = read_header(path).count
    return PRUNE_FINETUNE, ["--max-num-iterations", "0", "--pipeline.teachers", str(path), "--pipeline.teacher-frame", frame,
                            "--pipeline.model.max-gaussians", str(count)]  # fmt: skip
