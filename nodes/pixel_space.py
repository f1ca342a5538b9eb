"""The nodes a pixel-space model needs around Denoise: its conditioning and its pictures.

A pixel-space model's latent is the picture in [-1, 1] (``nodes.families.pixel``), so no VAE
stands between it and an Image: ``LatentToImage`` maps it to [0, 1] as ``DDPMPipeline``,
``DDIMPipeline`` and ``ConsistencyModelPipeline`` do (``(x / 2 + 0.5).clamp(0, 1)``), and
``ImageToLatent`` is the inverse, for img2img.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodeflow import node
from nodes.types import Conditioning, Image, Latent


@node("ClassLabel", category="conditioning")
def class_label(label: Annotated[int, Field(ge=0, le=1_000_000)] = 0) -> Conditioning:
    """Condition a class-conditional pixel-space model on one class (an ImageNet index for
    the released consistency models); every picture of the batch gets it."""
    import torch

    return Conditioning(embeds=None, class_labels=torch.tensor([label], dtype=torch.long))


@node("Unconditional", category="conditioning")
def unconditional() -> Conditioning:
    """No conditioning at all: for unconditional models (DDPM/DDIM pixel models). Give it to
    CFG as both positive and negative, with scale 1."""
    return Conditioning(embeds=None)


@node("LatentToImage", category="latent")
def latent_to_image(latent: Latent) -> Image:
    """A pixel-space model's output as pictures: (x / 2 + 0.5), clamped to [0, 1]."""
    if latent.samples is None:
        raise ValueError("latent: an empty latent has no pictures; denoise it first")
    samples = latent.samples
    if samples.shape[1] != 3:
        raise ValueError(
            f"latent: {samples.shape[1]} channels is not a picture (3); a latent-space model's "
            "output needs VAEDecode"
        )
    pixels = (samples / 2 + 0.5).clamp(0, 1)
    return Image(pixels.detach().cpu().permute(0, 2, 3, 1).float())


@node("ImageToLatent", category="latent")
def image_to_latent(image: Image) -> Latent:
    """Pictures as a pixel-space model's latent (x * 2 - 1), for img2img with such a model."""
    pixels = image.pixels.permute(0, 3, 1, 2) * 2 - 1
    batch, _, height, width = pixels.shape
    return Latent(samples=pixels, width=int(width), height=int(height), batch_size=int(batch))
