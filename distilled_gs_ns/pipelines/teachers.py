"""Load trained teacher splats, check them, and freeze them for distillation.

A teacher is any splat run of this plugin or nerfstudio's splatfacto (its `config.yml`), or a splat
file a user already has (`.ply`, `.spz`, compressed `.ply`; pipelines/splat_file_teacher.py). Only a run's Gaussians are loaded
(no datamanager, no images); it is rendered through this package's splat base, so splatfacto
teachers render on CPU too. Each check below turns what would otherwise be a crash deep in training
(or, worse, silently wrong pseudo-labels) into one sentence naming the teacher.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import List, Sequence, Union

import torch
import yaml
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.splatfacto import SplatfactoModelConfig
from torch import Tensor

from distilled_gs_ns.data.checks import prepare_data
from distilled_gs_ns.engine.checkpoint_files import LOAD_ERRORS, checkpoints_in, mismatch_error, read_checkpoint
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.frames import Frame, Similarity
from distilled_gs_ns.models.splat_base import SplatBaseModel, SplatBaseModelConfig
from distilled_gs_ns.pipelines.splat_file_teacher import (
    SplatFileHeader,
    check_memory,
    is_splat_file,
    load_splat_file,
    read_header,
)

SPLAT_FILE = "splat-file"
"""The method name of a teacher read from a splat file."""
REFERENCE_METHODS = ("distilled-3dgs-teacher", "splatfacto", "splatfacto-big", SPLAT_FILE)
"""Methods that count as the "standard" teacher (the student's budget and structure reference)."""


@dataclass
class Teacher:
    """A frozen teacher: its model in eval mode, without gradients, at its checkpoint's step."""

    config_path: Path
    method_name: str
    checkpoint: Path
    model: SplatBaseModel

    @property
    def num_gaussians(self) -> int:
        return int(self.model.num_points)


def config_file(path: Path) -> Path:
    """A run folder stands for its config.yml."""
    path = Path(path)
    return path / "config.yml" if path.is_dir() else path


def read_teacher_config(path: Path) -> TrainerConfig:
    """The teacher's run config, checked to be a splat run."""
    if not path.exists():
        raise UserInputError(f"teacher config {path} does not exist: pass the config.yml written by ns-train")
    try:
        config = yaml.load(path.read_text(), Loader=yaml.Loader)
    except Exception as error:  # any YAML, decoding or class-resolution failure means "unreadable"
        raise UserInputError(f"cannot read teacher config {path}: {type(error).__name__}: {error}") from None
    if not isinstance(config, TrainerConfig):
        raise UserInputError(f"teacher config {path} is not a run config written by ns-train")
    model = getattr(config.pipeline, "model", None)
    if not isinstance(model, SplatfactoModelConfig):
        raise UserInputError(
            f"teacher {path} is a {type(model).__name__} run ({config.method_name}), not a Gaussian splat: teachers "
            "must be distilled-3dgs-teacher* or splatfacto runs"
        )
    return config


def check_same_cameras(path: Path, config: TrainerConfig, cameras: Cameras) -> None:
    """Refuse a teacher trained on other data: its training cameras must be the student's.

    Compares count, image sizes and poses (after each run's dataparser), so the same images under a
    different orientation or centring setting are caught too: their pseudo-labels would be rendered
    from the wrong viewpoints.
    """
    datamanager = copy.deepcopy(config.pipeline.datamanager)
    dataparser = datamanager.dataparser
    data = getattr(datamanager, "data", None)
    if data is not None:  # what nerfstudio's datamanager does with --data
        dataparser.data = data
    if not Path(dataparser.data).exists():
        raise UserInputError(f"teacher {path} was trained on {dataparser.data}, which no longer exists")
    prepare_data(datamanager)  # the adaptations the teacher's own run made (its config.yml predates them)
    teacher_cameras = dataparser.setup().get_dataparser_outputs(split="train").cameras
    if teacher_cameras.shape[0] != cameras.shape[0]:
        raise UserInputError(
            f"teacher {path} was trained on other data: {teacher_cameras.shape[0]} training cameras, the student has "
            f"{cameras.shape[0]}"
        )
    same_size = torch.equal(teacher_cameras.width.cpu(), cameras.width.cpu()) and torch.equal(
        teacher_cameras.height.cpu(), cameras.height.cpu()
    )
    if not same_size:
        raise UserInputError(
            f"teacher {path} was trained on other data: its images are {int(teacher_cameras.width[0])}x"
            f"{int(teacher_cameras.height[0])}, the student's {int(cameras.width[0])}x{int(cameras.height[0])} "
            "(different image downscale?)"
        )
    offset = (teacher_cameras.camera_to_worlds.cpu() - cameras.camera_to_worlds.cpu()).abs().max()
    if offset > 1e-4:
        raise UserInputError(
            f"teacher {path} was trained on other data or other dataparser settings: its camera poses differ from "
            f"the student's by up to {float(offset):.3g}"
        )
    if not _same_lens(teacher_cameras, cameras):
        raise UserInputError(
            f"teacher {path} was trained with other camera intrinsics or lens distortion than the student's data: "
            "its renders would not line up with the student's (undistorted) images"
        )


def _same_lens(a: Cameras, b: Cameras) -> bool:
    """Same camera model, intrinsics and distortion coefficients (as the dataparsers read them).

    nerfstudio undistorts and crops each image as a deterministic function of these and the image
    size, so equal originals mean the student and the teacher were served the same cameras.
    """
    def lens(cameras: Cameras) -> Tensor:
        parts = [cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.camera_type.to(cameras.fx.dtype)]
        if cameras.distortion_params is not None:
            parts.append(cameras.distortion_params)
        return torch.cat([p.reshape(p.shape[0], -1).cpu().float() for p in parts], dim=-1)

    left, right = lens(a), lens(b)
    return left.shape == right.shape and bool(torch.allclose(left, right, rtol=1e-5, atol=1e-6))


def latest_checkpoint(path: Path) -> Path:
    """Newest step-*.ckpt beside the teacher's config (independent of the directory ns-train ran in)."""
    folder = path.parent / "nerfstudio_models"
    checkpoints = checkpoints_in(folder)
    if not checkpoints:
        raise UserInputError(f"teacher {path} has no checkpoint in {folder}: train it first")
    return checkpoints[-1][1]


def build_teacher(path: Path, config: TrainerConfig, cameras: Cameras, device: torch.device | str) -> Teacher:
    """Instantiate the teacher's Gaussians from its latest checkpoint, frozen, on `device`."""
    checkpoint = latest_checkpoint(path)
    state = read_checkpoint(checkpoint)
    prefix = re.compile(r"^_model\.(module\.)?gauss_params\.")
    gaussians = {prefix.sub("gauss_params.", k): v for k, v in state["pipeline"].items() if prefix.match(k)}
    if "gauss_params.means" not in gaussians:
        raise UserInputError(f"teacher checkpoint {checkpoint} holds no Gaussians")

    # The scene box only places the few throw-away seeds of _render_config.
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = _render_config(config.pipeline.model).setup(scene_box=box, num_train_data=cameras.shape[0], metadata={})
    try:
        model.load_state_dict(gaussians, strict=False)
    except LOAD_ERRORS as error:
        raise mismatch_error(checkpoint, error, config.method_name) from None
    model.update_to_step(int(state.get("step", 0)))  # renders with every SH band it has learnt
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return Teacher(config_path=Path(path), method_name=config.method_name, checkpoint=checkpoint, model=model)


def _render_config(model: SplatfactoModelConfig) -> SplatBaseModelConfig:
    """The teacher's model settings on this package's splat base (which also renders on CPU).

    Rendering only needs the Gaussians, SH degree and rasterisation mode; training-only behaviour of
    the teacher's own class (dropout, perturbation) is off at render time anyway. A handful of seeds
    keeps construction cheap: the checkpoint replaces them.
    """
    values = {f.name: getattr(model, f.name) for f in fields(SplatfactoModelConfig) if f.init and f.name != "_target"}
    values.update(num_random=8, random_init=True)
    return SplatBaseModelConfig(**copy.deepcopy(values))


TeacherSource = Union[TrainerConfig, SplatFileHeader]


def read_teacher_configs(paths: Sequence[Path]) -> List[TeacherSource]:
    """Every teacher's run config or splat file header, checked (cheap: no data, no Gaussians read)."""
    if not paths:
        raise UserInputError(
            "distillation needs at least one teacher: pass --pipeline.teachers T1/config.yml [T2/config.yml ...] "
            "(runs of distilled-3dgs-teacher, -perturbed, -dropout or splatfacto) or a splat file (.ply, .spz). "
            "A no-distillation baseline instead sets pipeline.model.kd-weight 0, structure-weight 0 and max-gaussians"
        )
    return [read_header(p) if is_splat_file(p) else read_teacher_config(config_file(p)) for p in paths]


@dataclass(frozen=True)
class StudentFrame:
    """What a splat file teacher needs of the student's data: the capture -> dataparser transform,
    the frame the file is in, and the scene's background (a file does not say)."""

    to_dataparser: Similarity
    file_frame: Frame
    background_color: str


def load_teachers(
    paths: Sequence[Path],
    cameras: Cameras,
    device: torch.device | str,
    frame: StudentFrame | None = None,
    cache_bytes: int = 0,
) -> List[Teacher]:
    """Read, check and load every teacher; all checks run before any teacher is built.

    `cameras` are the student's training cameras as its dataparser produced them; `frame` places
    splat file teachers; `cache_bytes` is what the pseudo-label caches will add beside them.
    """
    sources = read_teacher_configs(paths)
    for path, source in zip(paths, sources):
        if isinstance(source, SplatFileHeader):
            check_memory(source, cache_bytes, device)
        else:
            check_same_cameras(config_file(path), source, cameras)
    teachers = []
    for path, source in zip(paths, sources):
        if isinstance(source, SplatFileHeader):
            if frame is None:
                raise UserInputError(f"teacher file {path} needs the student's capture frame to be placed")
            model = load_splat_file(Path(path), cameras, frame.to_dataparser, frame.file_frame,
                                       frame.background_color, device, header=source)  # fmt: skip
            teachers.append(Teacher(config_path=Path(path), method_name=SPLAT_FILE, checkpoint=Path(path), model=model))
        else:
            teachers.append(build_teacher(config_file(path), source, cameras, device))
    return teachers


def reference_teacher(teachers: Sequence[Teacher]) -> Teacher:
    """The standard teacher: the first plain 3DGS run or splat file, else the first teacher given."""
    for teacher in teachers:
        if teacher.method_name in REFERENCE_METHODS:
            return teacher
    return teachers[0]
