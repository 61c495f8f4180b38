"""The labelled side-by-side image of `distilled-gs distill`: one held-out view, ground truth then each model.

Labels go above their panel and are wrapped at word boundaries to the panel's width; a word wider
than the panel shrinks the font of every label, so no label runs into the next panel whatever the
capture's aspect ratio (portrait phone captures give panels narrower than a one-line label).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GAP = 6
"""Pixels between panels."""
MIN_FONT = 8
"""Smallest font size; a word still wider than the panel at this size is broken between characters."""

Box = Tuple[int, int, int, int]


def pieces(draw: ImageDraw.ImageDraw, word: str, font: ImageFont.FreeTypeFont, width: int) -> List[str]:
    """`word` as it is if it fits `width`, else cut between characters into pieces that do."""
    out = [""]
    for char in word:
        if out[-1] and draw.textlength(out[-1] + char, font=font) > width:
            out.append("")
        out[-1] += char
    return out


def wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> List[str]:
    """`text`'s lines (explicit newlines kept) broken at spaces so that each fits `width` pixels."""
    lines: List[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in (piece for w in paragraph.split(" ") for piece in pieces(draw, w, font, width)):
            candidate = f"{current} {word}" if current else word
            if current and draw.textlength(candidate, font=font) > width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


def label_font(draw: ImageDraw.ImageDraw, labels: Sequence[str], width: int, size: int) -> ImageFont.FreeTypeFont:
    """The largest font up to `size` in which every word of every label fits `width` pixels."""
    words = [word for label in labels for word in label.split()]
    while size > MIN_FONT:
        font = ImageFont.load_default(size=size)
        if all(draw.textlength(word, font=font) <= width for word in words):
            return font
        size -= 1
    return ImageFont.load_default(size=MIN_FONT)


def compose(tiles: Sequence[Tuple[str, Image.Image]], height: int = 320) -> Tuple[Image.Image, List[Box]]:
    """The panels side by side, scaled up by a whole factor towards `height`, each labelled above.

    Returns the image and each label's bounding box (left, top, right, bottom), which lies inside its
    panel's column.
    """
    first = tiles[0][1]
    scale = max(1, round(height / first.height))
    width, tile_height = first.width * scale, first.height * scale
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    inner = width - 4  # 2 px margin on either side
    font = label_font(measure, [label for label, _ in tiles], inner, max(12, tile_height // 16))
    wrapped = [wrap(measure, label, font, inner) for label, _ in tiles]
    line_height = font.size + 4
    bar = max(len(lines) for lines in wrapped) * line_height + 6
    canvas = Image.new("RGB", (len(tiles) * (width + GAP) - GAP, tile_height + bar), "white")
    draw = ImageDraw.Draw(canvas)
    boxes: List[Box] = []
    for index, ((_, tile), lines) in enumerate(zip(tiles, wrapped)):
        left = index * (width + GAP)
        canvas.paste(tile.resize((width, tile_height), Image.NEAREST), (left, bar))
        for line_index, line in enumerate(lines):
            draw.text((left + 2, 3 + line_index * line_height), line, fill="black", font=font)
        text = [draw.textbbox((left + 2, 3 + i * line_height), line, font=font) for i, line in enumerate(lines) if line]
        boxes.append((min(b[0] for b in text), min(b[1] for b in text), max(b[2] for b in text), max(b[3] for b in text)))
    return canvas, boxes


def side_by_side(panels: Sequence[Tuple[str, Path]], ground_truth: Path, output: Path, height: int = 320) -> None:
    """One held-out view, ground truth then each model, every panel named and scaled up to `height`.

    `panels`: (label, folder of ns-eval's `--render-output-path` renders, [ground truth | render] per
    view); the ground truth is taken from `ground_truth`'s first view.
    """

    def half(folder: Path, right: bool) -> Image.Image:
        image = np.asarray(Image.open(folder / "eval_img_0000.png").convert("RGB"))
        middle = image.shape[1] // 2
        return Image.fromarray(image[:, middle:] if right else image[:, :middle])

    tiles = [("ground truth", half(ground_truth, right=False))] + [(label, half(f, right=True)) for label, f in panels]
    compose(tiles, height)[0].save(output)
