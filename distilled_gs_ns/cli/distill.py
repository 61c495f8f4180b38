"""`distilled-gs distill`: the whole Distilled-3DGS recipe on a user's data, in one command.

Trains the three teachers (or takes trained ones), distils the student from them, trains the
same-budget peers the user picks (what they could use instead, at the student's Gaussian count),
exports every model (PLY, and the chosen format), evaluates the held-out views with ns-eval and ends
with one table and a labelled side-by-side image. Each stage runs ns-train, then ns-export's and ns-eval's code in process, and is
kept: running again with the same settings resumes after the last finished stage.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Literal, Optional, Tuple

from distilled_gs_ns.configs.demo import ShortRun
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.frames import Frame

Peer = Literal["mcmc", "prune-finetune", "baseline", "baseline-pruned"]
TeacherKind = Literal["standard", "perturbed", "dropout"]
FULL_SCHEDULE_STEPS = 30000
"""The methods' own schedule (splatfacto's) is for this many steps."""


@dataclass
class Distill:
    """Teachers -> student -> peers on your data: exported, evaluated, one table and a side-by-side image."""

    data: Path
    """The scene (a nerfstudio, Blender or COLMAP folder, as --dataparser reads it)."""
    dataparser: Literal["nerfstudio-data", "blender-data", "colmap"] = "nerfstudio-data"
    """nerfstudio's dataparser for --data."""
    dataparser_flags: str = ""
    """More flags of the dataparser, quoted and after '=', e.g. --dataparser-flags="--downscale-factor 2"."""
    output_dir: Path = Path("distill_outputs")
    """Where runs, files, logs and the table go."""
    steps: int = FULL_SCHEDULE_STEPS
    """Training steps of every model. 30000 runs the methods' own (splatfacto's) schedule; any other
    count scales the densification, SH and resolution schedules to it, as the demo does."""
    device: Optional[Literal["cpu", "cuda"]] = None
    """Default: cuda if available, else cpu."""
    format: Literal["ply", "spz", "compressed-ply"] = "spz"
    """File format every model is also exported in (docs/export.md); the PLY is always written."""
    peers: Tuple[Peer, ...] = ("mcmc", "prune-finetune")
    """Same-budget models trained beside the student: 3DGS-MCMC capped at its count, the standard
    teacher pruned to it and fine-tuned, 3DGS capped at it, the student's recipe without teachers."""
    teachers: Tuple[Path, ...] = ()
    """Already trained teachers instead of training them here, the standard one first: config.yml of
    ns-train runs, or your own splat file (.ply, .spz, compressed .ply) of this capture. With a file
    no teacher is trained; its row in the table is the file itself on the held-out views."""
    teacher_frame: Frame = "capture"
    """World frame of a splat file in --teachers: 'capture' (COLMAP's; the reference 3DGS code and
    most tools) or 'dataparser' (what ns-export gaussian-splat writes)."""
    export_frame: Optional[Frame] = None
    """Frame of the --format files: 'capture' or 'dataparser' (nerfstudio's, as ns-export). Default:
    the frame of the splat file in --teachers, so the student lines up with it; else 'dataparser'.
    Each stage's splat.ply is always nerfstudio's frame (ns-export's file)."""
    train_teachers: Tuple[TeacherKind, ...] = ("standard", "perturbed", "dropout")
    """Which teachers to train when --teachers is not given. The standard one is always needed (it is
    the student's start and budget reference); the perturbed and dropout teachers only label."""
    student_flags: str = ""
    """More ns-train flags for the student, quoted and after '=', e.g.
    --student-flags="--pipeline.model.max-megabytes 2 --pipeline.model.export-format spz"."""
    fresh: bool = False
    """Retrain every stage instead of reusing finished ones."""

    def main(self) -> None:
        run_distill(self)


def schedule_flags(steps: int, device: str) -> List[str]:
    """ns-train flags of the run length: the methods' own schedule at 30000 steps, else scaled."""
    if steps == FULL_SCHEDULE_STEPS:
        return ["--machine.device-type", device, "--vis", "tensorboard"]
    return ShortRun(steps, device, background_color=None, num_random=None).flags()


