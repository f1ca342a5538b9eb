"""Reading an embedding back in words: rank captions by cosine similarity, drawn as a picture.

An edited or blended CLIP embedding is only a vector; when no decoder in the graph takes it (no
decoder here was trained on ``demo-clip``'s space), the honest way to show what it means is to ask
the CLIP that made it which caption it is nearest to. The ranking is drawn as a small picture,
one panel per embedding, so it travels on the ``Image`` socket to ``SaveImage`` and the editor's
preview like any result.
"""

from __future__ import annotations

from typing import Annotated, Any

from nodeflow import Context, Widget, node
from nodes.clip_model import CLIP, cosine, text_features
from nodes.types import Image, ImageEmbeds

ROW = 12
"""Pixels per caption row (PIL's built-in bitmap font is 11 pixels high)."""
WIDTH = 360
MARGIN = 4


def ranked(clip: CLIP, embeds: Any, captions: list[str]) -> list[list[tuple[float, str]]]:
    """For each embedding, ``(cosine, caption)`` pairs from the most similar down."""
    scores = cosine(embeds, text_features(clip, captions)).cpu()
    return [
        sorted(zip(row.tolist(), captions, strict=True), key=lambda pair: -pair[0])
        for row in scores
    ]


def draw_ranking(rows: list[tuple[float, str]]) -> Any:
    """One panel: a line per caption, the best first and highlighted, each with its cosine."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    height = 2 * MARGIN + ROW * len(rows)
    panel = PILImage.new("RGB", (WIDTH, height), (250, 250, 250))
    draw = ImageDraw.Draw(panel)
    for index, (score, text) in enumerate(rows):
        top = MARGIN + ROW * index
        if index == 0:
            draw.rectangle([0, top, WIDTH, top + ROW - 1], fill=(210, 235, 210))
        draw.text((MARGIN, top), f"{score:+.3f}  {text}", fill=(20, 20, 20))
    return panel


@node("RankCaptions", category="conditioning")
def rank_captions(
    ctx: Context,
    clip: CLIP,
    embeds: ImageEmbeds,
    captions: Annotated[str, Widget(multiline=True)] = "",
) -> Image:
    """Rank captions (one per line) by cosine similarity to each embedding, drawn as a picture
    per embedding, the nearest first: what an image or edited embedding means to its CLIP."""
    import numpy as np
    import torch

    lines = [line.strip() for line in captions.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"RankCaptions {ctx.node_id!r}: input 'captions' has no caption")
    if embeds.embeds.shape[-1] != clip.width:
        raise ValueError(
            f"RankCaptions {ctx.node_id!r}: input 'embeds' is {embeds.embeds.shape[-1]} wide but"
            f" the CLIP's space is {clip.width}; embed with the same CLIP"
        )
    ctx.models.use(clip.model)
    panels = [draw_ranking(rows) for rows in ranked(clip, embeds.embeds, lines)]
    array = np.stack([np.asarray(panel, dtype=np.float32) / 255 for panel in panels])
    return Image(torch.from_numpy(array))
