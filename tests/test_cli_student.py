"""distilled-3dgs-student end to end through the real ns-train, ns-export and ns-eval (CPU)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml
from nerfstudio.configs.base_config import MachineConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.nerfacto import NerfactoModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from plyfile import PlyData

from distilled_gs_ns.data import DEMO_SCENE
from distilled_gs_ns.strategies.budget import pruning_schedule
from distilled_gs_ns.pipelines.teachers import load_teachers
from distilled_gs_ns.errors import UserInputError
from tests.cli import TEACHER_METHODS, TrainedRun, run_cli, train

pytestmark = pytest.mark.cli
STUDENT = "distilled-3dgs-student"
BUDGET_SCHEDULE = ["--pipeline.model.sample-at", "0.75", "--pipeline.model.prune-tail-at", "0.875"]
"""In the tests' 400-step schedule: progressive pruning's 10 rounds every 30 steps until 300; for the
paper's recipe (refinement every 50 steps from 150) sampling at 300 and the tail drop at 350 leave
the student refinements to grow back after the random seeds are pruned."""
PAPER_RECIPE = ["--pipeline.model.initialisation", "seeds", "--pipeline.model.prune-rounds", "0",
                "--pipeline.model.kd-weight", "1", "--pipeline.model.structure-weight", "1"]  # fmt: skip
"""The paper's student: seeds, capped growth, importance sampling and tail drop, fused labels, structure loss."""


def budget_of(teacher: TrainedRun, fraction: float = 0.12) -> int:
    return round(fraction * teacher.load_gaussians()["means"].shape[0])


@pytest.fixture(scope="module")
def teacher_copies(teacher_runs: Dict[str, TrainedRun], tmp_path_factory) -> List[Path]:
    """Copies of the session's teacher runs, so this module may delete them."""
    root = tmp_path_factory.mktemp("teachers")
    configs = []
    for method, run in teacher_runs.items():
        target = root / method
        shutil.copytree(run.run_dir, target)
        configs.append(target / "config.yml")
    return configs


@pytest.fixture(scope="module")
def student_run(teacher_copies: List[Path], runs_dir: Path) -> TrainedRun:
    return train(STUDENT, runs_dir, "student", extra=["--pipeline.teachers", *map(str, teacher_copies), *BUDGET_SCHEDULE])


@pytest.fixture(scope="module")
def cameras():
    return NerfstudioDataParserConfig(data=DEMO_SCENE, load_3D_points=True).setup().get_dataparser_outputs("train").cameras


@pytest.fixture(scope="module")
def paper_run(teacher_runs: Dict[str, TrainedRun], runs_dir: Path) -> TrainedRun:
    teachers = [str(run.config) for run in teacher_runs.values()]
    return train(STUDENT, runs_dir, "student-paper", extra=["--pipeline.teachers", *teachers, *BUDGET_SCHEDULE, *PAPER_RECIPE])


def test_student_prunes_the_teacher_progressively_to_exactly_its_budget(student_run: TrainedRun, teacher_runs) -> None:
    teacher_count = teacher_runs["distilled-3dgs-teacher"].load_gaussians()["means"].shape[0]
    budget = budget_of(teacher_runs["distilled-3dgs-teacher"])
    log = student_run.log
    assert f"budget {budget} Gaussians" in log
    assert f"student starts from all {teacher_count} Gaussians of the standard teacher" in log
    schedule = pruning_schedule(teacher_count, budget, rounds=10, last_step=300)
    for step, count in schedule:
        assert re.search(rf"step {step}: importance tail kept {count} of \d+ Gaussians", log), (step, count)
    counts = [student_run.load_gaussians(ckpt)["means"].shape[0] for ckpt in student_run.checkpoints]
    assert counts == [dict(schedule)[90], dict(schedule)[180], budget, budget]  # steps 100, 200, 300, 399


