"""Regenerate the demo scene shipped in `distilled_gs_ns/data/demo_lego` from the NeRF-synthetic lego.

Usage: python scripts/make_demo_scene.py ../shared/data/lego [--size 100] [--eval-every 8]

Images are downscaled in premultiplied-alpha space (no dark fringes) and kept as RGBA so training
can use a random background; poses are converted to nerfstudio's transforms.json with an explicit
train/val/test split (every `eval_every`-th view held out for val and test).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

ATTRIBUTION = """Demo scene: a downscaled copy of the "lego" scene of the NeRF synthetic data set
(Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance Fields for View Synthesis", 2020).
The Lego model is by Heinzelnisse (https://www.blendswap.com/blend/11490), licensed CC-BY 3.0
(https://creativecommons.org/licenses/by/3.0/). Changes: images downscaled to {size}x{size} pixels,
poses converted to nerfstudio's transforms.json, an explicit train/eval split added.
"""


def downscale_rgba(path: Path, size: int) -> Image.Image:
    rgba = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255.0
    premult = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    small = np.stack(
        [np.asarray(Image.fromarray(premult[..., i]).resize((size, size), Image.Resampling.BOX)) for i in range(4)],
        axis=-1,
    )
    alpha = small[..., 3:]
    rgb = np.where(alpha > 1e-6, small[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    out = np.concatenate([np.clip(rgb, 0, 1), alpha], axis=-1)
    return Image.fromarray(np.round(out * 255).astype(np.uint8), mode="RGBA")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path, help="folder with transforms_train.json and train/")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "distilled_gs_ns/data/demo_lego")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=8)
    args = parser.parse_args()

    meta = json.loads((args.source / "transforms_train.json").read_text())
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    focal = 0.5 * args.size / math.tan(0.5 * meta["camera_angle_x"])
    frames, train, held_out = [], [], []
    for i, frame in enumerate(meta["frames"]):
        name = Path(frame["file_path"]).name + ".png"
        downscale_rgba(args.source / "train" / name, args.size).save(args.out / "images" / name, optimize=True)
        rel = f"images/{name}"
        frames.append({"file_path": rel, "transform_matrix": frame["transform_matrix"]})
        (held_out if i % args.eval_every == 0 else train).append(rel)
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": focal,
        "fl_y": focal,
        "cx": args.size / 2,
        "cy": args.size / 2,
        "w": args.size,
        "h": args.size,
        "frames": frames,
        "train_filenames": train,
        "val_filenames": held_out,
        "test_filenames": held_out,
    }
    (args.out / "transforms.json").write_text(json.dumps(transforms, indent=1))
    (args.out / "ATTRIBUTION.txt").write_text(ATTRIBUTION.format(size=args.size))
    print(f"wrote {len(frames)} views ({len(train)} train, {len(held_out)} held out) to {args.out}")


if __name__ == "__main__":
    main()
