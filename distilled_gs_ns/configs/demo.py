"""Training schedule for the shipped 100 px demo scene, as ns-train overrides.

The methods' defaults are splatfacto's 30k-step recipe for full-size captures; the demo scene is
small enough to train on a CPU in minutes with everything scaled to the run length.
"""

from __future__ import annotations

from typing import List


def demo_overrides(steps: int, device: str) -> List[str]:
    """ns-train flags that fit the demo scene and a run of `steps` steps on `device` (cpu or cuda)."""
    return [
        "--machine.device-type", device,
        "--vis", "tensorboard",
        "--max-num-iterations", str(steps),
        "--steps-per-save", str(max(steps // 3, 1)),
        "--steps-per-eval-image", str(max(steps // 6, 1)),
        "--steps-per-eval-all-images", str(10 * steps),
        "--pipeline.model.background-color", "white",
        "--pipeline.model.num-random", "10000",
        "--pipeline.model.warmup-length", str(max(steps // 15, 1)),
        "--pipeline.model.refine-every", str(max(steps // 30, 1)),
        "--pipeline.model.reset-alpha-every", "10",
        "--pipeline.model.stop-split-at", str(2 * steps // 3),
        "--pipeline.model.resolution-schedule", str(max(steps // 4, 1)),
        "--pipeline.model.num-downscales", "1",
        "--pipeline.model.sh-degree-interval", str(max(steps // 6, 1)),
        "--optimizers.means.scheduler.max-steps", str(steps),
    ]