def test_student_resumes_in_the_middle_of_its_pruning(student_run: TrainedRun, teacher_runs, runs_dir: Path) -> None:
    """Resumed from step 200 (four rounds left) for the original run's remaining steps (201-399),
    the schedule is the original one: it is computed from the teacher's count, not from the resumed
    model's."""
    teachers = [str(run.config) for run in teacher_runs.values()]
    resumed = train(
        STUDENT, runs_dir, "student-resumed-mid", steps=199,
        extra=["--pipeline.teachers", *teachers, *BUDGET_SCHEDULE,
               "--load-dir", str(student_run.run_dir / "nerfstudio_models"), "--load-step", "200"],
    )  # fmt: skip
    teacher_count = teacher_runs["distilled-3dgs-teacher"].load_gaussians()["means"].shape[0]
    budget = budget_of(teacher_runs["distilled-3dgs-teacher"])
    schedule = dict(pruning_schedule(teacher_count, budget, rounds=10, last_step=300))
    assert f"step 210: importance tail kept {schedule[210]} of {schedule[180]} Gaussians" in resumed.log
    assert resumed.load_gaussians()["means"].shape[0] == budget


def test_paper_recipe_student_ends_at_its_budget(paper_run: TrainedRun, teacher_runs: Dict[str, TrainedRun]) -> None:
    teacher = teacher_runs["distilled-3dgs-teacher"]
    budget = budget_of(teacher)
    count = paper_run.load_gaussians()["means"].shape[0]
    assert f"budget {budget} Gaussians" in paper_run.log
    assert abs(count - budget) <= 0.05 * budget
    assert count <= 0.15 * teacher.load_gaussians()["means"].shape[0]
    assert "pseudo-labels: 87 views cached" in paper_run.log


def test_student_checkpoint_holds_only_the_student(student_run: TrainedRun, teacher_runs) -> None:
    state = torch.load(student_run.checkpoints[-1], map_location="cpu", weights_only=False)
    teacher_state = torch.load(teacher_runs["distilled-3dgs-teacher"].checkpoints[-1], map_location="cpu", weights_only=False)
    assert set(state["pipeline"]) == set(teacher_state["pipeline"])  # no teacher weights, no pseudo-labels
    assert set(state["optimizers"]) == set(teacher_state["optimizers"])


def test_student_learns_and_works_without_its_teachers(
    student_run: TrainedRun, teacher_copies: List[Path], untrained_run: TrainedRun, tmp_path: Path
) -> None:
    for config in teacher_copies:
        shutil.rmtree(config.parent)
    metrics = student_run.evaluate(tmp_path / "eval.json")
    untrained = untrained_run.evaluate(tmp_path / "untrained.json")
    assert metrics["psnr"] > untrained["psnr"] + 5
    count = student_run.load_gaussians()["means"].shape[0]
    assert metrics["gaussian_count"] == count

    run_cli(["ns-export", "gaussian-splat", "--load-config", str(student_run.config), "--output-dir", str(tmp_path)])
    vertices = PlyData.read(str(tmp_path / "splat.ply"))["vertex"]
    assert 0.9 * count <= len(vertices.data) <= count  # the exporter drops opacity < 1/255 only
    assert {"x", "f_dc_0", "opacity", "scale_0", "rot_0"} <= set(vertices.data.dtype.names)


def test_paper_recipe_student_resumes_after_sampling(paper_run: TrainedRun, teacher_runs, runs_dir: Path) -> None:
    """Resumed from step 300 (just after the importance sampling, so with another Gaussian count than
    at construction), the run loads, trains, and its tail drop at 350 still ends at the budget."""
    teachers = [str(run.config) for run in teacher_runs.values()]
    sampled = paper_run.load_gaussians(paper_run.run_dir / "nerfstudio_models" / "step-000000300.ckpt")
    resumed = train(
        STUDENT,
        runs_dir,
        "student-resumed",
        steps=100,
        extra=[
            "--pipeline.teachers", *teachers, *BUDGET_SCHEDULE, *PAPER_RECIPE,
            "--load-dir", str(paper_run.run_dir / "nerfstudio_models"),
            "--load-step", "300",
        ],
    )  # fmt: skip
    budget = budget_of(teacher_runs["distilled-3dgs-teacher"])
    assert sampled["means"].shape[0] == math.ceil(budget * 1.05)  # budget x (1 + tail_fraction)
    assert resumed.checkpoints[-1].name == "step-000000400.ckpt"
    assert resumed.load_gaussians()["means"].shape[0] == budget
    assert "step 351: importance tail kept" in resumed.log


