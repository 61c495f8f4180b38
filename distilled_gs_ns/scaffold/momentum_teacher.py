"""Momentum self-distillation of Momentum-GS: a slowly moving teacher copy of the shared Gaussian
decoder keeps the decoder consistent while it is trained on one block at a time."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _shapes(named: Dict[str, Tensor]) -> Dict[str, tuple]:
    return {name: tuple(value.shape) for name, value in named.items()}


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place: teacher <- momentum * teacher + (1 - momentum) * student; buffers are copied.

    Buffers (e.g. running statistics) are not trained by gradient, so averaging them has no meaning.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    teacher_params, student_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    if _shapes(teacher_params) != _shapes(student_params):
        raise ValueError(
            f"teacher and student parameters differ: {_shapes(teacher_params)} vs {_shapes(student_params)}"
        )
    teacher_buffers, student_buffers = dict(teacher.named_buffers()), dict(student.named_buffers())
    if _shapes(teacher_buffers) != _shapes(student_buffers):
        raise ValueError(
            f"teacher and student buffers differ: {_shapes(teacher_buffers)} vs {_shapes(student_buffers)}"
        )
    for name, param in teacher_params.items():
        param.lerp_(student_params[name], 1.0 - momentum)
    for name, buffer in teacher_buffers.items():
        buffer.copy_(student_buffers[name])


def consistency_loss(student: Dict[str, Tensor], teacher: Dict[str, Tensor]) -> Tensor:
    """Sum over attributes (e.g. color, rotation, scale, opacity) of MSE(student, teacher).

    Both dicts hold the two decoders' outputs for the same anchors and view directions. The teacher
    only moves through `ema_update_` (its parameters are frozen), but its outputs are not detached:
    where they carry a gradient (the official recipe), it reaches the anchor features through the
    teacher too, so the teacher's view of every block shapes this block's features.
    """
    if not student or set(student) != set(teacher):
        raise ValueError(
            f"student and teacher outputs must share the same non-empty keys: {sorted(student)} vs {sorted(teacher)}"
        )
    losses = []
    for key in sorted(student):
        if student[key].shape != teacher[key].shape:
            raise ValueError(f"{key!r}: student {tuple(student[key].shape)} vs teacher {tuple(teacher[key].shape)}")
        losses.append(F.mse_loss(student[key], teacher[key]))
    return torch.stack(losses).sum()
