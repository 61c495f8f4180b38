"""`distilled-gs distill` end to end on the demo scene: given teachers, a short student and one peer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from distilled_gs_ns.data import DEMO_SCENE
from tests.cli import TrainedRun, run_cli
from tests.splat_decoders import decode_spz

pytestmark = pytest.mark.cli


def test_distill_trains_exports_evaluates_and_tabulates(teacher_runs: Dict[str, TrainedRun], tmp_path: Path) -> None:
    """The standard teacher given, the student only (the peers are the same stages, as `distilled-gs
    demo` runs them), sized in megabytes through --student-flags: the file fits and fills the budget."""
    from PIL import Image

    megabytes = 0.006
    teacher = str(teacher_runs["distilled-3dgs-teacher"].config)
    student_flags = f"--pipeline.model.max-megabytes {megabytes} --pipeline.model.export-format spz"
    proc = run_cli(["distilled-gs", "distill", "--data", str(DEMO_SCENE), "--teachers", teacher, "--steps", "40",
                    "--device", "cpu", "--peers", "--format", "spz", "--output-dir", str(tmp_path),
                    f"--student-flags={student_flags}"])  # fmt: skip
    assert "spz MB" in proc.stdout and "| student |" in proc.stdout
    (student,) = json.loads((tmp_path / "results.json").read_text())["results"]
    assert student["name"] == "student" and student["gaussians"] > 0 and student["render_fps"] > 0
    spz = tmp_path / "student" / "export" / "splat.spz"
    header, _ = decode_spz(spz.read_bytes())
    assert header["num_points"] <= student["gaussians"] and student["file_mb"] == spz.stat().st_size / 1e6
    assert 0.9 * megabytes * 1e6 <= spz.stat().st_size <= megabytes * 1e6, spz.stat().st_size
    image = Image.open(tmp_path / "side_by_side.png")
    assert image.height >= 300 and image.width >= 2 * 300  # ground truth and student, scaled up, labelled


def test_distill_refuses_a_missing_teacher_with_one_line(tmp_path: Path) -> None:
    proc = run_cli(["distilled-gs", "distill", "--data", str(DEMO_SCENE), "--teachers", str(tmp_path / "none.yml"),
                    "--output-dir", str(tmp_path)], check=False)  # fmt: skip
    assert proc.returncode != 0 and "error: no teacher at" in proc.stderr and "Traceback" not in proc.stderr


def test_distill_refuses_teachers_without_the_standard_one_with_one_line(tmp_path: Path) -> None:
    proc = run_cli(["distilled-gs", "distill", "--data", str(DEMO_SCENE), "--train-teachers", "perturbed", "dropout",
                    "--output-dir", str(tmp_path)], check=False)  # fmt: skip
    assert proc.returncode != 0 and "must include standard" in proc.stderr and "Traceback" not in proc.stderr

