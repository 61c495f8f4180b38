"""momentum-gs end to end through the real ns-train, ns-export and ns-eval on the demo scene (CPU):
4 blocks in one process, and 8 blocks (more blocks than processes) under an anchor cap on 2 gloo
processes started by nerfstudio's launcher."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from nerfstudio.utils.eval_utils import eval_setup
from plyfile import PlyData

from distilled_gs_ns.configs.demo import ShortMomentumRun
from distilled_gs_ns.data import DEMO_SCENE
from distilled_gs_ns.metrics.export_fidelity import export_psnr
from distilled_gs_ns.export.formats import FORMATS
from tests.cli import BIN, TrainedRun, cli_env, free_port, machine_args, run_cli

pytestmark = pytest.mark.cli

METHOD = "momentum-gs"
STEPS = 200
STEPS_PER_BLOCK = 25
TWO_PROCESS_FLAGS = ["--pipeline.model.block-grid", "2", "4", "--pipeline.model.max-active-anchors", "300"]
"""8 blocks over 2 processes, each block at most 300 anchors (the demo's seeds make ~600)."""


def train_momentum(runs_dir: Path, name: str, steps: int = STEPS, extra: List[str] = ()) -> TrainedRun:
    flags = ShortMomentumRun(
        steps, num_random=3000, steps_per_block=STEPS_PER_BLOCK, refine_every=20, save_every=100, keep_all_checkpoints=True
    ).flags()
    flags += ["--pipeline.model.export-refine-steps", "40"]  # the export's render fit, shortened for the tests
    proc = run_cli(
        ["ns-train", METHOD, "--data", str(DEMO_SCENE), "--output-dir", str(runs_dir), "--experiment-name", name,
         "--timestamp", "run", *flags, *extra]
    )  # fmt: skip
    return TrainedRun(METHOD, runs_dir / name / METHOD / "run", proc.stdout + proc.stderr)


def summary(run: TrainedRun) -> Dict:
    return json.loads((run.run_dir / "blocks.json").read_text())


@pytest.fixture(scope="module")
def one_process(runs_dir: Path) -> TrainedRun:
    return train_momentum(runs_dir, "momentum-1proc")


@pytest.fixture(scope="module")
def two_processes(runs_dir: Path) -> TrainedRun:
    return train_momentum(runs_dir, "momentum-2proc", steps=STEPS // 2, extra=["--machine.num-devices", "2", *TWO_PROCESS_FLAGS])


@pytest.fixture(scope="module")
def untrained(runs_dir: Path) -> TrainedRun:
    return train_momentum(runs_dir, "momentum-untrained", steps=1)


def test_one_process_trains_every_block_in_turn(one_process: TrainedRun) -> None:
    info = summary(one_process)
    assert info["grid"] == [2, 2] and info["processes"] == 1
    assert info["steps_per_block_trained"] == [STEPS // 4] * 4
    assert all(block["anchors"] > 0 and block["cameras"] for block in info["blocks"])
    assert sum(info["merged_anchors_per_block"]) == info["merged_anchors"] > 0
    assert "momentum-gs blocks" in one_process.log  # the partition table


def test_two_machines_simulated_on_one_train_what_two_processes_train(two_processes: TrainedRun, runs_dir: Path) -> None:
    """Two ns-train commands (machine rank 0 and 1, one process each, a TCP rendezvous) are one
    run: the same blocks and the same merged decoder, bit for bit, as the 2-process run."""
    port = free_port()
    flags = ShortMomentumRun(
        STEPS // 2, num_random=3000, steps_per_block=STEPS_PER_BLOCK, refine_every=20, save_every=100, keep_all_checkpoints=True
    ).flags()
    procs = []
    for rank in (0, 1):
        log = runs_dir / f"machine{rank}.log"
        with open(log, "w") as sink:
            args = ["ns-train", METHOD, "--data", str(DEMO_SCENE), "--output-dir", str(runs_dir), "--experiment-name",
                    f"momentum-machine{rank}", "--timestamp", "run", *flags, *TWO_PROCESS_FLAGS, *machine_args(rank, port)]  # fmt: skip
            procs.append((subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=sink, stderr=subprocess.STDOUT, env=cli_env()), log))
    for proc, log in procs:
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    machines = TrainedRun(METHOD, runs_dir / "momentum-machine0" / METHOD / "run")
    assert not (runs_dir / "momentum-machine1" / METHOD / "run" / "nerfstudio_models").exists()  # rank 0 saves
    ours, reference = summary(machines), summary(two_processes)
    for key in ("processes", "blocks", "steps_per_block_trained", "merged_anchors", "decoder_checksum_per_process"):
        assert ours[key] == reference[key], key


def test_two_gloo_processes_share_one_decoder(two_processes: TrainedRun) -> None:
    info = summary(two_processes)
    assert info["processes"] == 2 and info["grid"] == [2, 4]
    assert [block["process"] for block in info["blocks"]] == [0, 1] * 4
    # 100 steps per process, 4 blocks each: every block gets the same 25 steps.
    assert info["steps_per_block_trained"] == [STEPS // 8] * 8
    # Every block starts from at most the cap's 300 anchors and never grows past it.
    assert max(block["anchors"] for block in info["blocks"]) == 300
    assert max(info["merged_anchors_per_block"]) <= 300
    checksums = info["decoder_checksum_per_process"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


def _extra_state(checkpoint: Path) -> Dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["pipeline"]["_model._extra_state"]
    return state


@pytest.mark.parametrize("fixture", ["one_process", "two_processes"])
def test_merged_checkpoint_evaluates_and_exports(
    fixture: str, request, untrained: TrainedRun, tmp_path: Path
) -> None:
    run: TrainedRun = request.getfixturevalue(fixture)
    state = _extra_state(run.checkpoints[-1])
    assert state["blocks"] == [] and state["merged"] is not None  # the final checkpoint is one merged model
    assert state["merged"]["positions"].shape[0] == summary(run)["merged_anchors"]

    metrics = run.evaluate(tmp_path / "eval.json")
    baseline = untrained.evaluate(tmp_path / "untrained.json")
    assert metrics["psnr"] > baseline["psnr"] + 3.0, (metrics, baseline)

    run_cli(["ns-export", "gaussian-splat", "--load-config", str(run.config), "--output-dir", str(tmp_path / "export")])
    vertex = PlyData.read(str(tmp_path / "export" / "splat.ply"))["vertex"]
    names = set(vertex.data.dtype.names)
    assert {"x", "f_dc_0", "f_dc_2", "opacity", "scale_2", "rot_3"} <= names
    assert sum(n.startswith("f_rest_") for n in names) == 45  # view-dependent colour fitted to SH degree 3
    anchors = state["merged"]["positions"].shape[0]
    assert 0 < len(vertex.data) <= anchors * 10


def test_export_matches_the_model_render(one_process: TrainedRun, tmp_path: Path) -> None:
    run_cli(["ns-export", "gaussian-splat", "--load-config", str(one_process.config), "--output-dir", str(tmp_path)])
    _, pipeline, _, _ = eval_setup(one_process.config, test_mode="inference")
    cameras = pipeline.datamanager.train_dataset.cameras
    exported = FORMATS["ply"].decode((tmp_path / "splat.ply").read_bytes()).render_gaussians()
    values = export_psnr(pipeline.model, exported, cameras[::8])
    assert statistics.fmean(values) > 25.0, values
    # The package's own export writes the same Gaussians, e.g. as SPZ with the fitted SH bands.
    run_cli(["distilled-gs", "export", "--load-config", str(one_process.config), "--format", "spz",
             "--output", str(tmp_path / "splat.spz")])  # fmt: skip
    spz = FORMATS["spz"].decode((tmp_path / "splat.spz").read_bytes())
    assert spz.count == exported.means.shape[0] and spz.sh_degree == 3


def test_resume_mid_run_from_unmerged_checkpoint(one_process: TrainedRun, runs_dir: Path) -> None:
    """The step-100 checkpoint holds the four blocks unmerged, with their Adam state; resuming runs
    the remaining 100 steps and merges at the end."""
    middle = [c for c in one_process.checkpoints if c.name == "step-000000100.ckpt"]
    assert middle, one_process.checkpoints
    state = _extra_state(middle[0])
    assert len(state["blocks"]) == 4 and state["merged"] is None
    assert all(block["optimizer_state"] for block in state["blocks"])

    load_dir = runs_dir / "momentum-resume-source"
    load_dir.mkdir()
    (load_dir / middle[0].name).write_bytes(middle[0].read_bytes())
    resumed = train_momentum(runs_dir, "momentum-resumed", steps=STEPS - 101, extra=["--load-dir", str(load_dir)])
    info = summary(resumed)
    assert sum(info["steps_per_block_trained"]) == STEPS
    assert torch.load(resumed.checkpoints[-1], map_location="cpu", weights_only=True)["step"] == STEPS - 1


def test_viewer_render_path_and_crop(one_process: TrainedRun) -> None:
    """What ns-viewer does: eval_setup, then get_outputs_for_camera at any resolution, with a crop box."""
    from nerfstudio.data.scene_box import OrientedBox

    _, pipeline, _, step = eval_setup(one_process.config, test_mode="inference")
    assert step == STEPS - 1
    camera = pipeline.datamanager.train_dataset.cameras[0:1]
    camera.rescale_output_resolution(0.64)
    out = pipeline.model.get_outputs_for_camera(camera)
    h, w = int(camera.height), int(camera.width)
    assert out["rgb"].shape == (h, w, 3) and out["accumulation"].shape == (h, w, 1)
    assert 0.1 < float(out["accumulation"].mean()) < 0.95  # the object covers part of the view
    far_away = OrientedBox(R=torch.eye(3), T=torch.full((3,), 100.0), S=torch.full((3,), 0.1))
    cropped = pipeline.model.get_outputs_for_camera(camera, obb_box=far_away)
    assert float(cropped["accumulation"].max()) == 0.0
