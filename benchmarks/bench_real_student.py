"""The student against every same-budget peer, on real captures and the synthetic scenes, stage by stage.

Per scene, `distilled-gs distill` trains (or reuses) the three teachers, the default student and the
peers a user could pick instead at its Gaussian count (prune-and-fine-tune, 3DGS-MCMC, the student's
recipe without teachers), then the candidate students named with `--candidates`, then, with
`--seeds`, every student row within 0.5 dB of a peer and every peer within 0.5 dB of a student row
(the bar asks for means of 3 seeds there) again with other seeds. Every finished stage is kept and
reused, and every finished candidate and seed stays in the tables, so they grow over several
sittings; the scene's table and the student's and each candidate's margins are written after each
scene.

Scenes: the real captures of real_scenes.py (built from clones of their public repositories, never
committed) with the methods' scaled schedule, and the two synthetic scenes with the demo's (white
background, random seeds): `demo` (shipped) and `lego-200` (../shared/data/lego at 200 px).

Usage: python benchmarks/bench_real_student.py --scenes fox-135x240 mouse-240 demo lego-200
       [--steps 3000] [--runs DIR] [--out DIR] [--sources DIR ...] [--candidates NAME ...] [--seeds 0 1 2]
Writes OUT/<scene>.json and .md, and OUT/summary.md (the margins of every student row on every scene
benched into OUT so far).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from real_scenes import SCENES, scene_folder

from distilled_gs_ns.cli.distill import Distill, run_distill, schedule_flags
from distilled_gs_ns.cli.stages import STUDENT, StageResult, same_budget_stages, train_and_report
from distilled_gs_ns.data import DEMO_SCENE

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("prune-finetune", "mcmc", "baseline-pruned")
"""The same-budget models the bar names: the strongest things a user could use instead."""
STANDARD = ["--pipeline.teacher-weights", "1", "0", "0"]
BETWEEN = ["--pipeline.pseudo-views", "{train_views}", "--pipeline.pseudo-view-sampling", "between"]
CANDIDATES: Dict[str, List[str]] = {
    "until-0.25": ["--pipeline.model.sample-at", "0.25"],
    "until-0.25-rounds-5": ["--pipeline.model.sample-at", "0.25", "--pipeline.model.prune-rounds", "5"],
    "until-0.1-rounds-3": ["--pipeline.model.sample-at", "0.1", "--pipeline.model.prune-rounds", "3"],
    "consensus": ["--pipeline.model.importance", "consensus"],
    "consensus-until-0.25": ["--pipeline.model.importance", "consensus", "--pipeline.model.sample-at", "0.25"],
    "kd-fused": ["--pipeline.model.kd-weight", "1"],
    "kd-standard": ["--pipeline.model.kd-weight", "1", *STANDARD],
    "pv-fused": BETWEEN,
    "pv-standard": [*STANDARD, *BETWEEN],
}  # fmt: skip
"""Students beside the default as it was when they were measured (until 2026-12-08: 10 progressive-
pruning rounds of the whole standard teacher until half the run, no labels, cuts by the plain
blending weight; the `student` rows of the fox, mouse, demo and lego tables are that student. Since
then `consensus` is the default; stages are reused by their flags, so those rows keep their meaning): the last cut earlier (more fine-tuning at the budget; fewer rounds), cuts by
consensus importance (each Gaussian's largest single view left out: floaters rank low), and the
teachers as teachers: fused labels at the training views from all three or the standard teacher
alone, and labels at as many pseudo-views (between neighbouring training views, one step in four)
as there are training views. Placeholder: {train_views}."""


@dataclass(frozen=True)
class BenchScene:
    data: Path
    dataparser: str
    dataparser_flags: str
    synthetic: bool
    """The demo's schedule (white background, random seeds) instead of the methods' scaled one."""


def bench_scene(name: str, root: Path, sources: Sequence[Path]) -> BenchScene:
    if name == "demo":
        return BenchScene(DEMO_SCENE, "nerfstudio-data", "", True)
    if name == "lego-200":
        folder = root / "lego-200"
        if not (folder / "transforms.json").exists():
            subprocess.run([sys.executable, str(ROOT / "scripts/make_demo_scene.py"), str(ROOT.parent / "shared/data/lego"),
                            "--out", str(folder), "--size", "200"], check=True)  # fmt: skip
        return BenchScene(folder, "nerfstudio-data", "", True)
    real = SCENES[name]
    return BenchScene(scene_folder(name, root, sources), real.dataparser, real.dataparser_flags, False)


class SceneStages:
    """The stages of one scene: its distill run's results, and more stages with the same schedule."""

    def __init__(self, scene: BenchScene, runs: Path, steps: int) -> None:
        self.scene, self.runs, self.steps = scene, runs, steps
        summary = json.loads((runs / "results.json").read_text())
        self.results: Dict[str, Dict] = {r["name"]: r for r in summary["results"]}
        self.device = self.results["student"]["device"]
        self.teacher_rows = [name for name in ("teacher", "teacher-perturbed", "teacher-dropout") if name in self.results]
        self.teachers = [self.results[name]["config"] for name in self.teacher_rows]
        parser = [scene.dataparser, *shlex.split(scene.dataparser_flags)]
        self.parser = [] if parser == ["nerfstudio-data"] else parser
        self.schedule = None if scene.synthetic else schedule_flags(steps, self.device)

    def train_views(self) -> int:
        from nerfstudio.utils.eval_utils import eval_setup

        _, pipeline, _, _ = eval_setup(Path(self.teachers[0]), test_mode="test")
        return len(pipeline.datamanager.train_dataset)

    def flags(self, name: str) -> Tuple[str, List[str]]:
        """Method and ns-train flags of a row: the student, a peer or a candidate."""
        if name == "student":
            return STUDENT, ["--pipeline.teachers", *self.teachers]
        if name in PEERS:
            return same_budget_stages(self.teachers[0], self.results["student"]["gaussians"])[name]
        fill = {"train_views": str(self.train_views())} if any("{" in f for f in CANDIDATES[name]) else {}
        return STUDENT, ["--pipeline.teachers", *self.teachers, *(f.format(**fill) for f in CANDIDATES[name])]

    @staticmethod
    def label(name: str) -> str:
        return name if name in ("student", *PEERS) else f"candidate-{name}"

    def finished_candidates(self) -> List[str]:
        """Candidates whose seed-0 stage finished in an earlier invocation (kept in the tables)."""
        return [name for name in CANDIDATES if (self.runs / self.label(name) / "result.json").exists()]

    def finished_seeds(self, name: str) -> List[int]:
        """Other seeds of `name` that finished in an earlier invocation (kept in its mean)."""
        found = (p.parent.name.rsplit("-seed", 1)[1] for p in self.runs.glob(f"{self.label(name)}-seed*/result.json"))
        return sorted(int(seed) for seed in found if seed.isdigit())

    def run(self, name: str, seed: int = 0) -> StageResult:
        if seed == 0 and name in self.results:
            return StageResult(**self.results[name])
        method, flags = self.flags(name)
        label = self.label(name)
        if seed:
            label, flags = f"{label}-seed{seed}", [*flags, "--machine.seed", str(seed)]
        return train_and_report(label, method, self.runs, self.steps, self.device, flags,
                                data=self.scene.data, schedule=self.schedule, parser=self.parser)  # fmt: skip


def needs_seeds(psnr: Dict[str, float], name: str, within: float = 0.5) -> bool:
    """Whether a comparison the bar makes lies within `within` dB (seed 0): a student row against a
    peer, or a peer against a student row. (Two peers close to each other need no more seeds.)"""
    others = [row for row in psnr if (row in PEERS) != (name in PEERS)]
    return any(abs(psnr[name] - psnr[other]) < within for other in others)


def margins(rows: Dict[str, Dict], name: str) -> Dict[str, float]:
    """`name`'s mean PSNR minus each peer's mean and the standard teacher's (positive: ahead)."""
    own = rows[name]["mean"]
    out = {f"vs_{peer}": own - rows[peer]["mean"] for peer in PEERS if peer in rows}
    out["vs_teacher"] = own - rows["teacher"]["mean"]
    out["vs_best_peer"] = min(v for k, v in out.items() if k != "vs_teacher")
    return out


def bench(name: str, scene: BenchScene, args: argparse.Namespace) -> Dict:
    runs = (args.runs / name).resolve()
    run_distill(
        Distill(data=scene.data, dataparser=scene.dataparser, dataparser_flags=scene.dataparser_flags, output_dir=runs,
                steps=args.steps, peers=tuple(args.peers), device=args.device, train_teachers=tuple(args.train_teachers)),  # type: ignore[arg-type]
        scaled_for_demo_scene=scene.synthetic, scene_name=name,
    )  # fmt: skip
    stages = SceneStages(scene, runs, args.steps)
    candidates = list(dict.fromkeys([*stages.finished_candidates(), *args.candidates]))
    seed0 = {row: stages.run(row) for row in ("student", *args.peers, *candidates)}
    asked_rows = ("student", *args.peers, *args.candidates)  # earlier invocations' candidates get no new seeds
    psnr = {row: result.psnr for row, result in seed0.items() if row in asked_rows}
    rows: Dict[str, Dict] = {}
    for row, result in seed0.items():
        asked = args.seeds if row in psnr and needs_seeds(psnr, row) else []
        seeds = sorted({0, *stages.finished_seeds(row), *asked})
        values = [result.psnr] + [stages.run(row, seed).psnr for seed in seeds if seed != 0]
        rows[row] = {"gaussians": result.gaussians, "file_mb": result.file_mb, "seeds": seeds, "psnr": values,
                     "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "ssim": result.ssim, "train_seconds": result.train_seconds}  # fmt: skip
    for teacher in stages.teacher_rows:
        t = stages.results[teacher]
        rows[teacher] = {"gaussians": t["gaussians"], "file_mb": t["file_mb"], "seeds": [0], "psnr": [t["psnr"]],
                         "mean": t["psnr"], "std": 0.0, "ssim": t["ssim"], "train_seconds": t["train_seconds"]}  # fmt: skip
    record = {
        "scene": name, "steps": args.steps, "device": stages.device, "data": str(scene.data),
        "dataparser": [scene.dataparser, *shlex.split(scene.dataparser_flags)], "rows": rows,
        "margins": {row: margins(rows, row) for row in ("student", *candidates)},
    }  # fmt: skip
    write_scene(args.out, name, record, scene_table(record))
    return record


def write_scene(out: Path, name: str, record: Dict, table: str) -> None:
    """OUT/<scene>.json (the record) and .md (its table), and the table on the terminal."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))
    (out / f"{name}.md").write_text(table + "\n")
    print(f"\n{name}:\n{table}", flush=True)


def scene_table(record: Dict) -> str:
    lines = [f"{record['scene']}, {record['steps']} steps, {record['device']}",
             "", "| model | Gaussians | file MB | PSNR (mean) | seeds | std | SSIM | train s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in record["rows"].items():
        file_mb = f"{row['file_mb']:.2f}" if row["file_mb"] is not None else "-"
        lines.append(f"| {name} | {row['gaussians']} | {file_mb} | {row['mean']:.2f} | {len(row['psnr'])} | {row['std']:.2f} "
                     f"| {row['ssim']:.3f} | {row['train_seconds']:.0f} |")  # fmt: skip
    lines += ["", "| student row | " + " | ".join(f"vs {p}" for p in PEERS) + " | vs best peer | vs teacher |",
              "|---|" + "---|" * (len(PEERS) + 2)]  # fmt: skip
    for name, margin in record["margins"].items():
        cells = [margin.get(f"vs_{p}") for p in PEERS] + [margin["vs_best_peer"], margin["vs_teacher"]]
        lines.append(f"| {name} | " + " | ".join(f"{c:+.2f}" if c is not None else "-" for c in cells) + " |")
    return "\n".join(lines)


def summary_table(records: Sequence[Dict]) -> str:
    """Every student row's margin over its best peer (and over the standard teacher) on every scene."""
    names = list(dict.fromkeys(n for r in records for n in r["margins"]))
    lines = ["| student row | " + " | ".join(r["scene"] for r in records) + " | worst |", "|---|" + "---|" * (len(records) + 1)]
    for name in names:
        cells, worst = [], None
        for r in records:
            m: Optional[Dict[str, float]] = r["margins"].get(name)
            if m is None:
                cells.append("-")
                continue
            cells.append(f"{m['vs_best_peer']:+.2f} ({m['vs_teacher']:+.2f})")
            worst = m["vs_best_peer"] if worst is None else min(worst, m["vs_best_peer"])
        lines.append(f"| {name} | " + " | ".join(cells) + (f" | {worst:+.2f} |" if worst is not None else " | - |"))
    return "\n".join(lines) + "\n\nCells: margin over the best same-budget peer (over the standard teacher), dB of mean held-out PSNR."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=["fox-135x240", "mouse-240"],
                        choices=[*SCENES, "demo", "lego-200"])  # fmt: skip
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--runs", type=Path, default=Path("bench_outputs/real_student"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/real-student")
    parser.add_argument("--sources", type=Path, nargs="+", default=[Path("/work/.mirror"), Path("bench_outputs/sources")],
                        help="folders holding clones of the captures' repositories")  # fmt: skip
    parser.add_argument("--candidates", nargs="*", default=[], choices=list(CANDIDATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--train-teachers", nargs="+", choices=["standard", "perturbed", "dropout"],
                        default=["standard", "perturbed", "dropout"], help="as distilled-gs distill's")  # fmt: skip
    args = parser.parse_args()
    for name in args.scenes:
        bench(name, bench_scene(name, args.runs / "scenes", args.sources), args)
        records = [r for r in (json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))) if "margins" in r]  # scenes so far
        (args.out / "summary.md").write_text(summary_table(records) + "\n")
    print("\n" + (args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
