"""A user's existing splat file as the teacher, through the real CLI, on a COLMAP capture whose
world frame is tilted, 40x larger and far from the origin (nerfstudio orients and scales it strongly).

A teacher trained here is exported in the capture's frame (`distilled-gs export --frame capture`) as
the user's file would be; imported back as a file teacher it must render what the run renders at
every training view (>= 45 dB: positions, rotations, scales, opacities and every SH band), a student
trains from its .spz and compressed .ply, and each bad file gets one line before any work.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

from distilled_gs_ns.data.captures import TILTED_WORLD, colmap_capture
from distilled_gs_ns.export.formats import FORMATS, encode_ply
from distilled_gs_ns.export.frames import Similarity
from distilled_gs_ns.export.splat_data import SplatData
from distilled_gs_ns.pipelines.splat_file_teacher import splat_model
from distilled_gs_ns.pipelines.teachers import StudentFrame, load_teachers
from distilled_gs_ns.export.formats import decode_ply
from tests.cli import TrainedRun, run_cli, short_schedule
from tests.test_cli_errors import assert_clean_error
from tests.test_cli_real_captures import STRIDE, served_views, train_on

pytestmark = pytest.mark.cli
COLMAP = ["colmap"]
SUFFIX = {"ply": ".ply", "spz": ".spz", "compressed-ply": ".compressed.ply"}


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return colmap_capture(tmp_path_factory.mktemp("tilted") / "capture", lens="opencv", num_points=1500,
                          stride=STRIDE, world=TILTED_WORLD)  # fmt: skip


@pytest.fixture(scope="module")
def teacher(capture: Path, tmp_path_factory) -> TrainedRun:
    # SH bands from step 10 (short_schedule adds one every 100) at 400x splatfacto's rate: every band is
    # large enough that a frame change which left them unrotated would fail the round trip.
    # The random background, as distill's schedule for a capture has it, so its table can be compared.
    return train_on("distilled-3dgs-teacher", capture, tmp_path_factory.mktemp("teacher"), steps=60, parser=COLMAP,
                    extra=["--pipeline.model.sh-degree-interval", "10", "--optimizers.features-rest.optimizer.lr", "0.05",
                           "--pipeline.model.background-color", "random"])  # fmt: skip


@pytest.fixture(scope="module")
def files(teacher: TrainedRun, tmp_path_factory) -> Dict[str, Path]:
    """The teacher in every format in the capture's frame, and as ply in the dataparser frame."""
    out = tmp_path_factory.mktemp("files")
    paths = {}
    for fmt, suffix in SUFFIX.items():
        paths[fmt] = out / f"capture{suffix}"
        run_cli(["distilled-gs", "export", "--load-config", str(teacher.config), "--format", fmt,
                 "--output", str(paths[fmt]), "--frame", "capture"])  # fmt: skip
    paths["dataparser"] = out / "dataparser.ply"
    run_cli(["distilled-gs", "export", "--load-config", str(teacher.config), "--output", str(paths["dataparser"])])
    return paths


def _student_frame(capture: Path, file_frame: str = "capture") -> StudentFrame:
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    outputs = ColmapDataParserConfig(data=capture).setup().get_dataparser_outputs("train")
    to_dataparser = Similarity.from_dataparser(outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale))
    return StudentFrame(to_dataparser=to_dataparser, file_frame=file_frame, background_color="random")  # type: ignore[arg-type]


@torch.no_grad()
def _psnr_per_view(a, b, cameras) -> list:
    values = []
    for i in range(len(cameras)):
        x = a.get_outputs(cameras[i : i + 1])["rgb"]
        y = b.get_outputs(cameras[i : i + 1])["rgb"]
        values.append(float(-10 * torch.log10(((x - y) ** 2).mean().clamp_min(1e-12))))
    return values


def test_capture_frame_file_lies_in_the_capture_frame(files: Dict[str, Path], capture: Path) -> None:
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    means = decode_ply(files["ply"].read_bytes()).means
    points = np.array([p.xyz for p in colmap.read_points3D_binary(capture / "colmap/sparse/0/points3D.bin").values()])
    # The splat grew from the COLMAP points: its centre and size are theirs, not the dataparser's.
    assert np.abs(np.median(means, axis=0) - np.median(points, axis=0)).max() < 0.1 * np.ptp(points, axis=0).max()
    assert 0.3 < np.ptp(means, axis=0).max() / np.ptp(points, axis=0).max() < 3.0


@pytest.mark.parametrize("fmt, frame", [("ply", "capture"), ("dataparser", "dataparser")])
def test_round_trip_renders_what_the_run_renders(teacher: TrainedRun, files, capture: Path, fmt: str, frame: str) -> None:
    raw, _, _ = served_views(capture, parser="colmap")
    (run,) = load_teachers([teacher.config], raw, "cpu")
    (imported,) = load_teachers([files[fmt]], raw, "cpu", _student_frame(capture, frame))
    assert imported.method_name == "splat-file" and imported.num_gaussians == run.num_gaussians
    for model in (run.model, imported.model):
        model.config.background_color = "black"  # the file does not say; the pipeline gives it the student's
    psnr = _psnr_per_view(run.model, imported.model, raw)
    print(f"round trip ({fmt}, {frame} frame): min {min(psnr):.1f} dB over {len(psnr)} training views")
    assert min(psnr) >= 45.0, psnr
    if frame == "capture":  # the same import with SH bands 1-3 left unrotated must fail this bar
        data = decode_ply(files[fmt].read_bytes())
        moved = _student_frame(capture).to_dataparser.splat(data)
        unrotated = splat_model(replace(moved, sh_rest=data.sh_rest), "black", "cpu")
        worst = min(_psnr_per_view(run.model, unrotated, raw))
        print(f"round trip with SH bands left unrotated: min {worst:.1f} dB")
        assert worst < 45.0


