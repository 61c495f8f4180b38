"""A user's splat file as the teacher: "my splat + my capture -> a file N times smaller", measured.

Per scene, the standard teacher that benchmarks/bench_real_student.py trained (its stage folder under
`--runs`) stands in for the user's file: it is exported in the capture's own frame
(`distilled-gs export --frame capture`, as the reference 3DGS code would have written it), and then
one command, `distilled-gs distill --teachers <file> --peers prune-finetune mcmc --format spz`, makes
the student at 12% and the same-budget peers from that file alone. The table gives the file's own
held-out quality (the teacher row, which must equal the run it came from: the import's frame and SH
rotation on a real capture) and every model's SPZ size.

Usage: python benchmarks/bench_file_teacher.py --scenes demo lego-200 mouse-240 [--steps 3000]
       [--runs bench_outputs/real_student] [--out docs/results/file-teacher]
Writes OUT/<scene>.md and OUT/summary.md; every distill stage is kept and reused (resumable).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from bench_real_student import bench_scene, write_scene
from real_scenes import SCENES

from distilled_gs_ns.cli.distill import Distill, run_distill

ROOT = Path(__file__).resolve().parents[1]


def user_file(teacher_config: Path, output: Path) -> Path:
    """The trained teacher as the user's file: a PLY in the capture's frame."""
    if not output.exists() or output.stat().st_mtime < teacher_config.stat().st_mtime:
        output.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "distilled-gs"), "export", "--load-config", str(teacher_config),
                        "--output", str(output), "--frame", "capture"], check=True)  # fmt: skip
    return output


def bench(name: str, args: argparse.Namespace) -> Dict:
    scene = bench_scene(name, args.runs / "scenes", args.sources)
    source = json.loads((args.runs / name / "teacher" / "result.json").read_text())
    file = user_file(Path(source["config"]), (args.work / name / "user-file" / "scene.ply").resolve())
    output_dir = (args.work / name / "distill").resolve()
    run_distill(
        Distill(data=scene.data, dataparser=scene.dataparser, dataparser_flags=scene.dataparser_flags, output_dir=output_dir,
                steps=args.steps, teachers=(file,), peers=("prune-finetune", "mcmc"), format="spz"),  # type: ignore[arg-type]
        scaled_for_demo_scene=scene.synthetic, scene_name=name,
    )  # fmt: skip
    rows = {r["name"]: r for r in json.loads((output_dir / "results.json").read_text())["results"]}
    record = {"scene": name, "steps": args.steps, "file": str(file), "file_bytes": file.stat().st_size,
              "source_run_psnr": source["psnr"], "rows": rows}  # fmt: skip
    write_scene(args.out, name, record, scene_table(record))
    return record


def scene_table(record: Dict) -> str:
    rows = record["rows"]
    teacher = rows["teacher"]
    user_mb = record["file_bytes"] / 1e6
    lines = [f"{record['scene']}, {record['steps']} steps; the user's file: {teacher['gaussians']} Gaussians, PLY "
             f"{user_mb:.2f} MB (the run it was exported from scores {record['source_run_psnr']:.2f} dB held out)",
             "", "| model | Gaussians | SPZ MB | x smaller than the PLY | PSNR | SSIM | vs the file, dB |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in rows.items():
        label = "the file (teacher row)" if name == "teacher" else name
        lines.append(f"| {label} | {row['gaussians']} | {row['file_mb']:.3f} | {user_mb / row['file_mb']:.0f} "
                     f"| {row['psnr']:.2f} | {row['ssim']:.3f} | {row['psnr'] - teacher['psnr']:+.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=["demo", "lego-200", "mouse-240"], choices=[*SCENES, "demo", "lego-200"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--runs", type=Path, default=Path("bench_outputs/real_student"),
                        help="bench_real_student.py's runs (the teachers standing in for users' files)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("bench_outputs/file_teacher"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/file-teacher")
    parser.add_argument("--sources", type=Path, nargs="+", default=[Path("/work/.mirror"), Path("bench_outputs/sources")])
    args = parser.parse_args()
    for name in args.scenes:
        bench(name, args)
    records: List[Dict] = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]  # every scene so far
    summary = "\n\n".join(scene_table(r) for r in records)
    (args.out / "summary.md").write_text(summary + "\n")
    print("\n" + summary)


if __name__ == "__main__":
    main()
