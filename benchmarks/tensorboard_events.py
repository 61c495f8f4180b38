"""Reading a run's scalars back from the tensorboard events nerfstudio writes (`--vis tensorboard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict


def scalars(run_dir: Path, tag: str) -> Dict[int, float]:
    """{step: value} of one scalar (e.g. nerfstudio's per-step timer) from a run's tensorboard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(run_dir.glob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"no tensorboard events in {run_dir}")
    accumulator = EventAccumulator(str(events[-1]), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {e.step: e.value for e in accumulator.Scalars(tag)}
