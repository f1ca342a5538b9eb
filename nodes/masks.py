"""Masks: making them from pictures, changing them, combining them.

A ``Mask`` is [batch, height, width] floats in [0, 1], 1 = selected (ComfyUI's MASK). Names and
widgets follow ComfyUI's mask nodes where it has one (``ImageToMask``, ``InvertMask``,
``GrowMask``, ``FeatherMask``, ``MaskComposite``, ``ThresholdMask``, ``SolidMask``), so imported
workflows and users' habits carry over. Masks never change size silently: a mask and a picture
of different sizes are refused, naming both inputs and sizes (``ScaleMask`` resizes on purpose).
Cropping to a mask's box and pasting back live in ``nodes.mask_crop``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from nodeflow import Context, node
from nodes.image import write_pngs
from nodes.scale import PictureCrop, PictureMethod, Side
from nodes.types import Image, Mask

Channel = Literal["red", "green", "blue"]
Operation = Literal["multiply", "add", "subtract", "max", "min", "and", "or", "xor"]
Amount = Annotated[float, Field(ge=0, le=1)]
Pixels = Annotated[int, Field(ge=0, le=16384)]


def check_size(mask: Mask, width: int, height: int, mask_name: str, other: str) -> None:
    """Refuse a mask whose size is not ``width`` x ``height`` (the size of input ``other``)."""
    if mask.size != (width, height):
        raise ValueError(
            f"{mask_name} is {mask.size[0]}x{mask.size[1]} but {other} is {width}x{height}; "
            f"resize the mask with ScaleMask first"
        )


def check_batch(mask: Mask, batch: int, mask_name: str, other: str) -> None:
    """Refuse a mask batch that is neither one mask for all nor one per picture of ``other``."""
    if mask.batch_size not in (1, batch):
        raise ValueError(
            f"{mask_name} has a batch of {mask.batch_size} but {other} has {batch}; give one "
            "mask for all pictures or one per picture"
        )


def batched(values: Any, batch: int, name: str) -> Any:
    """``values`` [b, ...] repeated to ``batch`` rows (one mask for several pictures)."""
    if values.shape[0] == batch:
        return values
    if values.shape[0] != 1:
        raise ValueError(f"{name} has a batch of {values.shape[0]}, which cannot fill {batch}")
    return values.expand(batch, *values.shape[1:])


@node("ImageToMask", category="mask")
def image_to_mask(image: Image, channel: Channel = "red") -> Mask:
    """One colour channel of a picture as a mask (a black-and-white picture: any channel)."""
    index = ("red", "green", "blue").index(channel)
    return Mask(image.pixels[..., index].clone())


@node("MaskToImage", category="mask")
def mask_to_image(mask: Mask) -> Image:
    """A mask as a grey picture (white = selected), to preview, save or process as a picture."""
    return Image(mask.values[..., None].expand(-1, -1, -1, 3).clone())


@node("ColorToMask", category="mask")
def color_to_mask(
    image: Image,
    color: Annotated[int, Field(ge=0, le=0xFFFFFF)] = 0xFFFFFF,
    tolerance: Annotated[int, Field(ge=0, le=255)] = 0,
) -> Mask:
    """Select the pixels of one colour (0xRRGGBB): 1 where every channel is within
    ``tolerance`` (in 0..255 steps) of it. Tolerance 0 is ComfyUI's exact match."""
    import torch

    target = torch.tensor([(color >> 16) & 255, (color >> 8) & 255, color & 255])
    levels = (image.pixels * 255).round()
    close = (levels - target).abs() <= tolerance
    return Mask(close.all(dim=-1).float())


@node("ThresholdMask", category="mask")
def threshold_mask(mask: Mask, value: Amount = 0.5) -> Mask:
    """1 where the mask is above ``value``, else 0: a hard mask from a soft one."""
    return Mask((mask.values > value).float())


@node("InvertMask", category="mask")
def invert_mask(mask: Mask) -> Mask:
    """Select what was not selected: 1 - mask."""
    return Mask(1.0 - mask.values)


@node("SolidMask", category="mask")
def solid_mask(value: Amount = 1.0, width: Pixels = 512, height: Pixels = 512) -> Mask:
    """A mask of one value everywhere (1: repaint all, 0: keep all)."""
    import torch

    return Mask(torch.full((1, height, width), float(value)))


def _dilate(values: Any, tapered: bool) -> Any:
    """One step of grey dilation with a 3x3 square, or with a plus shape when ``tapered``
    (corners grow slower, so shapes keep rounder outlines; ComfyUI's tapered_corners)."""
    import torch.nn.functional as F

    padded = F.pad(values[:, None], (1, 1, 1, 1), mode="replicate")
    if not tapered:
        return F.max_pool2d(padded, 3, stride=1)[:, 0]
    height, width = values.shape[-2:]
    shifts = [padded[:, 0, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
              for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))]  # fmt: skip
    out = shifts[0]
    for shifted in shifts[1:]:
        out = out.maximum(shifted)
    return out


