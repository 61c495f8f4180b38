"""`distilled-gs export`: a trained splat as a file web viewers and other tools open."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional


@dataclass
class Export:
    """Write a trained Gaussian splat run (this package's methods or splatfacto) as a splat file.

    ply is what `ns-export gaussian-splat` writes (float32, 248 bytes per Gaussian at SH degree 3);
    spz is Niantic's format (gzip, version 3); compressed-ply is PlayCanvas' (SuperSplat)."""

    load_config: Path
    """config.yml of the trained run."""
    output: Path
    """File to write (replaced atomically if it exists)."""
    format: Literal["ply", "spz", "compressed-ply"] = "ply"
    """File format."""
    sh_degree: Optional[int] = None
    """Keep SH bands up to this degree (0-3); default: the model's own."""
    frame: Literal["dataparser", "capture"] = "dataparser"
    """World frame of the file. 'dataparser' (default): nerfstudio's oriented, centred and scaled
    frame, as `ns-export gaussian-splat` writes and ns-viewer shows. 'capture': the capture's own
    (COLMAP's), through the run's dataparser_transforms.json, so the splat lines up with the user's
    other splats and tools of that capture (SH colour rotated with it)."""
    spz_sh_bits: Optional[int] = None
    """spz only: bits kept per SH coefficient (1-8; default 6, Niantic's encoder keeps 5 for degree 1
    and 4 above). Every reader decodes any precision; more bits, better colour and a larger file."""

    def main(self) -> None:
        from distilled_gs_ns.export.writer import export_run, resolve_format

        fmt = resolve_format(self.format, self.spz_sh_bits)
        print(export_run(self.load_config, fmt, self.output, self.sh_degree, self.frame).line())
