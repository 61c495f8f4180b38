"""The demo: train a splat on the scene shipped in the package, export it, report quality and size.

Every stage runs the real nerfstudio command (`ns-train`, `ns-export gaussian-splat`, `ns-eval`),
exactly as a user would, so the demo also proves the plugin works end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from distilled_gs_ns.configs.demo import ShortRun
from distilled_gs_ns.data import DEMO_SCENE

BIN = Path(sys.executable).parent


@dataclass
class DemoResult:
    method: str
    gaussians: int
    ply_mb: float
    psnr: float
    ssim: float
    lpips: Optional[float]
    train_seconds: float


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


def train_and_report(method: str, output_dir: Path, steps: int, device: str, extra: Sequence[str] = ()) -> DemoResult:
    """Train `method` on the demo scene, export the PLY, evaluate the held-out views."""
    name = method
    run_dir = output_dir / name / method / "demo"
    start = time.perf_counter()
    _run(
        [
            "ns-train", method, "--data", str(DEMO_SCENE), "--output-dir", str(output_dir),
            "--experiment-name", name, "--timestamp", "demo", *ShortRun(steps, device).flags(), *extra,
        ],
        output_dir / f"{name}-train.log",
    )
    train_seconds = time.perf_counter() - start
    export_dir = output_dir / name / "export"
    _run(
        ["ns-export", "gaussian-splat", "--load-config", str(run_dir / "config.yml"), "--output-dir", str(export_dir)],
        output_dir / f"{name}-export.log",
    )
    metrics_path = output_dir / name / "eval.json"
    _run(
        ["ns-eval", "--load-config", str(run_dir / "config.yml"), "--output-path", str(metrics_path)],
        output_dir / f"{name}-eval.log",
    )
    results = json.loads(metrics_path.read_text())["results"]
    ply = export_dir / "splat.ply"
    return DemoResult(
        method=method,
        gaussians=_ply_vertex_count(ply),
        ply_mb=ply.stat().st_size / 1e6,
        psnr=results["psnr"],
        ssim=results["ssim"],
        lpips=results.get("lpips"),
        train_seconds=train_seconds,
    )


def _ply_vertex_count(path: Path) -> int:
    from plyfile import PlyData

    return len(PlyData.read(str(path))["vertex"].data)


def format_table(results: List[DemoResult]) -> str:
    rows = ["| method | Gaussians | PLY MB | PSNR | SSIM | LPIPS | train s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lpips = f"{r.lpips:.3f}" if r.lpips is not None else "n/a (offline)"
        rows.append(
            f"| {r.method} | {r.gaussians} | {r.ply_mb:.2f} | {r.psnr:.2f} | {r.ssim:.3f} | {lpips} | {r.train_seconds:.0f} |"
        )
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=Path("demo_outputs"), help="where runs, PLYs and logs go")
    parser.add_argument("--steps", type=int, default=3000, help="training steps (default 3000: a few minutes on CPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--method", default="distilled-3dgs-teacher", help="which registered method to train")
    args = parser.parse_args(argv)
    if args.steps < 10:
        parser.error("--steps must be at least 10")

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    print(f"Demo scene: {DEMO_SCENE} (see ATTRIBUTION.txt there: Lego model by Heinzelnisse, CC-BY 3.0)")
    result = train_and_report(args.method, args.output_dir.resolve(), args.steps, device)
    table = format_table([result])
    (args.output_dir / "results.json").write_text(json.dumps([result.__dict__], indent=2))
    (args.output_dir / "results.md").write_text(table + "\n")
    print("\nHeld-out views of the demo scene:\n" + table)
    print(f"\nPLY: {args.output_dir / result.method / 'export' / 'splat.ply'}; results in {args.output_dir}/results.*")


def entrypoint() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()


if __name__ == "__main__":
    entrypoint()
