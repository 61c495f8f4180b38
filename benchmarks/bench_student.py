"""Distilled-3DGS on the demo scene: the demo's table as JSON, plus the student's per-step cost.

Runs (or reuses, when finished with the same settings) the demo's stages: three teachers, the
student and the same-budget baseline, each through the real ns-train / ns-export / ns-eval. Then
compares the student's per-step training time with the baseline's over the steps where both hold
the same number of Gaussians (after the final tail drop; nerfstudio's own per-step timer, from each
run's tensorboard events), and times the trained student in process with and without its
distillation terms on the same view, which isolates what distillation adds to a step (target
<= 1.1x: pseudo-labels are cached, not rendered per step).

With `--variants`, the ablation students of VARIANTS are trained for the same steps as well; with
`--mcmc-variants`, the MCMC peers of MCMC_VARIANTS (at the student's count unless they say otherwise).

With `--budgets F [F ...]`, the demo's student is also trained at each budget (a fraction of the
standard teacher's Gaussians): how the gap to the teacher closes as the budget grows; with
`--budget-steps N`, those students train for N steps (teachers unchanged).

Usage: python benchmarks/bench_student.py [--steps 3000] [--runs DIR] [--out PATH] [--variants [NAME ...]] [--mcmc-variants]
       [--budgets F [F ...]] [--budget-steps N] [--seeds K ...] [--prune-finetune-like VARIANT ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List

from tensorboard_events import scalars



PAPER = ["--pipeline.model.initialisation", "seeds", "--pipeline.model.prune-rounds", "0",
         "--pipeline.model.kd-weight", "1", "--pipeline.model.structure-weight", "1"]  # fmt: skip
"""The paper's student: seeds, capped growth, importance sampling and tail drop, fused labels and the
structure loss (the default before progressive pruning won)."""

G32 = ["--pipeline.model.structure-resolution", "32"]
"""The 32^3 structure grid that the demo's paper-recipe student used."""

PRUNED_START = ["--pipeline.model.prune-rounds", "0", "--pipeline.model.densify", "False"]
"""Prune-and-fine-tune's start (the teacher's most important Gaussians, one cut, no densification)."""

STANDARD = ["--pipeline.teacher-weights", "1", "0", "0"]
"""Labels from the standard teacher alone (the perturbed and dropout teachers are 2-4 dB worse)."""

JITTER_PV = ["--pipeline.pseudo-views", "87", "--pipeline.pseudo-view-sampling", "jitter"]
"""One pseudo-view per training view, its position jittered (5% of the cameras' spread)."""

BETWEEN_PV = ["--pipeline.pseudo-views", "87", "--pipeline.pseudo-view-sampling", "between"]
"""One pseudo-view per training view, between it and one of its 4 nearest."""

SH1_SAME_BYTES = ["--pipeline.model.sh-degree", "1", "--pipeline.model.max-megabytes", "{student_mb}"]
"""SH degree 1 (23 instead of 59 PLY floats per Gaussian) with the default student's PLY size as budget."""

