"""Every method on every real-capture shape, through the real ns-train / ns-export / ns-eval.

Captures (copies of the demo scene, distilled_gs_ns/data/captures.py; all with the demo's 13
held-out views):
- opencv: nerfstudio-data, OpenCV lens (k1, k2, p1, p2), two odd image sizes, no point cloud;
- fisheye: nerfstudio-data, OpenCV fisheye lens (k1..k4), two odd image sizes, no point cloud;
- colmap-bin: binary COLMAP model, OpenCV lens, two odd sizes, 2000 points on the object's surface;
- colmap-txt-no-points: text COLMAP model, pinhole, an empty points3D (random seeds);
- downscale-2: the opencv capture read from images_2/ with `--downscale-factor 2`.
Methods: the three teachers, the student distilled from that capture's three teachers, and
momentum-gs (2x2 blocks). Each finished run is kept and reused when the benchmark is run again with
the same settings, so the matrix can be grown over several sittings.

Usage: python benchmarks/bench_real_captures.py [--steps 1000] [--runs DIR] [--out PATH]
       [--captures NAME ...] [--methods NAME ...]
Writes PATH (JSON) and PATH with .md (the table).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from distilled_gs_ns.cli.stages import STUDENT, TEACHERS, StageResult, train_and_report
from distilled_gs_ns.configs.demo import ShortMomentumRun
from distilled_gs_ns.data.captures import Crop, colmap_capture, nerfstudio_capture

PINHOLE = (Crop(100, 100, 50.0, 50.0),)
CAPTURES: Dict[str, Tuple[Callable[[Path], Path], List[str]]] = {
    "opencv": (lambda d: nerfstudio_capture(d, lens="opencv"), []),
    "fisheye": (lambda d: nerfstudio_capture(d, lens="fisheye"), []),
    "colmap-bin": (lambda d: colmap_capture(d, lens="opencv", ext=".bin", num_points=2000), ["colmap"]),
    "colmap-txt-no-points": (
        lambda d: colmap_capture(d, lens="pinhole", crops=PINHOLE, ext=".txt", num_points=None),
        ["colmap"],
    ),
    "downscale-2": (
        lambda d: nerfstudio_capture(d, lens="opencv", downscales=(2,)),
        ["nerfstudio-data", "--downscale-factor", "2"],
    ),
}
"""Name -> (builder writing the capture into a folder, dataparser arguments)."""
METHODS = (*TEACHERS, "student", "momentum-gs")


def capture_folder(runs: Path, name: str) -> Path:
    """The capture, written once (a finished folder carries a marker file)."""
    folder = runs / "data" / name
    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        CAPTURES[name][0](folder)
        marker.touch()
    return folder


def run_capture(name: str, methods: Sequence[str], runs: Path, steps: int) -> List[Dict]:
    data = capture_folder(runs, name)
    parser = CAPTURES[name][1]
    output = runs / name
    output.mkdir(parents=True, exist_ok=True)
    rows: List[Dict] = []

    def stage(label: str, method: str, extra: Sequence[str] = (), schedule=None) -> Optional[StageResult]:
        try:
            result = train_and_report(label, method, output, steps, "cpu", extra, data=data, schedule=schedule, parser=parser)
        except SystemExit as failure:  # one failed cell must not end the matrix
            rows.append({"capture": name, "model": label, "error": str(failure)})
            return None
        rows.append({"capture": name, "model": label, **asdict(result)})
        return result

    # The student needs all three teachers of its capture.
    wanted = TEACHERS if "student" in methods else {k: v for k, v in TEACHERS.items() if k in methods}
    teachers = [stage(label, method) for label, method in wanted.items()]
    if "student" in methods and all(teachers):
        configs = [result.config for result in teachers if result is not None]
        stage("student", STUDENT, ["--pipeline.teachers", *configs])
    if "momentum-gs" in methods:
        stage("momentum-gs", "momentum-gs", schedule=ShortMomentumRun(steps, steps_per_block=max(steps // 8, 1)).flags())
    return rows


def table(rows: Sequence[Dict]) -> str:
    lines = ["| capture | model | Gaussians | PSNR | SSIM | train s |", "|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['capture']} | {row['model']} | failed: {row['error']} | | | |")
        else:
            lines.append(
                f"| {row['capture']} | {row['model']} | {row['gaussians']} | {row['psnr']:.2f} | {row['ssim']:.3f} "
                f"| {row['train_seconds']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--runs", type=Path, default=Path("bench_outputs/real_captures"))
    parser.add_argument("--out", type=Path, default=Path("bench_outputs/real_captures.json"))
    parser.add_argument("--captures", nargs="+", choices=list(CAPTURES), default=list(CAPTURES))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()
    rows: List[Dict] = []
    for name in args.captures:
        rows += run_capture(name, args.methods, args.runs, args.steps)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))
        args.out.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
