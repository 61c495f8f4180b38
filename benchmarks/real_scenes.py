"""Real captures for the benchmarks, built from public repositories and never committed (their licences).

Each scene is written once into a folder laid out as a user's capture is (original camera model and
poses, images downscaled into `images_N/` as nerfstudio's `--downscale-factor N` reads them), with
the dataparser flags that hold every 8th frame out, as the 3DGS papers do:

- fox-135x240 / fox-270x480: instant-ngp's fox (NVlabs/instant-ngp, data/nerf/fox): the 50 phone
  frames whose images the repository holds (its transforms.json lists 67), 1080x1920 portrait, one OpenCV camera (k1, k2, p1, p2), nerfstudio/instant-ngp
  transforms.json, no point cloud (random seeds). Downscaled 8x and 4x.
- mouse-240: a computer mouse on a desk (Myhan1023/mouse-3d-reconstruction): 56 registered phone
  photos, portrait and landscape mixed (1440x1920 and 1920x1440), one PINHOLE camera per photo,
  COLMAP binary model with 4443 points, changing exposure. Downscaled 8x (180x240 and 240x180).

A source is a clone of the repository (a checkout, or a bare git directory such as the search
tool's mirrors), found under `--sources` as `<owner>+<name>/repo`, `<owner>+<name>` or `<name>`.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from PIL import Image


class SourceTree:
    """Files of a repository clone: a checkout or a bare git directory (read at HEAD)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = (root / "HEAD").is_file() and (root / "objects").is_dir()

    def read(self, path: str) -> bytes:
        if self.bare:
            return subprocess.run(["git", f"--git-dir={self.root}", "show", f"HEAD:{path}"], check=True, capture_output=True).stdout
        return (self.root / path).read_bytes()

    def list(self, folder: str) -> List[str]:
        if self.bare:
            out = subprocess.run(["git", f"--git-dir={self.root}", "ls-tree", "--name-only", "HEAD", f"{folder}/"],
                                 check=True, capture_output=True, text=True).stdout  # fmt: skip
            return sorted(out.split())
        return sorted(f"{folder}/{p.name}" for p in (self.root / folder).iterdir() if p.is_file())


def find_source(sources: Sequence[Path], repo: str) -> SourceTree:
    owner, name = repo.split("/")
    for base in sources:
        for candidate in (base / f"{owner}+{name}" / "repo", base / f"{owner}+{name}" / "repo" / ".git", base / f"{owner}+{name}", base / name):
            if candidate.is_dir() and ((candidate / "HEAD").is_file() or (candidate / ".git").exists()):
                return SourceTree(candidate / ".git" if (candidate / ".git").is_dir() else candidate)
    raise SystemExit(
        f"error: no clone of {repo} under {', '.join(map(str, sources))}: "
        f"git clone https://github.com/{repo} into one of them (or pass --sources DIR)"
    )


def write_downscaled(tree: SourceTree, paths: Sequence[str], target: Path, factor: int) -> None:
    """Each image of `paths` resized to floor(size / factor) by area averaging (as
    distilled_gs_ns.data.downscale writes `images_N/`), saved under `target` by its file name (JPEG at
    quality 95 for .jpg names, as nerfstudio looks the files up by the original names)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        with Image.open(io.BytesIO(tree.read(path))) as image:
            width, height = image.size
            small = image.convert("RGB").resize((width // factor, height // factor), Image.BOX)
        small.save(target / Path(path).name, quality=95)


def fox(tree: SourceTree, folder: Path, factor: int) -> None:
    meta = json.loads(tree.read("data/nerf/fox/transforms.json"))
    present = set(tree.list("data/nerf/fox/images"))
    meta["frames"] = [frame for frame in meta["frames"] if f"data/nerf/fox/{frame['file_path']}" in present]
    images = [frame["file_path"] for frame in meta["frames"]]
    write_downscaled(tree, [f"data/nerf/fox/{p}" for p in images], folder / f"images_{factor}", factor)
    (folder / "images").mkdir(exist_ok=True)  # the originals are not needed with --downscale-factor
    meta["camera_model"] = "OPENCV"
    for frame in meta["frames"]:
        frame["file_path"] = f"images/{Path(frame['file_path']).name}"
    (folder / "transforms.json").write_text(json.dumps(meta, indent=2))


def mouse(tree: SourceTree, folder: Path, factor: int) -> None:
    sparse = folder / "colmap" / "sparse" / "0"
    sparse.mkdir(parents=True, exist_ok=True)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        (sparse / name).write_bytes(tree.read(f"sparse/0/{name}"))
    write_downscaled(tree, tree.list("images"), folder / f"images_{factor}", factor)
    (folder / "images").mkdir(exist_ok=True)


@dataclass(frozen=True)
class RealScene:
    repo: str
    """The public repository (owner/name) the capture comes from."""
    build: Callable[[SourceTree, Path], None]
    """Writes the capture into a folder."""
    dataparser: str
    dataparser_flags: str
    """As `distilled-gs distill --dataparser/--dataparser-flags` take them."""


HOLD_OUT_EVERY_8TH = "--eval-mode interval --eval-interval 8"
SCENES: Dict[str, RealScene] = {
    "fox-135x240": RealScene("NVlabs/instant-ngp", lambda t, f: fox(t, f, 8), "nerfstudio-data",
                             f"--downscale-factor 8 {HOLD_OUT_EVERY_8TH}"),
    "fox-270x480": RealScene("NVlabs/instant-ngp", lambda t, f: fox(t, f, 4), "nerfstudio-data",
                             f"--downscale-factor 4 {HOLD_OUT_EVERY_8TH}"),
    "mouse-240": RealScene("Myhan1023/mouse-3d-reconstruction", lambda t, f: mouse(t, f, 8), "colmap",
                           f"--downscale-factor 8 {HOLD_OUT_EVERY_8TH}"),
}  # fmt: skip


def scene_folder(name: str, root: Path, sources: Sequence[Path]) -> Path:
    """The scene's capture folder under `root`, written once (a finished folder carries a marker)."""
    folder = root / name
    marker = folder / ".complete"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        SCENES[name].build(find_source(sources, SCENES[name].repo), folder)
        marker.touch()
    return folder
