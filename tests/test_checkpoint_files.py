"""Checkpoint files: atomic writes, listing that ignores unfinished files, one-line read errors; the
trainer settings of the no-lost-work guarantees."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from distilled_gs_ns.engine import checkpoint_files
from distilled_gs_ns.engine.checkpoint_files import (
    PARTIAL_PREFIX,
    CheckpointError,
    checkpoint_path,
    checkpoints_in,
    load_for_eval,
    read_checkpoint,
    remove_stale_partials,
    save_atomically,
)
from distilled_gs_ns.engine.trainer import SplatTrainer


def state(step: int) -> dict:
    return {"step": step, "pipeline": {"w": torch.full((64,), float(step))}, "optimizers": {}, "schedulers": {}, "scalers": {}}


def test_atomic_save_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path / "models", 7)
    save_atomically(state(7), path)
    assert path.name == "step-000000007.ckpt"
    assert read_checkpoint(path)["pipeline"]["w"][0] == 7
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path: Path, monkeypatch) -> None:
    path = checkpoint_path(tmp_path, 5)
    save_atomically(state(5), path)
    before = path.read_bytes()

    def full_disk(obj, handle):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_files.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_atomically(state(5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_listing_skips_unfinished_and_foreign_files(tmp_path: Path) -> None:
    for step in (30, 4, 120):
        save_atomically(state(step), checkpoint_path(tmp_path, step))
    (tmp_path / f"{PARTIAL_PREFIX}step-000000200.ckpt").write_bytes(b"cut")
    (tmp_path / "notes.txt").write_text("x")
    assert [step for step, _ in checkpoints_in(tmp_path)] == [4, 30, 120]
    assert [p.name for p in remove_stale_partials(tmp_path)] == [f"{PARTIAL_PREFIX}step-000000200.ckpt"]
    assert checkpoints_in(tmp_path / "absent") == []


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "is truncated or corrupt"),  # the first half of a real checkpoint
        (b"", "is truncated or corrupt"),
        (b"not a checkpoint at all", "is truncated or corrupt"),
    ],
)
def test_unreadable_files_give_one_line(tmp_path: Path, content, message: str) -> None:
    path = checkpoint_path(tmp_path, 1)
    save_atomically(state(1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(CheckpointError, match=message) as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_file_that_is_not_a_nerfstudio_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "step-000000001.ckpt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a nerfstudio checkpoint"):
        read_checkpoint(path)


class _Pipeline:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.loaded = fail, None

    def load_pipeline(self, pipeline_state: dict, step: int) -> None:
        if self.fail:
            raise RuntimeError('Error(s) in loading state_dict for Model:\n\tUnexpected key(s) "anchors"')
        self.loaded = step


def test_eval_loading_names_the_broken_file_and_the_older_one(tmp_path: Path) -> None:
    for step in (10, 20):
        save_atomically(state(step), checkpoint_path(tmp_path, step))
    config = SimpleNamespace(load_dir=tmp_path, load_step=None, method_name="m")
    pipeline = _Pipeline()
    assert load_for_eval(config, pipeline) == (checkpoint_path(tmp_path, 20), 20) and pipeline.loaded == 20
    checkpoint_path(tmp_path, 20).write_bytes(b"cut")
    with pytest.raises(CheckpointError, match="newest older checkpoint is step-000000010.ckpt"):
        load_for_eval(config, pipeline)
    with pytest.raises(CheckpointError, match=r"does not match this run's model \(m\): Error\(s\) in loading"):
        load_for_eval(SimpleNamespace(load_dir=tmp_path, load_step=10, method_name="m"), _Pipeline(fail=True))


def test_trainer_deletes_older_checkpoints_only_after_the_new_one_is_complete(tmp_path: Path, monkeypatch) -> None:
    trainer = SplatTrainer.__new__(SplatTrainer)
    trainer.checkpoint_dir = tmp_path
    trainer.config = SimpleNamespace(save_only_latest_checkpoint=True)
    trainer.pipeline = SimpleNamespace(state_dict=lambda: {"w": torch.zeros(3)}, model=SimpleNamespace(prepare_checkpoint=lambda: None))
    trainer.optimizers = SimpleNamespace(optimizers={}, schedulers={})
    trainer.grad_scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer.save_checkpoint(10)
    trainer.save_checkpoint(20)
    assert [step for step, _ in checkpoints_in(tmp_path)] == [20]

    def crash(obj, handle):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint_files.torch, "save", crash)
    with pytest.raises(OSError):
        trainer.save_checkpoint(30)
    assert [step for step, _ in checkpoints_in(tmp_path)] == [20]


@pytest.mark.parametrize("seconds", [0.0, -5.0, float("inf"), float("nan")])
def test_collective_timeout_must_be_a_positive_number(seconds: float) -> None:
    from distilled_gs_ns.configs.trainer import SplatTrainerConfig
    from distilled_gs_ns.errors import UserInputError

    with pytest.raises(UserInputError, match="collective-timeout-s must be a positive number of seconds"):
        SplatTrainerConfig(collective_timeout_s=seconds)
    assert SplatTrainerConfig().collective_timeout_s == 300.0
