"""Resizing pictures in 8 bits through PIL, as diffusers' image processors and ComfyUI do.

``lanczos`` in ComfyUI's ImageScale and in diffusers' ``VaeImageProcessor`` resizes 8-bit PIL
images, not float tensors. diffusers' ``padding_mask_crop`` also fits a crop whose aspect ratio
is slightly off the output's by resizing it to fit inside and stretching its edge rows or columns
over the rest (``resize_mode="fill"``), and scales the result back by covering the crop's box and
cutting the excess (``"crop"``). Doing the same here (values rounded to 0..255 first, which is
exact for loaded pictures) gives those pipelines' pixels.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pil_resize"]


def _fill(picture: Any, width: int, height: int) -> Any:
    """``picture`` resized with its aspect ratio kept to fit ``width`` x ``height``, centred,
    and its first and last rows (or columns) stretched over the margins: diffusers'
    ``resize_mode="fill"``, step for step (its integer rounding and black leftover line too)."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    edge = Image.Resampling.BICUBIC  # diffusers stretches the edges with PIL's default filter
    ratio, source_ratio = width / height, picture.width / picture.height
    fit_w = width if ratio < source_ratio else picture.width * height // picture.height
    fit_h = height if ratio >= source_ratio else picture.height * width // picture.width
    fitted = picture.resize((fit_w, fit_h), resample=lanczos)
    out = Image.new(picture.mode, (width, height))
    out.paste(fitted, box=(width // 2 - fit_w // 2, height // 2 - fit_h // 2))
    if ratio < source_ratio and (margin := height // 2 - fit_h // 2) > 0:
        top = fitted.resize((width, margin), resample=edge, box=(0, 0, width, 0))
        bottom_box = (0, fitted.height, width, fitted.height)
        bottom = fitted.resize((width, margin), resample=edge, box=bottom_box)
        out.paste(top, box=(0, 0))
        out.paste(bottom, box=(0, margin + fit_h))
    elif ratio > source_ratio and (margin := width // 2 - fit_w // 2) > 0:
        left = fitted.resize((margin, height), resample=edge, box=(0, 0, 0, height))
        right_box = (fitted.width, 0, fitted.width, height)
        right = fitted.resize((margin, height), resample=edge, box=right_box)
        out.paste(left, box=(0, 0))
        out.paste(right, box=(margin + fit_w, 0))
    return out


def _cover(picture: Any, width: int, height: int) -> Any:
    """``picture`` resized with its aspect ratio kept to cover ``width`` x ``height`` and its
    middle cut out: diffusers' ``resize_mode="crop"``, with its integer rounding (how
    ``padding_mask_crop`` scales the inpainted picture back to the crop's box)."""
    from PIL import Image

    ratio, source_ratio = width / height, picture.width / picture.height
    cover_w = width if ratio > source_ratio else picture.width * height // picture.height
    cover_h = height if ratio <= source_ratio else picture.height * width // picture.width
    covered = picture.resize((cover_w, cover_h), resample=Image.Resampling.LANCZOS)
    out = Image.new(picture.mode, (width, height))
    out.paste(covered, box=(width // 2 - cover_w // 2, height // 2 - cover_h // 2))
    return out


def pil_resize(tensor: Any, width: int, height: int, mode: str = "disabled") -> Any:
    """Resize an NCHW tensor of values in 0..1 (1 or 3 channels) with PIL's Lanczos filter in
    8 bits: rounded to 0..255, resized (``mode`` ``fill``: fitted and edge-stretched, diffusers'
    ``resize_mode="fill"``; ``cover``: covered and cut, its ``"crop"``), divided by 255."""
    import numpy as np
    import torch
    from PIL import Image

    levels = (tensor.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = []
    for picture in levels:
        grey = picture.shape[0] == 1
        image = Image.fromarray(picture[0] if grey else picture.transpose(1, 2, 0))
        if mode == "fill":
            image = _fill(image, width, height)
        elif mode == "cover":
            image = _cover(image, width, height)
        else:
            image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
        array = np.asarray(image, dtype=np.float32) / 255.0
        out.append(array[None] if grey else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)).to(tensor.dtype)
