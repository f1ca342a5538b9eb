"""ImageGrid: a batch (or a sweep's pictures) laid out in rows and columns, each with its label.

Labels are drawn with Pillow's default font, so the plugin needs no font files; the pictures are
copied into the canvas as floats, never through 8-bit, so the grid cells are the pictures exactly.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field

from nodeflow import Widget, node
from nodes.types import Image


def split_labels(labels: str) -> list[str]:
    """One label per line (what a sweep node's ``labels`` output is); blank lines are kept so
    a label can be left empty."""
    return labels.split("\n") if labels.strip() else []


def make_grid(
    image: Image, columns: int = 0, labels: list[str] | None = None, padding: int = 4
) -> Image:
    """Lay the batch out; ``columns`` 0 means as square as possible."""
    import torch

    pictures = image.pixels
    count, height, width = pictures.shape[:3]
    labels = list(labels or [])
    if len(labels) > count:
        raise ValueError(f"{len(labels)} labels for {count} pictures")
    columns = columns or math.ceil(math.sqrt(count))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    font = _font()
    strip = _strip_height(font) if any(labels) else 0
    cell_h, cell_w = height + strip, width
    canvas = torch.ones(
        (rows * cell_h + (rows + 1) * padding, columns * cell_w + (columns + 1) * padding, 3),
        dtype=pictures.dtype,
    )
    for index in range(count):
        row, column = divmod(index, columns)
        top = padding + row * (cell_h + padding)
        left = padding + column * (cell_w + padding)
        if strip:
            text = labels[index] if index < len(labels) else ""
            canvas[top : top + strip, left : left + width] = _label(text, width, strip, font)
        canvas[top + strip : top + cell_h, left : left + width] = pictures[index]
    return Image(canvas[None])


def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _strip_height(font: Any) -> int:
    _, top, _, bottom = font.getbbox("Ag")
    return int(bottom - top) + 6


def _label(text: str, width: int, height: int, font: Any) -> Any:
    """A white strip with ``text`` in dark grey, as floats [height, width, 3]."""
    import numpy as np
    import torch
    from PIL import Image as PILImage
    from PIL import ImageDraw

    strip = PILImage.new("L", (width, height), 255)
    draw = ImageDraw.Draw(strip)
    text_width = draw.textlength(text, font=font)
    if text_width > width - 4:  # too long for the cell: keep its start, mark the cut
        while text and draw.textlength(text + "...", font=font) > width - 4:
            text = text[:-1]
        text += "..."
        text_width = draw.textlength(text, font=font)
    draw.text((max((width - text_width) / 2, 2), 3), text, fill=40, font=font)
    gray = torch.from_numpy(np.asarray(strip, dtype=np.float32) / 255.0)
    return gray[:, :, None].expand(height, width, 3)


@node("ImageGrid", category="image/compose", display_name="Image Grid")
def image_grid(
    image: Image,
    labels: Annotated[str, Widget(multiline=True)] = "",
    columns: Annotated[int, Field(ge=0, le=64)] = 0,
    padding: Annotated[int, Field(ge=0, le=64)] = 4,
) -> Image:
    """Lay a batch out in a grid (columns 0: as square as possible), each picture under its
    label: one label per line, e.g. the ``labels`` output of a sweep node linked in."""
    return make_grid(image, columns, split_labels(labels), padding)
