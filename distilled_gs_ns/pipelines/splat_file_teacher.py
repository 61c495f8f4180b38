"""A splat file as the standard teacher: a user's existing 3DGS `.ply`, `.spz` or compressed `.ply`.

The file is read in its capture's own world frame (or nerfstudio's dataparser frame, for a PLY from
`ns-export gaussian-splat`) and mapped into the student's dataparser frame (export/frames.py). Every
check runs before any rendering or training and says in one line what is wrong and the likely
cause: missing fields, an SH degree the f_rest count does not give, non-finite values, more
Gaussians than memory holds, or a splat that does not face the capture's cameras.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox

from distilled_gs_ns.errors import UserInputError
from distilled_gs_ns.export.formats import FORMATS, RDF_TO_RUB_POSITION
from distilled_gs_ns.export.frames import Frame, Similarity
from distilled_gs_ns.export.splat_data import SplatData, sh_coefficients
from distilled_gs_ns.models.splat_base import SplatBaseModel, SplatBaseModelConfig

SPLAT_FILE_SUFFIXES = (".ply", ".spz")
REQUIRED_PLY_FIELDS = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip
COMPRESSED_PLY_FIELDS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
TRAINING_BYTES_PER_GAUSSIAN = 4096
"""Device memory a Gaussian of the file costs while the student trains from it: the frozen teacher
copy (59 float32), the student's copy with gradients and two Adam moments (4 x 59 float32) and the
rasteriser's per-Gaussian work, with a 2x margin."""
MIN_COVERAGE = 0.5
"""A file whose Gaussians lie outside every training camera's view for more than half of them does
not face the capture (a splat trained on it puts nearly all its Gaussians where cameras see)."""
MIN_RELATIVE_SIZE = 0.01
"""A file smaller than 1% of the cameras' distance to it is a speck in every view: in a frame scaled
far down (COLMAP units are arbitrary, nerfstudio rescales them), not the capture."""


def is_splat_file(path: Path) -> bool:
    return Path(path).suffix.lower() in SPLAT_FILE_SUFFIXES


@dataclass(frozen=True)
class SplatFileHeader:
    """What a splat file holds, read from its header alone (no Gaussians decoded)."""

    path: Path
    format: str  # "ply", "compressed-ply" or "spz"
    count: int
    sh_degree: int


def read_header(path: Path) -> SplatFileHeader:
    """The format, Gaussian count and SH degree of `path`, checked; one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"teacher file {path} does not exist")
    if path.suffix.lower() == ".spz":
        return _spz_header(path)
    return _ply_header(path)


def _ply_header(path: Path) -> SplatFileHeader:
    with path.open("rb") as handle:
        if handle.readline().strip() != b"ply":
            raise UserInputError(f"teacher file {path} is not a PLY file (no 'ply' magic line)")
        elements: List[Tuple[str, int, List[str]]] = []
        for _ in range(100_000):
            line = handle.readline()
            if not line:
                raise UserInputError(f"teacher file {path} has a PLY header without end_header (truncated?)")
            words = line.decode("ascii", errors="replace").split()
            if words[:1] == ["end_header"]:
                break
            if words[:1] == ["element"] and len(words) == 3:
                elements.append((words[1], int(words[2]), []))
            elif words[:1] == ["property"] and elements:
                elements[-1][2].append(words[-1])
    named = {name: (count, props) for name, count, props in elements}
    if "vertex" not in named:
        raise UserInputError(f"teacher file {path} has no vertex element: not a Gaussian splat PLY")
    count, props = named["vertex"]
    if "chunk" in named:  # PlayCanvas' compressed PLY
        missing = [f for f in COMPRESSED_PLY_FIELDS if f not in props]
        rest = len(named.get("sh", (0, []))[1])
        fmt = "compressed-ply"
    else:
        missing = [f for f in REQUIRED_PLY_FIELDS if f not in props]
        rest = sum(1 for p in props if p.startswith("f_rest_"))
        fmt = "ply"
    if missing:
        raise UserInputError(
            f"teacher file {path} lacks the Gaussian fields {', '.join(missing)}: not a 3DGS splat "
            "(a point cloud or mesh PLY?)"
        )
    return SplatFileHeader(path, fmt, count, _degree_of_rest(path, rest))


def _degree_of_rest(path: Path, rest: int) -> int:
    for degree in range(4):
        if 3 * sh_coefficients(degree) == rest:
            return degree
    raise UserInputError(
        f"teacher file {path} has {rest} f_rest values per Gaussian, which is no SH degree "
        "(degree 1, 2, 3 hold 9, 24, 45)"
    )


def _spz_header(path: Path) -> SplatFileHeader:
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read(16)
    except (OSError, EOFError) as error:
        raise UserInputError(f"teacher file {path} is not a gzip SPZ file: {error}") from None
    if len(raw) < 16 or struct.unpack("<I", raw[:4])[0] != 0x5053474E:
        raise UserInputError(f"teacher file {path} is not an SPZ file (no NGSP magic)")
    version, count, degree = struct.unpack("<IIB", raw[4:13])
    if degree > 3:
        raise UserInputError(f"teacher file {path} declares SH degree {degree}; SPZ holds degree 0-3")
    return SplatFileHeader(path, "spz", count, degree)


def check_memory(header: SplatFileHeader, cache_bytes: int, device: torch.device | str) -> None:
    """Refuse a file the training device cannot hold; on the CPU the label caches (`cache_bytes`,
    which always live there) count too."""
    free, where = free_memory(device)
    need = header.count * TRAINING_BYTES_PER_GAUSSIAN + (cache_bytes if where == "CPU" else 0)
    if need > free:
        raise UserInputError(
            f"teacher file {header.path} holds {header.count} Gaussians: training from it needs about "
            f"{need / 2**30:.1f} GiB of {where} memory, {free / 2**30:.1f} GiB is free "
            "(prune it first, or train on a larger device; image caches count too)"
        )


def free_memory(device: torch.device | str) -> Tuple[int, str]:
    """Free bytes on the training device, and its name for messages."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "GPU"
    return available_cpu_memory(), "CPU"


