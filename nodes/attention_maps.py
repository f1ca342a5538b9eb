"""AttentionMaps: recorded cross-attention as pictures, one heat map per prompt token.

Each map is the probability of one token at every position of the feature map (from
``nodes.types.AttentionStore``), normalised by its maximum as the prompt-to-prompt paper shows
them, upsampled bilinearly to the cell size and, with a picture given, laid over it. The grid has
one row per picture (the batch of the Denoise that recorded) and one column per prompt token,
each labelled with its token, so a map reads as "where this word drew". Under a map the picture
is shown in grey, so the map's colours are not confused with the picture's. The grid drawing
lives here, not in the imageops plugin's ImageGrid: the built-in pack does not depend on a plugin.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from nodeflow import Widget, node
from nodes.types import AttentionStore, Image, TextEncoder

__all__ = [
    "attention_maps",
    "attention_mask",
    "combined_maps",
    "heat_colors",
    "token_labels",
    "word_mask",
]

HEAT_STOPS = (
    (0.00, (0.00, 0.00, 0.02)),
    (0.25, (0.34, 0.06, 0.43)),
    (0.50, (0.73, 0.21, 0.33)),
    (0.75, (0.98, 0.55, 0.04)),
    (1.00, (0.99, 1.00, 0.64)),
)
"""A dark-to-bright colour ramp close to matplotlib's inferno (which the pack does not need)."""
PADDING = 4


def combined_maps(store: AttentionStore, size: int = 0) -> Any:
    """The maps [pictures, height, width, tokens] of feature maps ``size`` high, or with size 0
    every recorded size upsampled (bilinear) to the largest and averaged."""
    import torch
    import torch.nn.functional as F

    if not store.maps:
        raise ValueError(
            "no attention was recorded: put RecordAttention on the U-Net before Denoise"
        )
    if size:
        chosen = [m for (h, _), m in store.maps.items() if h == size]
        if not chosen:
            heights = ", ".join(str(h) for h, _ in store.maps)
            raise ValueError(f"no {size}-high maps were recorded (recorded: {heights})")
        return chosen[0]
    height, width = max(store.maps, key=lambda hw: hw[0] * hw[1])
    resized = []
    for maps in store.maps.values():
        grid = maps.permute(0, 3, 1, 2)
        if grid.shape[-2:] != (height, width):
            grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        resized.append(grid.permute(0, 2, 3, 1))
    return torch.stack(resized).mean(dim=0)


def token_labels(tokenizer: Any, text: str) -> list[str]:
    """The prompt's tokens as the tokenizer splits it, without start/end markers: map column
    ``i`` (1-based: column 0 is the start token) is ``labels[i - 1]``."""
    ids = tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids[1:-1])
    return [t.replace("</w>", "") for t in tokens]


def heat_colors(values: Any) -> Any:
    """Values in [0, 1] of any shape -> RGB floats of that shape plus a last axis of 3."""
    import torch

    stops = torch.tensor([s for s, _ in HEAT_STOPS])
    colors = torch.tensor([c for _, c in HEAT_STOPS])
    values = values.clamp(0, 1)
    upper = torch.bucketize(values, stops).clamp(1, len(stops) - 1)
    lower = upper - 1
    weight = ((values - stops[lower]) / (stops[upper] - stops[lower]))[..., None]
    return colors[lower] * (1 - weight) + colors[upper] * weight


def _cell(map2d: Any, cell: int, picture: Any, overlay: float) -> Any:
    """One token's map as an RGB cell [cell, cell, 3]: normalised, upsampled, maybe overlaid."""
    import torch.nn.functional as F

    peak = map2d.max()
    normalised = map2d / peak if peak > 0 else map2d
    up = F.interpolate(normalised[None, None], size=(cell, cell), mode="bilinear")[0, 0]
    heat = heat_colors(up)
    if picture is None or overlay <= 0:
        return heat
    gray = picture.mean(dim=-1, keepdim=True)  # so the map's colours read over any picture
    return (1 - overlay) * gray + overlay * heat


def _resized_picture(pixels: Any, cell: int) -> Any:
    import torch.nn.functional as F

    grid = pixels.permute(2, 0, 1)[None].float()
    return F.interpolate(grid, size=(cell, cell), mode="bilinear")[0].permute(1, 2, 0).clamp(0, 1)


def _label(text: str, width: int, height: int) -> Any:
    """Dark text on a white strip [height, width, 3], cut with '...' when too long."""
    import numpy as np
    import torch
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    strip = PILImage.new("L", (width, height), 255)
    draw = ImageDraw.Draw(strip)
    while text and draw.textlength(text, font=font) > width - 4:
        text = text[:-4] + "..." if len(text) > 4 else text[:-1]
    draw.text((max((width - draw.textlength(text, font=font)) / 2, 2), 3), text, 40, font=font)
    gray = torch.from_numpy(np.asarray(strip, dtype=np.float32) / 255.0)
    return gray[:, :, None].expand(height, width, 3)


