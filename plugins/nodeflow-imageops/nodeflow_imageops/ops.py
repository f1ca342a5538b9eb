"""Resize, crop, upscale and composite, on the built-in pack's ``Image`` (float [B,H,W,3] in [0,1]).

Resampling goes through Pillow's float ("F") mode one channel at a time, so Lanczos and bicubic
are Pillow's well-known filters without a round trip through 8-bit pixels.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from nodeflow import node
from nodes.types import Image

Size = Annotated[int, Field(ge=1, le=16384)]
Offset = Annotated[int, Field(ge=-16384, le=16384)]
Method = Literal["nearest", "bilinear", "bicubic", "lanczos", "box"]


def resample(image: Image, width: int, height: int, method: Method = "lanczos") -> Image:
    """The pictures at ``width`` x ``height``; filters that overshoot are clamped to [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    filters = {
        "nearest": PILImage.Resampling.NEAREST,
        "bilinear": PILImage.Resampling.BILINEAR,
        "bicubic": PILImage.Resampling.BICUBIC,
        "lanczos": PILImage.Resampling.LANCZOS,
        "box": PILImage.Resampling.BOX,
    }
    source = image.pixels.detach().cpu().float().numpy()
    out = np.empty((source.shape[0], height, width, 3), dtype=np.float32)
    for b in range(source.shape[0]):
        for c in range(3):
            channel = PILImage.fromarray(np.ascontiguousarray(source[b, :, :, c]), mode="F")
            out[b, :, :, c] = np.asarray(channel.resize((width, height), filters[method]))
    return Image(torch.from_numpy(out).clamp_(0, 1))


@node("Resize", category="image/transform")
def resize(
    image: Image, width: Size = 512, height: Size = 512, method: Method = "lanczos"
) -> Image:
    """Resample pictures to an exact size (aspect ratio is not kept: crop first for that)."""
    return resample(image, width, height, method)


@node("LanczosUpscale", category="image/transform", display_name="Lanczos Upscale")
def lanczos_upscale(image: Image, scale: Annotated[float, Field(gt=0, le=8)] = 2.0) -> Image:
    """Scale pictures by a factor with a Lanczos-3 filter (no model: sharp, but adds no detail)."""
    height, width = image.pixels.shape[1:3]
    return resample(image, max(1, round(width * scale)), max(1, round(height * scale)), "lanczos")


@node("Crop", category="image/transform")
def crop(
    image: Image,
    x: Annotated[int, Field(ge=0)] = 0,
    y: Annotated[int, Field(ge=0)] = 0,
    width: Size = 512,
    height: Size = 512,
) -> Image:
    """Cut out a rectangle; it must lie inside the picture (a silent clip would hide mistakes)."""
    full_height, full_width = image.pixels.shape[1:3]
    if x + width > full_width or y + height > full_height:
        raise ValueError(
            f"crop {width}x{height} at ({x}, {y}) does not fit a {full_width}x{full_height} picture"
        )
    return Image(image.pixels[:, y : y + height, x : x + width, :].clone())


@node("Composite", category="image/compose")
def composite(
    destination: Image,
    source: Image,
    x: Offset = 0,
    y: Offset = 0,
    opacity: Annotated[float, Field(ge=0, le=1)] = 1.0,
) -> Image:
    """Paste ``source`` over ``destination`` with its top-left corner at (x, y), blended by
    ``opacity``; what falls outside is cut off. A single source picture goes onto every one
    of a batch."""
    dest = destination.pixels.clone()
    src = source.pixels.to(dest.dtype)
    if src.shape[0] not in (1, dest.shape[0]):
        raise ValueError(
            f"a batch of {src.shape[0]} cannot be pasted onto a batch of {dest.shape[0]}"
        )
    height, width = dest.shape[1:3]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + src.shape[1], height), min(x + src.shape[2], width)
    if top >= bottom or left >= right:
        return Image(dest)  # entirely outside: nothing to paste
    patch = src[:, top - y : bottom - y, left - x : right - x, :]
    region = dest[:, top:bottom, left:right, :]
    dest[:, top:bottom, left:right, :] = region * (1 - opacity) + patch * opacity
    return Image(dest)
