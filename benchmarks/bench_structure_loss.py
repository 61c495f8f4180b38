"""Cost of the Distilled-3DGS structure loss (forward + backward) on CPU.

For 100k and 1M student points against a teacher of the same size, at G = 128 (the paper's grid)
and G = 64: median milliseconds per evaluation (after a warm-up) and the extra peak resident memory
of a fresh process doing it. Writes JSON (default benchmarks/results/structure_loss.json) and prints
a markdown table.

Usage: PYTHONPATH=. python benchmarks/bench_structure_loss.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = [(10_000, 128), (100_000, 128), (1_000_000, 128), (100_000, 64), (1_000_000, 64)]


def measure(num: int, resolution: int, repeats: int) -> dict:
    import torch

    from distilled_gs_ns.losses.structure import StructureLoss

    torch.manual_seed(0)
    teacher = torch.randn(num, 3)
    student = (torch.randn(num, 3) * 1.1).requires_grad_(True)
    start = time.perf_counter()
    loss = StructureLoss(teacher, resolution=resolution)
    setup_ms = (time.perf_counter() - start) * 1e3
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(repeats + 1):
        student.grad = None
        start = time.perf_counter()
        loss(student).backward()
        if i:
            times.append((time.perf_counter() - start) * 1e3)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "points": num,
        "resolution": resolution,
        "setup_ms": setup_ms,
        "fwd_bwd_ms": statistics.median(times),
        "extra_peak_mib": max(peak_kib - baseline_kib, 0) / 1024,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/structure_loss.json"))
    parser.add_argument("--case", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    if args.case:
        print(json.dumps(measure(args.case[0], args.case[1], repeats)))
        return
    rows = []
    for num, resolution in CASES:  # one fresh process per case, so peak memory is its own
        cmd = [sys.executable, __file__, "--case", str(num), str(resolution)] + (["--quick"] if args.quick else [])
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print("| points | G | teacher histogram ms (once) | fwd+bwd ms | extra peak MiB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['points']:,} | {r['resolution']} | {r['setup_ms']:.0f} | {r['fwd_bwd_ms']:.0f} | {r['extra_peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