VARIANTS = {
    "paper-g32": [*PAPER, *G32],
    "ablate-paper-defaults": [*PAPER, "--pipeline.model.structure-resolution", "128"],
    "ablate-paper-budget-grid": PAPER,
    "ablate-no-structure": [*PAPER, "--pipeline.model.structure-weight", "0"],
    "ablate-no-kd": [*PAPER, "--pipeline.model.kd-weight", "0"],
    "ablate-teacher-init-g32": [*PAPER, *G32, "--pipeline.model.initialisation", "teacher"],
    "ablate-pv-no-structure": [*PAPER, "--pipeline.model.structure-weight", "0", *JITTER_PV],
    "ablate-growth-cap-4": [*PAPER, *G32, "--pipeline.model.growth-cap", "4"],
    "ablate-sample-early": [*PAPER, *G32, "--pipeline.model.sample-at", "0.35", "--pipeline.model.prune-tail-at", "0.5"],
    "ablate-standard-teacher-label": [*PAPER, *G32, "--pipeline.teacher-weights", "1", "0", "0"],
    "pf-kd-fused": [*PRUNED_START, "--pipeline.model.kd-weight", "1"],
    "pf-kd-standard": [*PRUNED_START, "--pipeline.model.kd-weight", "1", "--pipeline.teacher-weights", "1", "0", "0"],
    "pf-kd-standard-pv": [*PRUNED_START, "--pipeline.model.kd-weight", "1", *STANDARD, *JITTER_PV],
    "progressive-kd": ["--pipeline.model.kd-weight", "1"],
    "progressive-kd-structure-g32": ["--pipeline.model.kd-weight", "1", "--pipeline.model.structure-weight", "1", *G32],
    "progressive-structure": ["--pipeline.model.structure-weight", "1"],
    "progressive-early": ["--pipeline.model.sample-at", "0.35", "--pipeline.model.prune-tail-at", "0.5"],
    "progressive-kd-standard-pv": ["--pipeline.model.kd-weight", "1", *STANDARD, *JITTER_PV],
    "depth-0.1": ["--pipeline.model.depth-weight", "0.1"],
    "depth-1": ["--pipeline.model.depth-weight", "1"],
    "pv-between-standard": [*STANDARD, *BETWEEN_PV],
    "pv-between-fused": BETWEEN_PV,
    "pv-between-standard-every-2": [*STANDARD, *BETWEEN_PV, "--pipeline.pseudo-view-every", "2"],
    "pv-between-standard-depth-0.1": [*STANDARD, *BETWEEN_PV, "--pipeline.model.depth-weight", "0.1"],
    "sh1-same-bytes": [*SH1_SAME_BYTES],
    "sh1-same-bytes-pv-standard": [*SH1_SAME_BYTES, *STANDARD, *BETWEEN_PV],
    "sh0-same-bytes": ["--pipeline.model.sh-degree", "0", "--pipeline.model.max-megabytes", "{student_mb}"],
    "sh2-same-bytes": ["--pipeline.model.sh-degree", "2", "--pipeline.model.max-megabytes", "{student_mb}"],
    "sh0-same-bytes-pv-standard": ["--pipeline.model.sh-degree", "0", "--pipeline.model.max-megabytes", "{student_mb}",
                                   *STANDARD, *BETWEEN_PV],
    "paper-mini-splatting": [*PAPER, "--pipeline.model.densification", "mini-splatting"],
    "mcmc-from-top-budget": ["--pipeline.model.prune-rounds", "0", "--pipeline.model.densification", "mcmc"],
}  # fmt: skip
"""Students beside the default (progressive pruning of the whole standard teacher, 10 rounds until
half the run, no labels, no structure loss). The paper's recipe with the demo's former 32^3 grid,
with 128^3 and with the budget-derived grid; each of its loss terms removed; its initialisation
from the teacher; pseudo-views (one jittered camera per training view, one step in four); 4x instead
of 2x growth before the importance sampling; the budget reached earlier (sampling at 35%, tail at
50%); the standard teacher's render alone as the label. Prune-and-fine-tune's start with the
teachers' labels added (fused, the standard teacher's alone, and with pseudo-views). The default
with the fused labels, with labels and the structure loss, with the structure loss on the budget
grid, with its rounds ending at 35% of the run, and with the standard teacher's labels at
pseudo-views. Then the default with: the teachers' fused depth as a label (two weights); pseudo-views
between neighbouring training views labelled by the standard teacher or the fused teachers (one step
in four, or in two; with depth); a lower SH degree (0, 1, 2) at the default student's file
size, with and without its colour distilled at pseudo-views; the paper's recipe with Mini-Splatting-style
densification (the official code's); MCMC relocation at the budget from the teacher's most
important Gaussians. Placeholder: {student_mb}, the default student's PLY size in MB."""


MCMC_VARIANTS = {
    "mcmc-stop-5of6": ["--pipeline.model.stop-split-at", "{five_sixths}"],
    "mcmc-refine-every-20": ["--pipeline.model.stop-split-at", "{five_sixths}", "--pipeline.model.refine-every", "20"],
    "mcmc-refine-20-init-scale-1": ["--pipeline.model.stop-split-at", "{five_sixths}", "--pipeline.model.refine-every", "20",
                                    "--pipeline.model.init-scale", "1.0"],
    "mcmc-grow-from-800": ["--pipeline.model.stop-split-at", "{five_sixths}", "--pipeline.model.num-random", "800"],
    "mcmc-no-reg": ["--pipeline.model.stop-split-at", "{five_sixths}", "--pipeline.model.num-random", "800",
                    "--pipeline.model.opacity-reg", "0", "--pipeline.model.scale-reg", "0"],
    "mcmc-at-teacher-count": ["--pipeline.model.stop-split-at", "{five_sixths}", "--pipeline.model.max-gaussians", "{teacher}"],
}  # fmt: skip
"""MCMC beside the demo's (relocation every steps/30 until 2/3 of the run): gsplat's 5/6, more
frequent relocation, larger seeds, growth from fewer seeds, no regularisers, and the teacher's count
(is it the method or the cap?). Placeholders: {five_sixths} of the steps, the {teacher}'s count."""


