"""ImageGrid: a batch (or a sweep's pictures) laid out in rows and columns, each with its label.

Labels are drawn with Pillow's default font (Aileron), so the plugin needs no font files; the
pictures are copied into the canvas as floats, never through 8-bit, so the grid cells are the
pictures exactly.

Aileron's space is narrow (0.22 em), and at the small sizes labels use, hinting widens letters but
not the space: at 10 px a word gap was 2 px, no wider than the gaps between letters, and labels
read "twosmall yellowsquareson". So labels are laid out word by word with a space of at least
``WORD_SPACE`` em, in the largest size (up to ``MAX_FONT``) at which every label fits its cell.
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
    font = _label_font(labels, width)
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


MIN_FONT, MAX_FONT = 10, 24
"""Label sizes in pixels: smaller is unreadable, larger dwarfs the pictures."""
WORD_SPACE = 0.35
"""The least space between words, in em (Aileron's own is 0.22 em)."""
ELLIPSIS = "…"


def _font(size: int = MIN_FONT) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size)


def _label_font(labels: list[str], width: int) -> Any:
    """The largest font, from about a twentieth of the cell width down to ``MIN_FONT``, in which
    every label fits the cell; at ``MIN_FONT`` a label still too long is cut (with an ellipsis)."""
    size = max(MIN_FONT, min(MAX_FONT, width // 20))
    font = _font(size)
    while size > MIN_FONT and any(_text_width(label, font) > width - 4 for label in labels):
        size -= 1
        font = _font(size)
    return font


def _strip_height(font: Any) -> int:
    _, top, _, bottom = font.getbbox("Ag")
    return int(bottom - top) + 6


def _word_space(font: Any) -> float:
    return max(float(font.getlength(" ")), WORD_SPACE * font.size)


def _text_width(text: str, font: Any) -> float:
    """How wide ``text`` is laid out word by word (see ``_label``)."""
    words = text.split()
    return sum(float(font.getlength(w)) for w in words) + _word_space(font) * max(len(words) - 1, 0)


def _label(text: str, width: int, height: int, font: Any) -> Any:
    """A white strip with ``text`` in dark grey, centred, as floats [height, width, 3].

    Drawn a word at a time, each after the last one's width plus ``_word_space``, so the gaps
    between words are always clearly wider than those between letters.
    """
    import numpy as np
    import torch
    from PIL import Image as PILImage
    from PIL import ImageDraw

    strip = PILImage.new("L", (width, height), 255)
    draw = ImageDraw.Draw(strip)
    text = " ".join(text.split())
    if _text_width(text, font) > width - 4:  # too long for the cell: keep its start, mark the cut
        while text and _text_width(text + ELLIPSIS, font) > width - 4:
            text = text[:-1]
        text = text.rstrip() + ELLIPSIS
    _, top, _, _ = font.getbbox("Ag")
    x = max((width - _text_width(text, font)) / 2, 2)
    for word in text.split():
        draw.text((x, 3 - top), word, fill=40, font=font)
        x += float(font.getlength(word)) + _word_space(font)
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
