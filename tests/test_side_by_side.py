"""The side-by-side image's labels stay inside their panels for any aspect ratio."""

from __future__ import annotations

from typing import List, Tuple

import pytest
from PIL import Image

from distilled_gs_ns.cli.side_by_side import GAP, compose

LABELS = ["ground truth", "teacher\n19.50 dB, 163182 Gaussians", "student\n21.92 dB, 19582 Gaussians",
          "prune-finetune\n22.73 dB, 19582 Gaussians", "baseline\n20.57 dB, 19582 Gaussians"]  # fmt: skip


def panels(width: int, height: int) -> List[Tuple[str, Image.Image]]:
    return [(label, Image.new("RGB", (width, height), (40 * i, 90, 160))) for i, label in enumerate(LABELS)]


@pytest.mark.parametrize("size", [(135, 240), (24, 240), (240, 135), (100, 100)], ids=["portrait", "narrow", "landscape", "square"])
def test_labels_never_leave_their_panel(size: Tuple[int, int]) -> None:
    canvas, boxes = compose(panels(*size), height=320)
    scale = max(1, round(320 / size[1]))
    column = size[0] * scale
    assert canvas.width == len(LABELS) * (column + GAP) - GAP
    top_of_panels = canvas.height - size[1] * scale
    for index, (left, top, right, bottom) in enumerate(boxes):
        start = index * (column + GAP)
        assert start <= left and right <= start + column, (index, boxes[index], start, column)
        assert bottom <= top_of_panels  # above the image, never over it
    # the panel keeps its pixels under the label bar
    assert canvas.getpixel((1, top_of_panels + 1)) == (0, 90, 160)


def test_wide_panels_keep_one_line_per_label_line() -> None:
    """Where the text fits, labels are not wrapped or shrunk: two lines for 'name\\nPSNR, count'."""
    canvas, boxes = compose(panels(400, 300), height=300)
    heights = [bottom - top for _, top, _, bottom in boxes]
    assert max(heights) < 2.6 * min(h for h in heights if h > 0)  # one line (ground truth) vs two
    assert canvas.height - 300 < 3 * (max(12, 300 // 16) + 4) + 6