def compare_step_times(student_dir: Path, baseline_dir: Path, from_step: int) -> Dict[str, float]:
    student, baseline = scalars(student_dir, "Train Iter (time)"), scalars(baseline_dir, "Train Iter (time)")
    steps: List[int] = sorted(s for s in student if s >= from_step and s in baseline)
    student_ms = statistics.median(student[s] for s in steps) * 1e3
    baseline_ms = statistics.median(baseline[s] for s in steps) * 1e3
    counts_s = scalars(student_dir, "Train Metrics Dict/gaussian_count")
    counts_b = scalars(baseline_dir, "Train Metrics Dict/gaussian_count")
    return {
        "from_step": from_step,
        "steps_compared": len(steps),
        "student_ms": student_ms,
        "baseline_ms": baseline_ms,
        "ratio": student_ms / baseline_ms,
        "student_gaussians": counts_s[max(counts_s)],
        "baseline_gaussians": counts_b[max(counts_b)],
    }


def distillation_overhead(config: Path, repeats: int = 40) -> Dict[str, float]:
    """Forward + loss + backward of the trained student, with and without its distillation terms.

    Same Gaussians, same view: the difference is exactly what distillation adds to a step (the
    loss against the cached label and the structure loss). Comparing whole runs instead mixes in
    layout effects: two models with the same count but different Gaussian sizes rasterise at
    different speeds.
    """
    import time

    import torch
    from nerfstudio.utils.eval_utils import eval_setup

    from distilled_gs_ns.losses.structure import StructureLoss
    from distilled_gs_ns.models.student import budget_resolution

    _, pipeline, _, step = eval_setup(config, test_mode="test")
    model = pipeline.model
    model.train()
    model.step = step
    camera, batch = pipeline.datamanager.next_train(0)
    structure = StructureLoss(model.means.detach(), model.config.structure_resolution or budget_resolution(model.num_points))
    label = batch["image"].clone()  # stands in for the cached pseudo-label (same size and dtype)

    def timed(distil: bool) -> float:
        model.structure_loss = structure if distil else None
        data = dict(batch, pseudo_label=label) if distil else dict(batch)
        start = time.perf_counter()
        outputs = model.get_outputs(camera)
        loss = sum(model.get_loss_dict(outputs, data).values())
        loss.backward()
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        return elapsed

    times: Dict[bool, List[float]] = {False: [], True: []}
    with torch.enable_grad():
        for i in range(repeats + 2):
            for distil in (False, True):
                t = timed(distil)
                if i >= 2:
                    times[distil].append(t)
    plain, distilled = statistics.median(times[False]) * 1e3, statistics.median(times[True]) * 1e3
    return {"gaussians": model.num_points, "plain_ms": plain, "distilled_ms": distilled, "ratio": distilled / plain}


def budget_sweep(fractions: List[float], summary: Dict, runs: Path, steps: int) -> List[Dict]:
    """The demo's student at each budget; its PSNR against the standard teacher's (bar: within 0.5 dB).

    With `steps` other than the teachers', the stage names say so: the schedule is the other
    suspect when the gap stays at every budget.
    """
    from distilled_gs_ns.cli.stages import STUDENT, train_and_report

    teacher = summary["results"][0]
    teachers = [r["config"] for r in summary["results"][:3]]
    rows = []
    for fraction in fractions:
        flags = ["--pipeline.teachers", *teachers, "--pipeline.model.target-fraction", f"{fraction:g}"]
        name = f"student-budget-{fraction:g}" + ("" if steps == teacher["steps"] else f"-{steps}-steps")
        result = train_and_report(name, STUDENT, runs, steps, teacher["device"], flags)
        rows.append({**asdict(result), "fraction": result.gaussians / teacher["gaussians"],
                     "psnr_vs_teacher_db": result.psnr - teacher["psnr"]})  # fmt: skip
    print(f"\n| budget | student steps | Gaussians | % of teacher | PSNR | vs teacher (dB, {teacher['steps']} steps) |")
    print("|---|---|---|---|---|---|")
    for fraction, row in zip(fractions, rows):
        print(
            f"| {fraction:g} | {steps} | {row['gaussians']} | {100 * row['fraction']:.1f} | {row['psnr']:.2f} "
            f"| {row['psnr_vs_teacher_db']:+.2f} |"
        )
    return rows


