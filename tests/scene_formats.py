"""A copy of the demo scene in the Blender (NeRF-synthetic) format, for tests."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from distilled_gs_ns.data import DEMO_SCENE


def _demo() -> dict:
    return json.loads((DEMO_SCENE / "transforms.json").read_text())


def to_blender(dst: Path) -> Path:
    """transforms_{train,val,test}.json + PNGs, as the NeRF-synthetic release lays them out."""
    meta = _demo()
    held_out = set(meta["val_filenames"])
    angle_x = 2 * math.atan(meta["w"] / (2 * meta["fl_x"]))
    splits = {"train": [], "val": [], "test": []}
    for frame in meta["frames"]:
        name = Path(frame["file_path"]).stem
        for split in ("val", "test") if frame["file_path"] in held_out else ("train",):
            (dst / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(DEMO_SCENE / frame["file_path"], dst / split / f"{name}.png")
            splits[split].append({"file_path": f"./{split}/{name}", "transform_matrix": frame["transform_matrix"]})
    for split, frames in splits.items():
        (dst / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": frames}))
    return dst
