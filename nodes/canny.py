"""Canny edges of a picture, the control image most ControlNets are trained on.

OpenCV's ``cv2.Canny`` does the work (the detector diffusers' and ControlNet's own examples
call), on the picture's 8-bit RGB values with thresholds on OpenCV's scale, so an edge map made
here is the one those examples make.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodeflow import node
from nodes.types import Image

Threshold = Annotated[int, Field(ge=0, le=1000)]


@node("Canny", category="image/preprocessors")
def canny(
    image: Image,
    low_threshold: Threshold = 100,
    high_threshold: Threshold = 200,
    l2_gradient: bool = False,
) -> Image:
    """White edges on black: gradients above ``high_threshold`` start an edge, and it goes on
    while they stay above ``low_threshold`` (OpenCV's scale for 8-bit pictures)."""
    import cv2
    import numpy as np
    import torch

    if low_threshold > high_threshold:
        raise ValueError(
            f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})"
        )
    pictures = (image.pixels.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    edges = [
        cv2.Canny(np.ascontiguousarray(picture), low_threshold, high_threshold,
                  L2gradient=l2_gradient)
        for picture in pictures
    ]  # fmt: skip
    stacked = np.stack(edges).astype(np.float32) / 255.0
    return Image(torch.from_numpy(stacked)[..., None].repeat(1, 1, 1, 3))
