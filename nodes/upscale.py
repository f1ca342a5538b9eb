"""Conditioning for the Stable Diffusion x4 upscaler: the low-resolution picture and its noise.

The picture goes on both prompts (diffusers gives it to both halves of the CFG batch) with the
noise level, and the latent to denoise is sized so the upscaler's VAE decodes it to 4x the
picture (the latents are at the picture's size). The noise itself is drawn by Denoise from its
seed (``nodes.families.upscale``), so this node stays deterministic and cached.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, NamedTuple

from pydantic import Field

from nodeflow import node
from nodes.types import Conditioning, Image, Latent, UNet


class UpscaleOutputs(NamedTuple):
    positive: Conditioning
    negative: Conditioning
    latent: Latent


@node("UpscaleConditioning", category="conditioning", aliases=("SD_4XUpscale_Conditioning",))
def upscale_conditioning(
    unet: UNet,
    positive: Conditioning,
    negative: Conditioning,
    image: Image,
    noise_level: Annotated[int, Field(ge=0, le=1000)] = 20,
) -> UpscaleOutputs:
    """Give an x4 upscaler (e.g. stable-diffusion-x4-upscaler) the picture to enlarge: more
    ``noise_level`` lets it invent more detail and keep less of the picture (its default: 20)."""
    pixels = image.pixels
    low_res = pixels.permute(0, 3, 1, 2).contiguous() * 2.0 - 1.0
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    scale = unet.latent_scale
    latent = Latent(
        samples=None, width=width * scale, height=height * scale, batch_size=image.batch_size
    )

    def conditioned(conditioning: Conditioning) -> Conditioning:
        return dataclasses.replace(conditioning, low_res=low_res, noise_level=noise_level)

    return UpscaleOutputs(conditioned(positive), conditioned(negative), latent)