def run_distill(options: Distill, scaled_for_demo_scene: bool = False, scene_name: str = "the scene") -> None:
    """Run every stage of `options`; `scaled_for_demo_scene`: the demo's schedule (white background,
    random seeds) for any step count."""
    import torch

    from distilled_gs_ns.cli.side_by_side import side_by_side
    from distilled_gs_ns.cli.stages import (
        STUDENT, TEACHERS, bar_margins, export_file, file_teacher_stage, format_table, same_budget_stages,
        teacher_stages, train_and_report,
    )  # fmt: skip
    from distilled_gs_ns.metrics.render_speed import render_fps
    from distilled_gs_ns.pipelines.splat_file_teacher import is_splat_file, read_header

    if options.steps < 30:
        raise UserInputError("--steps must be at least 30")
    data = options.data.resolve()
    if not data.exists():
        raise UserInputError(f"no scene at {data} (--data)")
    if "standard" not in options.train_teachers:
        raise UserInputError("--train-teachers must include standard: the student starts from the standard teacher")
    for teacher in options.teachers:
        if not teacher.is_file():
            raise UserInputError(
                f"no teacher at {teacher}: --teachers takes config.yml files of finished ns-train runs or splat files"
            )
    files = [t.resolve() for t in options.teachers if is_splat_file(t)]
    for file in files:
        read_header(file)  # its one-line checks before any stage runs
    if files and not is_splat_file(options.teachers[0]):
        raise UserInputError("a splat file in --teachers is the standard teacher: give it first")
    export_frame: Frame = options.export_frame or (options.teacher_frame if files else "dataparser")
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    output_dir = options.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if options.fresh:
        for name in [*TEACHERS, "student", "mcmc", "prune-finetune", "baseline", "baseline-pruned"]:
            (output_dir / name / "result.json").unlink(missing_ok=True)
    schedule = None if scaled_for_demo_scene else schedule_flags(options.steps, device)  # None: the demo's ShortRun
    parser = [options.dataparser, *shlex.split(options.dataparser_flags)]
    if parser == ["nerfstudio-data"]:
        parser = []  # the methods' default dataparser; keeps the demo's finished stages reusable

    def stage(name: str, method: str, extra: List[str] = ()):  # type: ignore[assignment]
        result = train_and_report(name, method, output_dir, options.steps, device, extra, data=data, schedule=schedule, parser=parser)
        result.file_mb = export_file(result, output_dir, options.format, export_frame).stat().st_size / 1e6
        return result

    frame_flags = ["--pipeline.teacher-frame", options.teacher_frame] if files else []
    if files:
        results = [stage("teacher", *file_teacher_stage(files[0], options.teacher_frame))]
        teacher_configs = [str(t.resolve()) for t in options.teachers]
        print(f"teachers: {', '.join(teacher_configs)} (the splat file is the standard teacher, in the {options.teacher_frame} frame)")
    elif options.teachers:
        teacher_configs = [str(t.resolve()) for t in options.teachers]
        results = []
        print(f"teachers: {', '.join(teacher_configs)} (trained earlier)")
    else:
        results = [stage(name, method) for name, method in teacher_stages(options.train_teachers).items()]
        teacher_configs = [r.config for r in results]
    student = stage("student", STUDENT, ["--pipeline.teachers", *teacher_configs, *frame_flags, *shlex.split(options.student_flags)])
    budget_stages = same_budget_stages(teacher_configs[0], student.gaussians)
    with_frame = {name: (method, [*flags, *frame_flags] if "--pipeline.teachers" in flags else flags)
                  for name, (method, flags) in budget_stages.items()}  # fmt: skip
    peers = {name: stage(name, *with_frame[name]) for name in options.peers}
    results += [student, *peers.values()]
    print("\nmeasuring render speed on the held-out views ...", flush=True)
    for result in results:
        result.render_fps = render_fps(Path(result.config))

    by_name = {r.name: r for r in results}
    panels = [name for name in ("teacher", "student") if name in by_name]
    external = [peers[name] for name in ("mcmc", "prune-finetune") if name in peers]
    if external:
        panels.append(max(external, key=lambda r: r.psnr).name)
    if "baseline" in peers:
        panels.append("baseline")
    side_by_side(
        [(f"{name}\n{by_name[name].psnr:.2f} dB, {by_name[name].gaussians} Gaussians", output_dir / name / "renders")
         for name in panels],
        ground_truth=output_dir / "student" / "renders",
        output=output_dir / "side_by_side.png",
    )  # fmt: skip
    table = format_table(results, options.format)
    summary = f"student: {student.gaussians} Gaussians"
    if "teacher" in by_name:
        margins = bar_margins(by_name["teacher"], student, peers)
        versus = "".join(f", {margins[f'psnr_vs_{name}_db']:+.2f} dB vs {name}" for name in peers)
        summary = (
            f"student: {margins['student_fraction_of_teacher']:.1%} of the standard teacher's Gaussians; "
            f"PSNR {margins['psnr_vs_teacher_db']:+.2f} dB vs the teacher" + (f"; at the same count{versus}" if peers else "")
        )
    else:
        margins = {f"psnr_vs_{name}_db": student.psnr - peer.psnr for name, peer in peers.items()}
    (output_dir / "results.json").write_text(json.dumps({"results": [asdict(r) for r in results], "bar": margins}, indent=2))
    (output_dir / "results.md").write_text(f"{table}\n\n{summary}\n\nside_by_side.png: ground truth, {', '.join(panels)} (held-out view 0)\n")
    print(f"\nHeld-out views of {scene_name}:\n{table}\n\n{summary}")
    print(f"\nfiles: {output_dir}/*/export/; side_by_side.png and results.* in {output_dir}")
