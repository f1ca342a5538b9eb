"""Resizing latents and pictures: the second pass of a "hires fix", and fitting pictures to a size.

A size of 0 follows the other side's aspect ratio; both 0 scale by ``factor``. Crop ``center``
cuts the source to the target's aspect ratio first, so nothing is stretched. The methods are
torch's: ``nearest`` (ComfyUI's and torch's legacy rounding), ``nearest-exact``, ``bilinear``,
``bicubic``, ``area``; pictures and masks also ``lanczos``, which like ComfyUI's ImageScale and
diffusers' image processors resizes 8-bit pictures through PIL (values rounded to 0..255 first, so
it is exact on loaded pictures and is how diffusers' ``padding_mask_crop`` resizes; ``fill`` is
its fitting of a crop of a slightly other aspect ratio and ``cover`` its way back,
``nodes.pil_scale``).
ComfyUI's LatentUpscale(By) and ImageScale(By) are these two nodes (the
editor finds them by those names; the ComfyUI importer maps their inputs).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from nodeflow import node
from nodes.types import Image, Latent

Method = Literal["nearest-exact", "nearest", "bilinear", "bicubic", "area"]
PictureMethod = Literal["nearest-exact", "nearest", "bilinear", "bicubic", "area", "lanczos"]
Crop = Literal["disabled", "center"]
PictureCrop = Literal["disabled", "center", "fill", "cover"]
Side = Annotated[int, Field(ge=0, le=16384)]
Factor = Annotated[float, Field(gt=0, le=16)]


def target_size(
    width: int, height: int, to_width: int, to_height: int, factor: float, multiple: int = 1
) -> tuple[int, int]:
    """The output size: given sides, the missing one by aspect ratio, or both scaled by factor."""
    if to_width == 0 and to_height == 0:
        to_width, to_height = round(width * factor), round(height * factor)
    elif to_width == 0:
        to_width = round(width * to_height / height)
    elif to_height == 0:
        to_height = round(height * to_width / width)
    snap = lambda side: max(multiple, round(side / multiple) * multiple)  # noqa: E731
    return snap(to_width), snap(to_height)


def resize(tensor: Any, width: int, height: int, method: str, crop: str) -> Any:
    """Resize an NCHW tensor to ``height`` x ``width``, centre-cropped to its aspect first
    (``center``); or, with ``lanczos`` only, diffusers' fitting inside with stretched edges
    (``fill``) or covering and cutting the middle (``cover``): ``nodes.pil_scale``."""
    import torch.nn.functional as F

    from nodes.pil_scale import pil_resize

    if crop in ("fill", "cover"):
        if method != "lanczos":
            raise ValueError(f"crop {crop!r} is diffusers' 8-bit {crop} and needs method "
                             f"'lanczos', not {method!r}")  # fmt: skip
        return pil_resize(tensor, width, height, crop)

    if crop == "center":
        h, w = tensor.shape[-2:]
        if w * height > h * width:  # too wide
            keep = max(1, round(h * width / height))
            left = (w - keep) // 2
            tensor = tensor[..., :, left : left + keep]
        else:
            keep = max(1, round(w * height / width))
            top = (h - keep) // 2
            tensor = tensor[..., top : top + keep, :]
    if method == "lanczos":
        return pil_resize(tensor, width, height)
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(tensor, size=(height, width), mode=method, **kwargs)


@node("ScaleLatent", category="latent", aliases=("LatentUpscale", "LatentUpscaleBy"))
def scale_latent(
    latent: Latent,
    width: Side = 0,
    height: Side = 0,
    factor: Factor = 1.5,
    method: Method = "nearest-exact",
    crop: Crop = "disabled",
) -> Latent:
    """Resize latents to a picture size (or by a factor), for a second Denoise at strength < 1."""
    size = target_size(latent.width, latent.height, width, height, factor, multiple=8)
    if latent.samples is None:  # an empty latent is only a size
        return Latent(samples=None, width=size[0], height=size[1], batch_size=latent.batch_size)
    scale = latent.width // latent.samples.shape[-1]
    samples = resize(latent.samples, size[0] // scale, size[1] // scale, method, crop)
    return Latent(
        samples=samples,
        width=samples.shape[-1] * scale,
        height=samples.shape[-2] * scale,
        batch_size=latent.batch_size,
        scaling_factor=latent.scaling_factor,
    )


@node("ScaleImage", category="image", aliases=("ImageScale", "ImageScaleBy"))
def scale_image(
    image: Image,
    width: Side = 0,
    height: Side = 0,
    factor: Factor = 1.5,
    method: PictureMethod = "bilinear",
    crop: PictureCrop = "disabled",
) -> Image:
    """Resize pictures to a size (or by a factor)."""
    pixels = image.pixels
    size = target_size(pixels.shape[2], pixels.shape[1], width, height, factor)
    nchw = pixels.permute(0, 3, 1, 2)
    return Image(resize(nchw, size[0], size[1], method, crop).clamp(0, 1).permute(0, 2, 3, 1))
