"""Checks and adaptations of a capture before nerfstudio's dataparser reads it.

nerfstudio 1.1.5 fails late, with an unrelated message, a prompt or a matrix-shape error, on inputs
real captures commonly have (a missing images_N folder, a COLMAP model without points). Every
consumer of a run's data config (training, and the student's check of its teachers' data) applies
the same adaptations, so they parse the capture identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PIL import Image
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.utils.rich_utils import CONSOLE

from distilled_gs_ns.data.downscale import IMAGE_SUFFIXES
from distilled_gs_ns.errors import UserInputError


def prepare_data(datamanager_config) -> None:
    """Fail early, in plain words, when the scene the datamanager would parse is not there or not
    readable, and adapt the dataparser settings nerfstudio 1.1.5 would crash on."""
    dataparser = datamanager_config.dataparser
    data: Optional[Path] = getattr(datamanager_config, "data", None) or getattr(dataparser, "data", None)
    if data is None:
        raise UserInputError("no scene given: pass --data PATH")
    data = Path(data)
    if not data.exists():
        raise UserInputError(
            f"the data path {data} does not exist (ns-viewer, ns-export and ns-eval re-read the training data, "
            "so it must still be there); pass --data with the scene folder"
        )
    if isinstance(dataparser, NerfstudioDataParserConfig) and data.is_dir() and not (data / "transforms.json").exists():
        raise UserInputError(f"{data} has no transforms.json: it is not a scene in nerfstudio's format")
    if isinstance(dataparser, BlenderDataParserConfig) and not (data / "transforms_train.json").exists():
        raise UserInputError(f"{data} has no transforms_train.json: it is not a Blender-format scene")
    check_downscaled_images(dataparser, data)
    if isinstance(dataparser, ColmapDataParserConfig) and dataparser.load_3D_points and data.is_dir():
        if count_colmap_points(data / dataparser.colmap_path) == 0:
            # nerfstudio 1.1.5 crashes on an empty or missing points3D (a matrix-shape error); posed
            # captures exported without triangulation have none. Start from random seeds instead.
            CONSOLE.log(f"no COLMAP points in {data / dataparser.colmap_path}: starting from random seeds")
            dataparser.load_3D_points = False


def automatic_downscale(images: Path) -> int:
    """The factor nerfstudio's colmap dataparser picks without --downscale-factor: the smallest power
    of two that brings the larger image side to 1600 px or below."""
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
    if not files:
        return 1
    with Image.open(files[0]) as image:
        largest = max(image.size)
    factor = 1
    while largest / factor > 1600:
        factor *= 2
    return factor


def count_colmap_points(sparse: Path) -> int:
    """Points in a COLMAP model's points3D.bin or points3D.txt (0 when there is neither)."""
    binary, text = sparse / "points3D.bin", sparse / "points3D.txt"
    if binary.exists():
        with binary.open("rb") as handle:
            header = handle.read(8)
        return int.from_bytes(header, "little") if len(header) == 8 else 0
    if text.exists():
        with text.open() as handle:
            return sum(1 for line in handle if line.strip() and not line.lstrip().startswith("#"))
    return 0


def check_downscaled_images(dataparser, data: Path) -> None:
    """A --downscale-factor N > 1 needs the images_N folder next to the images.

    Without it nerfstudio's colmap dataparser stops to ask on the terminal (a hung or failed run
    when nobody is there) and then shells out to ffmpeg; its nerfstudio dataparser fails later on a
    missing file. One sentence instead, with the way to make the folder.
    """
    if isinstance(dataparser, ColmapDataParserConfig):
        images = data / dataparser.images_path
    elif isinstance(dataparser, NerfstudioDataParserConfig):
        images = data / "images"
    else:
        return
    factor = getattr(dataparser, "downscale_factor", None)
    source = f"--downscale-factor {factor}"
    if factor is None and isinstance(dataparser, ColmapDataParserConfig):
        factor = automatic_downscale(images)
        source = f"the automatic downscale factor {factor} (images over 1600 px)"
    if factor is None or factor <= 1 or not data.is_dir():
        return
    folder = images.parent / f"{images.name}_{factor}"
    if not folder.is_dir():
        raise UserInputError(
            f"{source} reads the downscaled images from {folder}, which does not exist: create it "
            f"with `python -m distilled_gs_ns.data.downscale {data} --factor {factor}` (or ns-process-data), or pass "
            "--downscale-factor 1"
        )