def draw_grid(rows: list[list[tuple[str, Any]]], cell: int) -> Any:
    """Labelled cells in rows on a white canvas: float [height, width, 3]."""
    import torch

    strip = 16
    columns = max(len(r) for r in rows)
    canvas = torch.ones(
        (
            len(rows) * (cell + strip) + (len(rows) + 1) * PADDING,
            columns * cell + (columns + 1) * PADDING,
            3,
        )
    )
    for r, row in enumerate(rows):
        top = PADDING + r * (cell + strip + PADDING)
        for c, (label, pixels) in enumerate(row):
            left = PADDING + c * (cell + PADDING)
            canvas[top : top + strip, left : left + cell] = _label(label, cell, strip)
            canvas[top + strip : top + strip + cell, left : left + cell] = pixels
    return canvas


def _prompts(text: str, pictures: int) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    if len(lines) == 1:
        return lines * pictures
    if len(lines) != pictures:
        raise ValueError(f"{len(lines)} prompt lines for {pictures} pictures: give one or one each")
    return lines


@node("AttentionMaps", category="image")
def attention_maps(
    attention: AttentionStore,
    text_encoder: TextEncoder,
    text: Annotated[str, Widget(multiline=True)] = "",
    image: Image | None = None,
    size: Annotated[int, Field(ge=0, le=1024)] = 0,
    cell: Annotated[int, Field(ge=16, le=1024)] = 96,
    overlay: Annotated[float, Field(ge=0, le=1)] = 0.6,
) -> Image:
    """A labelled grid of heat maps, one per prompt token, one row per picture.

    ``text`` is the prompt that was denoised (one line per picture when they differ, as in a
    prompt-to-prompt pair), for the token labels. ``size`` picks the feature-map height to show
    (0: all recorded sizes, upsampled and averaged). With ``image`` each row starts with the
    picture and the maps are laid over it (in grey) with ``overlay`` opacity.
    """
    maps = combined_maps(attention, size)
    pictures = int(maps.shape[0])
    if image is not None and image.batch_size != pictures:
        raise ValueError(f"{image.batch_size} pictures for attention maps of {pictures}")
    rows = []
    for index, prompt in enumerate(_prompts(text, pictures)):
        labels = token_labels(text_encoder.tokenizer, prompt)[: maps.shape[-1] - 1]
        picture = None if image is None else _resized_picture(image.pixels[index], cell)
        row = [] if picture is None else [("picture", picture)]
        for column, label in enumerate(labels, start=1):
            row.append((label, _cell(maps[index, :, :, column], cell, picture, overlay)))
        rows.append(row or [("(empty prompt)", _cell(maps[index, :, :, 0], cell, picture, 0))])
    return Image(draw_grid(rows, cell)[None])


def word_mask(maps: Any, positions: list[int], size: tuple[int, int], threshold: float) -> Any:
    """A 0/1 mask [pictures, height, width] where the words' summed map (upsampled bilinearly
    to ``size``) is above ``threshold`` of its range: the map's floor (a softmax never reaches 0)
    is taken off first, as prompt-to-prompt's local blend does here."""
    import torch.nn.functional as F

    words = maps[..., positions].sum(dim=-1)[:, None]
    up = F.interpolate(words, size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).min(dim=1).values[:, None, None]
    high = up.flatten(1).max(dim=1).values[:, None, None]
    return ((up - low) / (high - low).clamp_min(1e-12) > threshold).float()


@node("AttentionMask", category="image")
def attention_mask(
    attention: AttentionStore,
    text_encoder: TextEncoder,
    image: Image,
    text: Annotated[str, Widget(multiline=True)] = "",
    words: str = "",
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.3,
    size: Annotated[int, Field(ge=0, le=1024)] = 0,
) -> Image:
    """Where words drew, as a black-and-white picture the size of ``image``: the words' recorded
    cross-attention (``size``-high maps, 0: all sizes), above ``threshold`` of its range.

    ``text`` is the prompt that was denoised (one line per picture when they differ); ``words``
    the words to mask, e.g. "circle". A mask for local edits or for other nodes.
    """
    import torch

    from nodes.p2p_tokens import positions_of

    maps = combined_maps(attention, size)
    pictures = int(maps.shape[0])
    if image.batch_size != pictures:
        raise ValueError(f"{image.batch_size} pictures for attention maps of {pictures}")
    if not words.strip():
        raise ValueError("give the words to mask, e.g. 'circle'")
    size_hw = (int(image.pixels.shape[1]), int(image.pixels.shape[2]))
    masks = []
    for index, prompt in enumerate(_prompts(text, pictures)):
        positions = positions_of(text_encoder.tokenizer, prompt, words)
        masks.append(word_mask(maps[index : index + 1], positions, size_hw, threshold))
    mask = torch.cat(masks)
    return Image(mask[..., None].expand(*mask.shape, 3).contiguous())
