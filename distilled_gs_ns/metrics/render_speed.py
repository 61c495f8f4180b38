"""Render speed of a trained splat: frames per second over its held-out views.

A smaller splat exists partly to render faster, so the demo reports this beside quality. It times
the model's own forward pass (`get_outputs`, what ns-viewer and ns-eval call per frame) at each
held-out camera's full resolution, after one warm-up frame, on the device the run was trained on.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def render_fps(config: Path, rounds: int = 3) -> float:
    """Frames per second rendering every held-out view of the run at `config`, `rounds` times."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    datamanager = pipeline.datamanager
    _ = datamanager.cached_eval  # undistorts the held-out images and updates their cameras in place
    cameras = datamanager.eval_dataset.cameras.to(pipeline.device)
    model = pipeline.model
    model.eval()
    with torch.no_grad():
        model.get_outputs(cameras[0:1])
        if cameras.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(rounds):
            for index in range(cameras.shape[0]):
                model.get_outputs(cameras[index : index + 1])
        if cameras.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return rounds * cameras.shape[0] / elapsed
