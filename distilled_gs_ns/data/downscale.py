"""Downscaled image folders (`images_N/`) without ffmpeg, for nerfstudio's `--downscale-factor N`.

nerfstudio reads downscaled images from a folder beside the originals and, for COLMAP data, offers
to make it interactively with the system's ffmpeg. This writes the same folder in Python: every
image resized to floor(size / N) (nerfstudio's default rounding, the size its cameras are rescaled
to) by area averaging.

    python -m distilled_gs_ns.data.downscale path/to/scene --factor 2
"""

from __future__ import annotations

from pathlib import Path

import tyro
from PIL import Image
from rich.progress import track

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def downscale_images(data: Path, factor: int, images: Path = Path("images")) -> Path:
    """Write `data/images_<factor>/` from `data/images/` (sub-folders kept); returns the new folder."""
    if factor < 2:
        raise ValueError(f"the factor must be an integer >= 2, got {factor}")
    source = Path(data) / images
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder of images")
    target = source.parent / f"{source.name}_{factor}"
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in track(files, description=f"downscaling {len(files)} images by {factor}"):
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            width, height = image.size
            image.resize((width // factor, height // factor), Image.BOX).save(out)
    return target


def main(data: Path, factor: int = 2, images: Path = Path("images")) -> None:
    """Write DATA/images_FACTOR from DATA/images for ns-train's --downscale-factor FACTOR."""
    print(downscale_images(data, factor, images))


if __name__ == "__main__":
    tyro.cli(main)
