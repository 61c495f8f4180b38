"""The stages of `distilled-gs distill` and the benchmarks: which teachers are trained, and a stage
stopped part-way goes on from its checkpoint while one started with other settings starts afresh,
without the old run's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from distilled_gs_ns.cli.stages import _resume_flags, method_defaults, teacher_stages, train_command

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


def test_a_changed_default_makes_a_stopped_stage_start_afresh(tmp_path: Path) -> None:
    """A stage recorded with another version's defaults (same flags) is not resumed; one recorded
    before the fingerprint was kept is (the flags are all it has)."""
    with_defaults = dict(SETTINGS, defaults=method_defaults("distilled-3dgs-student"))
    stage, run = stopped_stage(tmp_path, dict(with_defaults, defaults="0123456789abcdef"))
    assert _resume_flags(stage, run, with_defaults) == []
    legacy_stage, legacy_run = stopped_stage(tmp_path / "legacy", SETTINGS)
    assert _resume_flags(legacy_stage, legacy_run, with_defaults) == ["--load-dir", str(legacy_run / "nerfstudio_models")]


def test_the_defaults_fingerprint_follows_the_model_defaults() -> None:
    from distilled_gs_ns import method_configs

    student = method_defaults("distilled-3dgs-student")
    assert student == method_defaults("distilled-3dgs-student")
    assert student != method_defaults("distilled-3dgs-prune-finetune")  # the same model class, other defaults
    model = method_configs.student.config.pipeline.model
    old = model.importance
    try:
        model.importance = "blending" if old == "consensus" else "consensus"
        assert method_defaults("distilled-3dgs-student") != student
    finally:
        model.importance = old