@node("GrowMask", category="mask")
def grow_mask(
    mask: Mask,
    expand: Annotated[int, Field(ge=-1024, le=1024)] = 8,
    tapered_corners: bool = True,
) -> Mask:
    """Grow the selection by ``expand`` pixels, or shrink it when negative (grey dilation or
    erosion, one pixel per step, as ComfyUI's GrowMask)."""
    sign = 1 if expand > 0 else -1  # erosion is dilation of the negated mask
    values = sign * mask.values
    for _ in range(abs(expand)):
        values = _dilate(values, tapered_corners)
    return Mask((sign * values).clone())


@node("BlurMask", category="mask", aliases=("MaskBlur",))
def blur_mask(mask: Mask, radius: Annotated[int, Field(ge=0, le=256)] = 8) -> Mask:
    """Soften the mask's edge with a Gaussian blur (sigma = radius / 2): a feathered mask, so a
    repainted region fades into the kept picture when composited."""
    import torch
    import torch.nn.functional as F

    if radius == 0:
        return mask
    sigma = radius / 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    values = F.pad(mask.values[:, None], (radius, radius, radius, radius), mode="replicate")
    values = F.conv2d(values, kernel.view(1, 1, 1, -1))
    values = F.conv2d(values, kernel.view(1, 1, -1, 1))
    return Mask(values[:, 0].clamp(0, 1))


@node("FeatherMask", category="mask")
def feather_mask(
    mask: Mask, left: Pixels = 0, top: Pixels = 0, right: Pixels = 0, bottom: Pixels = 0
) -> Mask:
    """Fade the mask out towards the picture's borders: linearly over ``left`` pixels from the
    left edge, and so on (ComfyUI's FeatherMask). To soften the selection's own edge use
    BlurMask."""
    import torch

    values = mask.values.clone()
    height, width = values.shape[-2:]
    ramps = [(left, width, lambda i: (..., slice(None), i)),
             (right, width, lambda i: (..., slice(None), width - 1 - i)),
             (top, height, lambda i: (..., i, slice(None))),
             (bottom, height, lambda i: (..., height - 1 - i, slice(None)))]  # fmt: skip
    for amount, side, index in ramps:
        for i in range(min(amount, side)):
            values[index(i)] *= (i + 1) / amount
    return Mask(torch.clamp(values, 0, 1))


def _operate(destination: Any, source: Any, operation: str) -> Any:
    if operation == "multiply":
        return destination * source
    if operation == "add":
        return destination + source
    if operation == "subtract":
        return destination - source
    if operation == "max":
        return destination.maximum(source)
    if operation == "min":
        return destination.minimum(source)
    a, b = destination.round().bool(), source.round().bool()
    result = {"and": a & b, "or": a | b, "xor": a ^ b}[operation]
    return result.float()


@node("MaskComposite", category="mask", aliases=("CombineMasks",))
def mask_composite(
    destination: Mask,
    source: Mask,
    x: Pixels = 0,
    y: Pixels = 0,
    operation: Operation = "multiply",
) -> Mask:
    """Combine ``source`` into ``destination`` with its top-left corner at (x, y); the result
    has the destination's size, clamped to [0, 1]. and/or/xor treat values as on above 0.5.
    With x = y = 0 the two masks must be the same size; an offset places a smaller source."""
    if (x, y) == (0, 0) and source.size != destination.size:
        check_size(source, *destination.size, "source", "destination")
    values = destination.values.clone()
    batch = max(destination.batch_size, source.batch_size)
    values = batched(values, batch, "destination").clone()
    src = batched(source.values, batch, "source")
    height, width = values.shape[-2:]
    right, bottom = min(width, x + src.shape[-1]), min(height, y + src.shape[-2])
    if right > x and bottom > y:
        region = values[:, y:bottom, x:right]
        part = src[:, : bottom - y, : right - x]
        values[:, y:bottom, x:right] = _operate(region, part, operation)
    return Mask(values.clamp(0, 1))


@node("ScaleMask", category="mask")
def scale_mask(
    mask: Mask,
    width: Side = 512,
    height: Side = 512,
    method: PictureMethod = "bilinear",
    crop: PictureCrop = "disabled",
) -> Mask:
    """Resize a mask on purpose (a 0 side follows the other's aspect ratio), e.g. to fit a
    picture of another size; masks are otherwise never resized silently. ``crop`` as
    ScaleImage's, so a mask stays aligned with its picture."""
    from nodes.scale import resize, target_size

    size = target_size(*mask.size, width, height, 1.0)
    values = resize(mask.values[:, None], size[0], size[1], method, crop)
    return Mask(values[:, 0].clamp(0, 1))


@node("MaskPreview", category="mask", output_node=True, aliases=("PreviewMask",))
def mask_preview(ctx: Context, mask: Mask) -> dict:
    """Show a mask as a grey picture (white = selected) in the output dir's previews/ folder."""
    from nodes.image import _report

    folder = ctx.env.output_dir / "previews"
    paths = write_pngs(mask_to_image(mask), folder, f"mask-{ctx.run_id[:8]}", None)
    return _report(paths, ctx.env.output_dir, "preview")
