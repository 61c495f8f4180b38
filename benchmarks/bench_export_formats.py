"""Bytes and held-out quality of every export format and SH degree, for trained runs.

For each run: the Gaussians `ns-export gaussian-splat` would write, encoded in each format at each
SH degree from 0 to the model's, decoded again and rendered at every held-out view by the model's
rasteriser (ns-eval's metric code). The loss of a format is the held-out PSNR of the uncompressed
Gaussians at the model's degree minus that of the decoded file. Writes JSON (default
benchmarks/results/export_formats.json) and prints a markdown table.

Usage: PYTHONPATH=. python benchmarks/bench_export_formats.py NAME=path/to/config.yml [...]
(default: the teacher and student of the demo, demo_outputs/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

DEFAULT_RUNS = {
    "teacher": Path("demo_outputs/teacher/distilled-3dgs-teacher/demo/config.yml"),
    "student": Path("demo_outputs/student/distilled-3dgs-student/demo/config.yml"),
}


def measure_run(name: str, config: Path) -> List[Dict[str, object]]:
    from distilled_gs_ns.export.formats import FORMATS
    from distilled_gs_ns.export.splat_data import from_model
    from distilled_gs_ns.export.writer import load_splat_model
    from distilled_gs_ns.metrics.file_quality import heldout_metrics

    pipeline = load_splat_model(config)
    data = from_model(pipeline.model)
    reference = heldout_metrics(pipeline, data.render_gaussians(pipeline.device))["psnr"]
    own = heldout_metrics(pipeline)["psnr"]
    print(f"{name}: {data.count} Gaussians, SH degree {data.sh_degree}; held-out PSNR {reference:.3f} "
          f"(uncompressed), model {own:.3f}", flush=True)  # fmt: skip
    rows = []
    for degree in range(data.sh_degree + 1):
        truncated = data.with_sh_degree(degree)
        for fmt in FORMATS.values():
            start = time.perf_counter()
            raw = fmt.encode(truncated)
            encode_s = time.perf_counter() - start
            decoded = fmt.decode(raw)
            psnr = heldout_metrics(pipeline, decoded.render_gaussians(pipeline.device))["psnr"]
            row = {
                "run": name, "format": fmt.name, "sh_degree": degree, "gaussians": data.count,
                "bytes": len(raw), "bytes_per_gaussian": len(raw) / data.count, "psnr": psnr,
                "loss_db": reference - psnr, "encode_s": encode_s, "model_psnr": own,
            }  # fmt: skip
            print(f"  {fmt.name:15s} SH {degree}: {len(raw) / 1e6:8.3f} MB  {row['bytes_per_gaussian']:6.1f} B/G  "
                  f"PSNR {psnr:.3f} ({reference - psnr:+.3f} dB loss)", flush=True)  # fmt: skip
            rows.append(row)
    return rows


def table(rows: List[Dict[str, object]]) -> str:
    lines = ["| run | format | SH degree | bytes per Gaussian | MB | held-out PSNR | loss vs float PLY at the model's degree |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['format']} | {r['sh_degree']} | {r['bytes_per_gaussian']:.1f} | "
            f"{r['bytes'] / 1e6:.3f} | {r['psnr']:.2f} | {r['loss_db']:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="NAME=config.yml (default: the demo's teacher and student)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_formats.json"))
    args = parser.parse_args()
    runs = dict(item.split("=", 1) for item in args.runs) if args.runs else DEFAULT_RUNS
    rows: List[Dict[str, object]] = []
    for name, config in runs.items():
        rows += measure_run(name, Path(config))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2))
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