def seed_repeats(seeds: List[int], models: List[str], summary: Dict, runs: Path, steps: int) -> Dict[str, Dict[str, float]]:
    """`models` (the student, same-budget models or VARIANTS) again with other seeds (teachers stay
    seed 0's): stages `<name>-seed<k>`, and per model the PSNR of each seed, their mean and spread.
    A variant's seed 0 is its own stage (trained here if missing)."""
    from distilled_gs_ns.cli.stages import STUDENT, same_budget_stages, student_stage, train_and_report

    by_name = {r["name"]: r for r in summary["results"]}
    device, data = by_name["teacher"]["device"], Path(by_name["teacher"]["data"])
    teachers = [by_name[name]["config"] for name in ("teacher", "teacher-perturbed", "teacher-dropout")]
    stages = {"student": student_stage(teachers), **same_budget_stages(teachers[0], by_name["student"]["gaussians"])}
    fill = {"student_mb": f"{by_name['student']['ply_mb']:.6f}"}
    stages.update({name: (STUDENT, ["--pipeline.teachers", *teachers, *(f.format(**fill) for f in VARIANTS[name])])
                   for name in models if name in VARIANTS})  # fmt: skip
    stages = {name: stage for name, stage in stages.items() if name in models}
    psnrs: Dict[str, List[float]] = {name: [] for name in stages}
    for seed in seeds:
        for name, (method, flags) in stages.items():
            if seed == 0 and name in by_name:
                psnrs[name].append(by_name[name]["psnr"])
                continue
            if seed == 0:  # a variant, trained (or reused) exactly as --variants does
                row = train_and_report(name, method, runs, steps, device, flags, data=data)
            else:
                row = train_and_report(f"{name}-seed{seed}", method, runs, steps, device, [*flags, "--machine.seed", str(seed)], data=data)
            psnrs[name].append(row.psnr)
    table = {
        name: {"seeds": seeds, "psnr": values, "mean": statistics.mean(values),
               "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        for name, values in psnrs.items()
    }  # fmt: skip
    print("\n| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row["psnr"]) + f" | {row['mean']:.2f} | {row['std']:.2f} |")
    return table


def prune_finetune_like(variants: List[str], summary: Dict, runs: Path, steps: int) -> List[Dict]:
    """Prune-and-fine-tune at each trained variant's Gaussian count and SH degree (stages
    `prune-finetune-like-<variant>`): is a variant's gain over the default its own, or that of the
    size it was given? (A lower SH degree at the same file size holds more Gaussians.)"""
    from distilled_gs_ns.cli.stages import PRUNE_FINETUNE, train_and_report

    by_name = {r["name"]: r for r in summary["results"]}
    rows = []
    for name in variants:
        variant = json.loads((runs / name / "result.json").read_text())
        flags = variant["flags"]
        sh = flags[flags.index("--pipeline.model.sh-degree") + 1] if "--pipeline.model.sh-degree" in flags else "3"
        peer = train_and_report(
            f"prune-finetune-like-{name}", PRUNE_FINETUNE, runs, steps, by_name["teacher"]["device"],
            ["--pipeline.teachers", by_name["teacher"]["config"], "--pipeline.model.max-gaussians", str(variant["gaussians"]),
             "--pipeline.model.sh-degree", sh],
            data=Path(by_name["teacher"]["data"]),
        )  # fmt: skip
        rows.append({"variant": name, "variant_psnr": variant["psnr"], "peer": asdict(peer), "margin_db": variant["psnr"] - peer.psnr})
    print("\n| variant | Gaussians | PLY MB | PSNR | prune-finetune, same count and SH degree | margin |\n|---|---|---|---|---|---|")
    for row in rows:
        peer = row["peer"]
        print(f"| {row['variant']} | {peer['gaussians']} | {peer['ply_mb']:.2f} | {row['variant_psnr']:.2f} | {peer['psnr']:.2f} | {row['margin_db']:+.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--runs", type=Path, default=Path("demo_outputs"), help="demo output folder (reused)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/student.json"))
    parser.add_argument("--variants", nargs="*", default=None, metavar="NAME",
                        help="also train these students of VARIANTS (no names: all of them)")
    parser.add_argument("--mcmc-variants", action="store_true", help="also train the MCMC peers of MCMC_VARIANTS")
    parser.add_argument("--budgets", type=float, nargs="+", default=[], help="also train the student at these target fractions")
    parser.add_argument("--budget-steps", type=int, default=None, help="steps of the --budgets students (default: --steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the student and the same-budget models (0 is the demo's run); e.g. 0 1 2")
    parser.add_argument("--seed-models", nargs="+", default=["student", "prune-finetune", "baseline-pruned"],
                        help="which models --seeds repeats (the rows within 0.5 dB of the student; VARIANTS names too)")
    parser.add_argument("--data", type=Path, default=None, help="another nerfstudio-format scene (default: the demo's)")
    parser.add_argument("--prune-finetune-like", nargs="+", default=[], metavar="VARIANT",
                        help="also train prune-and-fine-tune at these trained variants' count and SH degree")
    args = parser.parse_args()
    if any(not 0 < f <= 1 for f in args.budgets):
        parser.error("--budgets takes fractions in (0, 1]")

    from distilled_gs_ns.cli.stages import STUDENT, format_table, train_and_report
    from distilled_gs_ns.cli.demo import main as demo

    demo(["--steps", str(args.steps), "--output-dir", str(args.runs), *(["--data", str(args.data)] if args.data else [])])
    summary = json.loads((args.runs / "results.json").read_text())
    if args.seeds != [0]:
        summary["seeds"] = seed_repeats(args.seeds, args.seed_models, summary, args.runs.resolve(), args.steps)
    if args.variants is not None:
        unknown = sorted(set(args.variants) - set(VARIANTS))
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
        chosen = {name: VARIANTS[name] for name in (args.variants or VARIANTS)}
        fill = {"student_mb": f"{next(r for r in summary['results'] if r['name'] == 'student')['ply_mb']:.6f}"}
        chosen = {name: [flag.format(**fill) for flag in flags] for name, flags in chosen.items()}
        device = summary["results"][0]["device"]
        teachers = [r["config"] for r in summary["results"][:3]]
        rows = [
            train_and_report(name, STUDENT, args.runs.resolve(), args.steps, device, ["--pipeline.teachers", *teachers, *flags],
                             data=Path(summary["results"][0]["data"]))
            for name, flags in chosen.items()
        ]
        summary["variants"] = [asdict(r) for r in rows]
        print("\nStudent variants:\n" + format_table(rows))
    if args.mcmc_variants:
        from distilled_gs_ns.cli.stages import MCMC

        device = summary["results"][0]["device"]
        counts = {r["name"]: r["gaussians"] for r in summary["results"]}
        fill = {"five_sixths": str(5 * args.steps // 6), "teacher": str(counts["teacher"])}
        rows = [
            train_and_report(name, MCMC, args.runs.resolve(), args.steps, device,
                             ["--pipeline.model.max-gaussians", str(counts["student"]), *(f.format(**fill) for f in flags)],
                             data=Path(summary["results"][0]["data"]))
            for name, flags in MCMC_VARIANTS.items()
        ]  # fmt: skip
        summary["mcmc_variants"] = [asdict(r) for r in rows]
        print("\nMCMC variants:\n" + format_table(rows))
    if args.prune_finetune_like:
        summary["prune_finetune_like"] = prune_finetune_like(args.prune_finetune_like, summary, args.runs.resolve(), args.steps)
    if args.budgets:
        summary["budgets"] = budget_sweep(args.budgets, summary, args.runs.resolve(), args.budget_steps or args.steps)
    from distilled_gs_ns.models.student import StudentModelConfig

    tail_step = round(StudentModelConfig().prune_tail_at * args.steps) + 1  # counts are final from here
    runs = {r["name"]: Path(r["config"]).parent for r in summary["results"]}
    timing = compare_step_times(runs["student"], runs["baseline"], tail_step)
    overhead = distillation_overhead(runs["student"] / "config.yml")
    result = {"demo": summary, "step_time": timing, "distillation_overhead": overhead}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        "\n| per-step time (median, steps >= {from_step}) | student | baseline | ratio |\n|---|---|---|---|\n"
        "| ms ({student_gaussians:.0f} vs {baseline_gaussians:.0f} Gaussians) | {student_ms:.1f} | {baseline_ms:.1f} "
        "| {ratio:.2f}x |".format(**timing)
    )
    print(
        "\n| same student, same view | without distillation terms | with | ratio |\n|---|---|---|---|\n"
        "| fwd+loss+bwd ms ({gaussians} Gaussians) | {plain_ms:.1f} | {distilled_ms:.1f} | {ratio:.2f}x |".format(**overhead)
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