@pytest.mark.parametrize("fmt", ["spz", "compressed-ply"])
def test_student_trains_evaluates_and_exports_from_a_file_teacher(files, capture: Path, tmp_path: Path, fmt: str) -> None:
    teacher_count = decode_ply(files["ply"].read_bytes()).count
    run = train_on("distilled-3dgs-student", capture, tmp_path / "student", steps=40,
                   extra=["--pipeline.teachers", str(files[fmt])], parser=COLMAP)  # fmt: skip
    assert f"student starts from all {teacher_count} Gaussians of the standard teacher" in run.log.replace("\n", " ")
    results = run.evaluate(tmp_path / "eval.json")
    assert results["psnr"] > 12.0
    assert results["gaussian_count"] == round(0.12 * teacher_count)
    run_cli(["distilled-gs", "export", "--load-config", str(run.config), "--output", str(tmp_path / "student.spz"),
             "--format", "spz", "--frame", "capture"])  # fmt: skip
    assert (tmp_path / "student.spz").stat().st_size > 0


def _write(path: Path, data: SplatData) -> Path:
    path.write_bytes(encode_ply(data))
    return path


def _bad_files(files: Dict[str, Path], out: Path) -> Dict[str, Path]:
    data = decode_ply(files["ply"].read_bytes())
    n = data.count
    header = files["ply"].read_bytes().split(b"end_header\n")[0].decode()
    nan = data.means.copy()
    nan[:3] = np.nan
    bad = {
        "point cloud": out / "points.ply",
        "rest count": out / "rest.ply",
        "nan": _write(out / "nan.ply", SplatData(nan, data.log_scales, data.quats, data.opacity_logits, data.sh_dc, data.sh_rest)),
        "too many": out / "huge.ply",
        "other scene": _write(out / "elsewhere.ply", SplatData(data.means + np.float32(1e4), data.log_scales, data.quats,
                                                               data.opacity_logits, data.sh_dc, data.sh_rest)),  # fmt: skip
        "wrong frame": files["dataparser"],
    }
    (out / "points.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                                     b"property float y\nproperty float z\nend_header\n" + np.zeros(3, "<f4").tobytes())  # fmt: skip
    rest = header.replace(f"element vertex {n}", "element vertex 1")
    rest = rest.replace("property float f_rest_44\n", "").replace("property float f_rest_43\n", "")
    (out / "rest.ply").write_bytes((rest + "end_header\n").encode() + np.zeros(60, "<f4").tobytes())
    (out / "huge.ply").write_bytes((header.replace(f"element vertex {n}", "element vertex 2000000000") + "end_header\n").encode())
    return bad


EXPECTED = {
    "point cloud": "lacks the Gaussian fields f_dc_0",
    "rest count": "43 f_rest values per Gaussian, which is no SH degree",
    "nan": "3 of",
    "too many": "holds 2000000000 Gaussians",
    "other scene": "a splat of another scene",
    "wrong frame": "pass --pipeline.teacher-frame dataparser",
}


def test_bad_files_get_one_line_each_before_any_work(files, capture: Path, tmp_path: Path) -> None:
    for case, path in _bad_files(files, tmp_path).items():
        proc = run_cli(["ns-train", "distilled-3dgs-student", "--output-dir", str(tmp_path / case), *short_schedule(5),
                        "--pipeline.teachers", str(path), "colmap", "--data", str(capture)], check=False)  # fmt: skip
        assert_clean_error(proc, EXPECTED[case])
        print(f"{case}: {proc.stderr.strip().splitlines()[-1]}")
        assert "teacher importance" not in proc.stdout + proc.stderr, case  # refused before any rendering
        assert not list((tmp_path / case).rglob("*.ckpt")), case


def test_distill_from_a_splat_file(teacher: TrainedRun, files, capture: Path, tmp_path: Path) -> None:
    """One command: the file is the teacher row (itself, on the held-out views), the student and
    prune-and-fine-tune train from it, and the files come back in the capture's frame."""
    out = tmp_path / "distill"
    run_cli(["distilled-gs", "distill", "--data", str(capture), "--dataparser", "colmap", "--teachers", str(files["ply"]),
             "--steps", "30", "--peers", "prune-finetune", "--output-dir", str(out), "--device", "cpu"])  # fmt: skip
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert list(rows) == ["teacher", "student", "prune-finetune"]
    original = teacher.evaluate(tmp_path / "original.json")
    assert rows["teacher"]["gaussians"] == original["gaussian_count"]
    # The file scores what the run it came from scores (the same Gaussians, in another frame).
    assert abs(rows["teacher"]["psnr"] - original["psnr"]) < 0.01, (rows["teacher"]["psnr"], original["psnr"])
    assert rows["student"]["gaussians"] == rows["prune-finetune"]["gaussians"] == round(0.12 * original["gaussian_count"])
    student_file = out / "student" / "export" / "splat.capture.spz"
    means = FORMATS["spz"].decode(student_file.read_bytes()).means
    source = decode_ply(files["ply"].read_bytes()).means
    assert np.abs(np.median(means, axis=0) - np.median(source, axis=0)).max() < 0.1 * np.ptp(source, axis=0).max()
