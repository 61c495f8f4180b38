"""The stages of `distilled-gs distill` and the benchmarks: which teachers are trained, and a stage
stopped part-way goes on from its checkpoint while one started with other settings starts afresh,
without the old run's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from distilled_gs_ns.cli.stages import _resume_flags, teacher_stages, train_command

SETTINGS = {"steps": 30000, "device": "cpu", "flags": ["--vis", "tensorboard"], "data": "/data/fox"}


def stopped_stage(tmp_path: Path, settings: dict) -> tuple[Path, Path]:
    stage, run = tmp_path / "teacher", tmp_path / "teacher" / "distilled-3dgs-teacher" / "demo"
    (run / "nerfstudio_models").mkdir(parents=True)
    (run / "nerfstudio_models" / "step-000001999.ckpt").write_bytes(b"checkpoint")
    (stage / "started.json").write_text(json.dumps(settings))
    return stage, run


def test_a_stopped_stage_with_the_same_settings_resumes_from_its_checkpoints(tmp_path: Path) -> None:
    stage, run = stopped_stage(tmp_path, SETTINGS)
    assert _resume_flags(stage, run, dict(SETTINGS)) == ["--load-dir", str(run / "nerfstudio_models")]
    assert (run / "nerfstudio_models" / "step-000001999.ckpt").exists()


def test_other_settings_start_afresh_without_the_old_checkpoints(tmp_path: Path) -> None:
    stage, run = stopped_stage(tmp_path, SETTINGS)
    other = dict(SETTINGS, steps=3000)
    assert _resume_flags(stage, run, other) == []
    assert not (run / "nerfstudio_models").exists()  # ns-eval would otherwise load the old run's newest step
    assert json.loads((stage / "started.json").read_text()) == other


def test_a_stage_stopped_before_its_first_checkpoint_starts_afresh(tmp_path: Path) -> None:
    stage, run = stopped_stage(tmp_path, SETTINGS)
    (run / "nerfstudio_models" / "step-000001999.ckpt").unlink()
    assert _resume_flags(stage, run, dict(SETTINGS)) == []
    assert _resume_flags(tmp_path / "new", tmp_path / "new" / "m" / "demo", dict(SETTINGS)) == []
    assert (tmp_path / "new" / "started.json").exists()


def test_the_teachers_to_train_keep_their_order_and_methods() -> None:
    assert teacher_stages(["standard"]) == {"teacher": "distilled-3dgs-teacher"}
    assert list(teacher_stages(["dropout", "standard"])) == ["teacher", "teacher-dropout"]
    assert teacher_stages(["standard", "perturbed", "dropout"])["teacher-perturbed"] == "distilled-3dgs-teacher-perturbed"


def test_the_resume_flag_goes_before_the_dataparser_subcommand(tmp_path: Path) -> None:
    """tyro applies a flag to the subcommand before it: --load-dir after `colmap ...` is refused."""
    stage, run = stopped_stage(tmp_path, SETTINGS)
    resume = _resume_flags(stage, run, dict(SETTINGS))
    args = train_command("teacher", "distilled-3dgs-teacher", tmp_path, ["--vis", "tensorboard", *resume],
                         ["colmap", "--downscale-factor", "8"], Path("/data/fox"))  # fmt: skip
    assert args.index("--load-dir") < args.index("colmap") < args.index("--data")