def test_student_options_train_through_ns_train(teacher_runs: Dict[str, TrainedRun], runs_dir: Path, tmp_path: Path) -> None:
    """Depth labels, pseudo-views between training views, a lower SH degree, consensus importance and
    MCMC at the budget from the teacher's most important Gaussians, all in one run: the count is the budget at every
    checkpoint, and the exported file has degree 1's colour fields."""
    teachers = [str(run.config) for run in teacher_runs.values()]
    run = train(STUDENT, runs_dir, "student-options", extra=[
        "--pipeline.teachers", *teachers, *BUDGET_SCHEDULE,
        "--pipeline.model.depth-weight", "0.1", "--pipeline.pseudo-views", "8",
        "--pipeline.model.sh-degree", "1", "--pipeline.model.prune-rounds", "0", "--pipeline.model.densification", "mcmc",
        "--pipeline.model.importance", "consensus",
    ])  # fmt: skip
    budget = budget_of(teacher_runs["distilled-3dgs-teacher"])
    assert "pseudo-views: 8 cached" in run.log and "pseudo-labels: 87 views cached" in run.log
    assert f"student starts from the {budget} most important teacher Gaussians" in run.log
    assert [run.load_gaussians(ckpt)["means"].shape[0] for ckpt in run.checkpoints] == [budget] * len(run.checkpoints)
    assert run.evaluate(tmp_path / "eval.json")["psnr"] > 15
    run_cli(["ns-export", "gaussian-splat", "--load-config", str(run.config), "--output-dir", str(tmp_path)])
    names = PlyData.read(str(tmp_path / "splat.ply"))["vertex"].data.dtype.names
    assert "f_rest_8" in names and "f_rest_9" not in names


def test_official_recipe_student_with_mini_splatting_densification(teacher_runs: Dict[str, TrainedRun], runs_dir: Path) -> None:
    """Seeds, fused labels, structure loss and Mini-Splatting-style densification (the official code's
    student): the Gaussians are replaced from depth at 1/3 and 2/3 of the densification window
    (steps 100-300 here), and the run still ends at its budget (within 5% below it when the growth
    after the last reinitialisation falls short, as for the paper's recipe)."""
    teachers = [str(run.config) for run in teacher_runs.values()]
    run = train(STUDENT, runs_dir, "student-mini-splatting", extra=[
        "--pipeline.teachers", *teachers, *BUDGET_SCHEDULE, *PAPER_RECIPE, "--pipeline.model.densification", "mini-splatting",
    ])  # fmt: skip
    for step in (167, 233):
        assert re.search(rf"step {step}: depth reinitialisation replaced (\d+) Gaussians by \1 on", run.log), step
    budget = budget_of(teacher_runs["distilled-3dgs-teacher"])
    assert 0.95 * budget <= run.load_gaussians()["means"].shape[0] <= budget


# ---------------------------------------------------------------------------------------------- bad teachers