def available_cpu_memory() -> int:
    """Memory the kernel can give without swapping (Linux's MemAvailable; elsewhere the free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def read_splat_file(header: SplatFileHeader) -> SplatData:
    """The file's Gaussians, decoded and checked to be finite."""
    try:
        data = FORMATS[header.format].decode(header.path.read_bytes())
    except UserInputError:
        raise
    except Exception as error:  # a corrupt body: numpy, plyfile and gsply raise many types
        raise UserInputError(f"teacher file {header.path} cannot be decoded as {header.format}: {error}") from None
    n = data.count
    finite = np.ones(n, dtype=bool)
    for field in (data.means, data.log_scales, data.quats, data.sh_dc, data.sh_rest.reshape(n, -1)):
        finite &= np.isfinite(field).all(axis=1)
    finite &= np.isfinite(data.opacity_logits)
    if not finite.all():
        raise UserInputError(
            f"teacher file {header.path}: {int((~finite).sum())} of {n} Gaussians hold NaN or Inf values "
            "(a diverged run?)"
        )
    if n == 0:
        raise UserInputError(f"teacher file {header.path} holds no Gaussians")
    return data


def coverage(means: np.ndarray, cameras: Cameras, sample: int = 100_000) -> float:
    """Share of the Gaussians (a fixed sample) inside at least one training camera's view."""
    if means.shape[0] > sample:
        means = means[np.random.default_rng(0).choice(means.shape[0], sample, replace=False)]
    points = torch.from_numpy(np.asarray(means, np.float32))
    seen = torch.zeros(points.shape[0], dtype=torch.bool)
    c2w = cameras.camera_to_worlds.cpu().float()
    for i in range(c2w.shape[0]):
        local = (points - c2w[i, :, 3]) @ c2w[i, :, :3]  # OpenGL camera axes: looking down -z
        depth = -local[:, 2]
        front = depth > 1e-6
        u = cameras.fx[i].item() * local[:, 0] / depth.clamp_min(1e-6) + cameras.cx[i].item()
        v = -cameras.fy[i].item() * local[:, 1] / depth.clamp_min(1e-6) + cameras.cy[i].item()
        seen |= front & (u >= 0) & (u <= cameras.width[i].item()) & (v >= 0) & (v <= cameras.height[i].item())
    return float(seen.float().mean())


