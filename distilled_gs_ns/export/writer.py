"""Export a trained run to a splat file: load it as `ns-export` does, encode, check, write."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from distilled_gs_ns.engine.checkpoint_files import write_atomically
from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.formats import FORMATS, SplatFormat
from distilled_gs_ns.export.frames import Frame, run_capture_to_dataparser
from distilled_gs_ns.export.splat_data import SplatData, from_model

SPZ_MAX_COORDINATE = (2**23 - 1) / 2**12
"""SPZ stores positions as 24-bit fixed point with 12 fractional bits: about +-2048 scene units."""
SPZ_MAX_POINTS = 10_000_000
"""Niantic's reader refuses files with more Gaussians."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    gaussians: int
    sh_degree: int
    bytes: int

    @property
    def bytes_per_gaussian(self) -> float:
        return self.bytes / max(self.gaussians, 1)

    def line(self) -> str:
        return (
            f"wrote {self.path}: {self.format}, {self.gaussians} Gaussians at SH degree {self.sh_degree}, "
            f"{self.bytes / 1e6:.3f} MB ({self.bytes_per_gaussian:.1f} bytes per Gaussian)"
        )


@contextmanager
def lpips_without_download() -> Iterator[None]:
    """nerfstudio's splatfacto builds torchmetrics' LPIPS when it is constructed, which downloads
    AlexNet weights and fails offline; an export needs no metric, so it gets the lazy one."""
    import torchmetrics.image.lpip as lpip

    from distilled_gs_ns.metrics.lpips import LazyLPIPS

    original = lpip.LearnedPerceptualImagePatchSimilarity
    lpip.LearnedPerceptualImagePatchSimilarity = lambda *args, **kwargs: LazyLPIPS()
    try:
        yield
    finally:
        lpip.LearnedPerceptualImagePatchSimilarity = original


def load_splat_model(load_config: Path):
    """The trained model of a run, loaded as ns-export loads it (a student needs no teacher files)."""
    from nerfstudio.models.splatfacto import SplatfactoModel
    from nerfstudio.utils.eval_utils import eval_setup

    if not load_config.is_file():
        raise UserInputError(f"no run at {load_config}: --load-config takes the config.yml of a finished ns-train run")
    with lpips_without_download():
        _, pipeline, _, _ = eval_setup(load_config, test_mode="inference")
    model = pipeline.model
    if not isinstance(model, SplatfactoModel):
        raise UserInputError(
            f"{load_config} is a {type(model).__name__} run: only Gaussian splat runs (this package's methods, "
            "splatfacto) can be exported as splat files"
        )
    return pipeline


def check_writable(data: SplatData, fmt: SplatFormat) -> None:
    """Refuse what a format cannot hold, before anything is written."""
    if data.count == 0:
        raise UserInputError("the model has no Gaussians to export (all are transparent or not finite)")
    if fmt.name == "spz":
        if data.count > SPZ_MAX_POINTS:
            raise UserInputError(f"spz readers take at most {SPZ_MAX_POINTS} Gaussians; this model has {data.count}")
        extent = float(np.abs(data.means).max())
        if extent > SPZ_MAX_COORDINATE:
            raise UserInputError(
                f"spz stores positions within +-{SPZ_MAX_COORDINATE:.0f} units; this model reaches {extent:.0f}: "
                "use --format ply or compressed-ply"
            )


def export_splat(data: SplatData, fmt: SplatFormat, output: Path, sh_degree: Optional[int] = None) -> ExportReport:
    """Encode `data` (at `sh_degree`, default its own) in `fmt` and write it to `output` atomically."""
    if sh_degree is not None:
        data = data.with_sh_degree(sh_degree)
    check_writable(data, fmt)
    raw = fmt.encode(data)
    write_atomically(output, lambda handle: handle.write(raw))
    return ExportReport(path=output, format=fmt.name, gaussians=data.count, sh_degree=data.sh_degree, bytes=len(raw))


def resolve_format(name: str, spz_sh_bits: Optional[int] = None) -> SplatFormat:
    """The format called `name`; for spz, SH kept to `spz_sh_bits` bits in every band if given."""
    if name not in FORMATS:
        raise UserInputError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    if spz_sh_bits is None:
        return FORMATS[name]
    if name != "spz":
        raise UserInputError(f"--spz-sh-bits applies to --format spz only, not {name}")
    if not 1 <= spz_sh_bits <= 8:
        raise UserInputError(f"--spz-sh-bits must be 1-8, got {spz_sh_bits}")
    return replace(FORMATS["spz"], sh_bits=(spz_sh_bits,) * 3)


def export_run(
    load_config: Path, fmt: SplatFormat, output: Path, sh_degree: Optional[int] = None, frame: Frame = "dataparser"
) -> ExportReport:
    """Write the run's Gaussians in `frame`: nerfstudio's dataparser frame (as ns-export) or the
    capture's own, through the run's dataparser_transforms.json (export/frames.py)."""
    to_capture = run_capture_to_dataparser(load_config.parent).inverse() if frame == "capture" else None
    pipeline = load_splat_model(load_config)
    data = from_model(pipeline.model)
    return export_splat(to_capture.splat(data) if to_capture else data, fmt, output, sh_degree)
