"""Cropping a picture to its mask's box, and pasting a picture back into another.

Inpainting a small region of a large picture wastes work and resolution on what is kept:
``CropToMask`` cuts out the mask's bounding box with some context around it (diffusers'
``padding_mask_crop``), the crop is inpainted (or upscaled, inpainted, scaled back), and
``ImageCompositeMasked`` pastes it back at the same place through the mask, so the pixels outside
the mask are the original ones exactly (diffusers' ``apply_overlay``).
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from pydantic import Field

from nodeflow import node
from nodes.masks import Pixels, batched, check_size
from nodes.types import Image, Mask


class Crop(NamedTuple):
    image: Image
    mask: Mask
    x: int
    """The crop's left edge in the source picture, for ImageCompositeMasked."""
    y: int
    width: int
    """The crop's size, e.g. for scaling an inpainted crop back before pasting it."""
    height: int


def _span(low: int, high: int, padding: int, multiple: int, limit: int) -> tuple[int, int]:
    """[start, end) of ``low..high`` padded, widened to a multiple, kept inside ``0..limit``."""
    start, end = max(0, low - padding), min(limit, high + padding)
    length = min(limit, -(-(end - start) // multiple) * multiple)
    start = min(start, limit - length)
    return start, start + length


def _aspect_span(start: int, end: int, wanted: float, limit: int) -> tuple[int, int]:
    """[start, end) widened about its middle to ``wanted`` (a float length, truncated), then
    shifted back inside ``0..limit``: diffusers' ``get_crop_region`` step 3, its integer
    arithmetic and edge handling kept, so a crop box is the one its pipelines use."""
    diff = int(wanted - (end - start))
    start -= diff // 2
    end += diff - diff // 2
    if end >= limit:
        start, end = start - (end - limit), limit
    if start < 0:
        start, end = 0, end - start
    return start, min(end, limit)


def aspect_box(
    box: tuple[int, int, int, int], padding: int, width: int, height: int, fit: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The mask's ``box`` padded and widened to the aspect ratio of ``fit`` (the size the crop
    will be scaled to) inside a ``width`` x ``height`` picture, as diffusers' ``padding_mask_crop``
    chooses it (``VaeImageProcessor.get_crop_region``)."""
    left, top, right, bottom = box
    x0, y0 = max(left - padding, 0), max(top - padding, 0)
    x1, y1 = min(right + padding, width), min(bottom + padding, height)
    ratio = fit[0] / fit[1]
    if (x1 - x0) / (y1 - y0) > ratio:
        y0, y1 = _aspect_span(y0, y1, (x1 - x0) / ratio, height)
    else:
        x0, x1 = _aspect_span(x0, x1, (y1 - y0) * ratio, width)
    return x0, y0, x1, y1


def mask_box(values: Any) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), exclusive, of where any mask of the batch is above 0."""
    selected = (values > 0).any(dim=0)
    rows, cols = selected.any(dim=1).nonzero(), selected.any(dim=0).nonzero()
    if rows.numel() == 0:
        raise ValueError("mask selects nothing: there is no box to crop to")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@node("CropToMask", category="mask")
def crop_to_mask(
    image: Image,
    mask: Mask,
    padding: Pixels = 32,
    multiple_of: Annotated[int, Field(ge=1, le=64)] = 8,
    fit_width: Pixels = 0,
    fit_height: Pixels = 0,
) -> Crop:
    """Cut the picture and the mask to the mask's box plus ``padding`` pixels of context, its
    sides rounded up to ``multiple_of`` (8 fits a VAE), inside the picture. x and y say where it
    came from, width and height its size, for scaling and pasting back.

    With ``fit_width`` and ``fit_height`` (the size the crop will be scaled to) the padded box
    is instead widened to their aspect ratio, exactly as diffusers' ``padding_mask_crop`` does,
    so the crop scales without stretching (``multiple_of`` is then not used)."""
    height, width = image.pixels.shape[1:3]
    check_size(mask, width, height, "mask", "image")
    box = mask_box(mask.values)
    if (fit_width == 0) != (fit_height == 0):
        raise ValueError("give both fit_width and fit_height (the size to fit), or neither")
    if fit_width:
        x0, y0, x1, y1 = aspect_box(box, padding, width, height, (fit_width, fit_height))
    else:
        left, top, right, bottom = box
        x0, x1 = _span(left, right, padding, multiple_of, width)
        y0, y1 = _span(top, bottom, padding, multiple_of, height)
    return Crop(
        image=Image(image.pixels[:, y0:y1, x0:x1].clone()),
        mask=Mask(mask.values[:, y0:y1, x0:x1].clone()),
        x=x0,
        y=y0,
        width=x1 - x0,
        height=y1 - y0,
    )


@node("ImageCompositeMasked", category="image", aliases=("PasteCrop",))
def image_composite_masked(
    destination: Image,
    source: Image,
    x: Pixels = 0,
    y: Pixels = 0,
    mask: Mask | None = None,
) -> Image:
    """Paste ``source`` onto ``destination`` with its top-left corner at (x, y), through
    ``mask`` (the source's size; 1 = source, 0 = destination, soft edges blend) or wholly.
    What lies outside the source or the destination is cut off."""
    source_height, source_width = source.pixels.shape[1:3]
    if mask is not None:
        check_size(mask, source_width, source_height, "mask", "source")
    batch = max(destination.batch_size, source.batch_size)
    pixels = batched(destination.pixels, batch, "destination").clone()
    src = batched(source.pixels, batch, "source")
    height, width = pixels.shape[1:3]
    right, bottom = min(width, x + source_width), min(height, y + source_height)
    if right <= x or bottom <= y:
        return Image(pixels)
    part = src[:, : bottom - y, : right - x]
    region = pixels[:, y:bottom, x:right]
    if mask is None:
        pixels[:, y:bottom, x:right] = part
    else:
        alpha = batched(mask.values, batch, "mask")[:, : bottom - y, : right - x, None]
        pixels[:, y:bottom, x:right] = alpha * part + (1 - alpha) * region
    return Image(pixels)