def relative_size(means: np.ndarray, cameras: Cameras) -> float:
    """The splat's size (90th percentile distance from its median) over the cameras' median distance
    to it: about 0.2-2 for a splat of the capture, tiny for one in a frame scaled far down."""
    centre = np.median(means, axis=0)
    size = float(np.percentile(np.linalg.norm(means - centre, axis=1), 90))
    distance = float(np.median(np.linalg.norm(cameras.camera_to_worlds[:, :, 3].cpu().numpy() - centre, axis=1)))
    return size / max(distance, 1e-12)


def facing_problem(means: np.ndarray, cameras: Cameras) -> Optional[str]:
    """Why Gaussians at `means` (dataparser frame) do not face the cameras, or None if they do."""
    share = coverage(means, cameras)
    if share < MIN_COVERAGE:
        return f"{1 - share:.0%} of its Gaussians lie outside every training view"
    size = relative_size(means, cameras)
    if size < MIN_RELATIVE_SIZE:
        return f"it spans {size:.2%} of the cameras' distance to it, a speck in every view"
    return None


def check_faces_cameras(
    header: SplatFileHeader, data: SplatData, placed_means: np.ndarray, to_dataparser: Similarity, frame: Frame,
    cameras: Cameras,
) -> None:
    """Refuse a splat that does not face the capture's cameras (`placed_means`: the file's means as
    read in `frame`, in the dataparser frame), naming the likely cause."""

    def placed(means: np.ndarray, in_frame: Frame) -> np.ndarray:
        return to_dataparser.points(means) if in_frame == "capture" else means

    problem = facing_problem(placed_means, cameras)
    if problem is None:
        return
    other: Frame = "dataparser" if frame == "capture" else "capture"
    hint = " (ns-export gaussian-splat writes the dataparser frame)" if other == "dataparser" else ""
    alternatives: List[Tuple[str, np.ndarray]] = [
        (f"it is in the {other} frame: pass --pipeline.teacher-frame {other}{hint}", placed(data.means, other))
    ]
    if header.format == "spz":
        alternatives.append(
            ("its writer kept PLY's axes instead of SPZ's (RUB): convert it with a current SPZ writer",
             placed(data.means * RDF_TO_RUB_POSITION, frame))  # fmt: skip
        )
    cause = "a splat of another scene, or in a frame that is neither the capture's nor nerfstudio's dataparser frame"
    for reason, means in alternatives:
        if facing_problem(means, cameras) is None:
            cause = reason
            break
    raise UserInputError(
        f"teacher file {header.path} does not face this capture in the {frame} frame: {problem}. Likely cause: {cause}"
    )


def splat_model(data: SplatData, background_color: str, device: torch.device | str) -> SplatBaseModel:
    """A frozen splat model holding `data` at its full SH degree (degree 0 files as degree 1 with
    zero bands: the PLY's f_dc is an SH DC term, which splatfacto's degree 0 would read as a logit)."""
    degree = max(data.sh_degree, 1)
    n = data.count
    rest = np.zeros((n, sh_coefficients(degree), 3), np.float32)
    rest[:, : data.sh_rest.shape[1]] = data.sh_rest
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    config = SplatBaseModelConfig(sh_degree=degree, num_random=8, random_init=True, background_color=background_color)  # type: ignore[arg-type]
    model = config.setup(scene_box=box, num_train_data=1, metadata={})

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    model.load_state_dict(
        {
            "gauss_params.means": tensor(data.means),
            "gauss_params.scales": tensor(data.log_scales),
            "gauss_params.quats": tensor(data.quats),
            "gauss_params.features_dc": tensor(data.sh_dc),
            "gauss_params.features_rest": tensor(rest),
            "gauss_params.opacities": tensor(data.opacity_logits[:, None]),
        },
        strict=False,
    )
    model.update_to_step(degree * model.config.sh_degree_interval)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def load_splat_file(
    path: Path,
    cameras: Cameras,
    to_dataparser: Similarity,
    frame: Frame,
    background_color: str,
    device: torch.device | str,
    header: Optional[SplatFileHeader] = None,
) -> SplatBaseModel:
    """The file's Gaussians in the dataparser frame as a frozen model, checked to face the cameras."""
    header = header or read_header(path)
    data = read_splat_file(header)
    placed = to_dataparser.splat(data) if frame == "capture" else data
    check_faces_cameras(header, data, placed.means, to_dataparser, frame, cameras)
    return splat_model(placed, background_color, device)