def test_zero_teachers_is_refused_before_training(runs_dir: Path) -> None:
    proc = run_cli(
        ["ns-train", STUDENT, "--data", str(DEMO_SCENE), "--output-dir", str(runs_dir), "--machine.device-type", "cpu",
         "--experiment-name", "no-teachers", "--vis", "tensorboard"],
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "error: distillation needs at least one teacher: pass --pipeline.teachers" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((runs_dir / "no-teachers").rglob("step-*.ckpt"))


def test_missing_teacher_is_refused_by_ns_train(runs_dir: Path, tmp_path: Path) -> None:
    proc = run_cli(
        ["ns-train", STUDENT, "--data", str(DEMO_SCENE), "--output-dir", str(runs_dir), "--machine.device-type", "cpu",
         "--pipeline.teachers", str(tmp_path / "gone" / "config.yml")],
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"error: teacher config {tmp_path / 'gone' / 'config.yml'} does not exist" in proc.stderr


def write_config(config, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(yaml.dump(config))
    return path


def teacher_variant(teacher: TrainedRun, folder: Path, **dataparser) -> Path:
    """The teacher's run (checkpoints included) with a changed data set-up."""
    shutil.copytree(teacher.run_dir, folder)
    config = yaml.load(teacher.config.read_text(), Loader=yaml.Loader)
    for key, value in dataparser.items():
        if key == "data":
            config.pipeline.datamanager.data = value
        else:
            setattr(config.pipeline.datamanager.dataparser, key, value)
    return write_config(config, folder)


def scene_copy(folder: Path, keep_frames: int | None = None, width: int | None = None) -> Path:
    shutil.copytree(DEMO_SCENE, folder)
    meta = json.loads((folder / "transforms.json").read_text())
    if keep_frames is not None:
        meta["frames"] = meta["frames"][:keep_frames]
        names = {frame["file_path"] for frame in meta["frames"]}
        for split in ("train_filenames", "val_filenames", "test_filenames"):
            meta[split] = [name for name in meta[split] if name in names]
    if width is not None:
        meta["w"] = width
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def test_bad_teachers_give_clear_errors(teacher_runs: Dict[str, TrainedRun], cameras, tmp_path: Path) -> None:
    teacher = teacher_runs["distilled-3dgs-teacher"]

    def refused(paths, message: str) -> None:
        with pytest.raises(UserInputError, match=message):
            load_teachers(paths, cameras, "cpu")

    refused([], "at least one teacher")
    refused([teacher.config, tmp_path / "missing" / "config.yml"], "does not exist")
    garbage = tmp_path / "garbage.yml"
    garbage.write_text("!!python/object:no.such.Module {}\n")
    refused([garbage], "cannot read teacher config")
    refused([write_config({"a": 1}, tmp_path / "dict")], "not a run config written by ns-train")
    nerfacto = TrainerConfig(
        method_name="nerfacto", machine=MachineConfig(), pipeline=VanillaPipelineConfig(model=NerfactoModelConfig())
    )
    refused([write_config(nerfacto, tmp_path / "nerfacto")], "is a NerfactoModelConfig run .*not a Gaussian splat")
    fewer = scene_copy(tmp_path / "fewer", keep_frames=60)
    refused([teacher_variant(teacher, tmp_path / "t-fewer", data=fewer)], "other data: .* training cameras, the student has 87")
    wider = scene_copy(tmp_path / "wider", width=120)
    refused([teacher_variant(teacher, tmp_path / "t-wider", data=wider)], "its images are 120x100, the student's 100x100")
    refused(
        [teacher_variant(teacher, tmp_path / "t-turned", orientation_method="none")],
        "other dataparser settings: its camera poses differ",
    )
    bare = write_config(yaml.load(teacher.config.read_text(), Loader=yaml.Loader), tmp_path / "bare")
    refused([bare], "has no checkpoint")


def test_loaded_teachers_are_frozen_copies_of_their_checkpoints(teacher_runs, cameras) -> None:
    runs = [teacher_runs[m] for m in TEACHER_METHODS]
    teachers = load_teachers([run.run_dir for run in runs], cameras, "cpu")  # a run folder stands for its config
    for run, teacher in zip(runs, teachers):
        assert teacher.method_name == run.method
        assert not teacher.model.training
        assert not any(p.requires_grad for p in teacher.model.parameters())
        assert torch.equal(teacher.model.means, run.load_gaussians()["means"])
        assert teacher.model.step == 399  # renders with every SH band learnt
