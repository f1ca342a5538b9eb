"""Inpainting with inpainting checkpoints: the mask and the masked picture as conditioning.

An inpainting U-Net (9 input channels) sees, beside the noisy latents, the mask at latent size
and the latents of the picture with the masked part blanked (mid-grey, 0 in the VAE's [-1, 1]),
as diffusers' ``StableDiffusionInpaintPipeline`` and ``StableDiffusionXLInpaintPipeline`` give
them. Like ComfyUI's ``InpaintModelConditioning``, this node puts them on both conditionings
(``Conditioning.concat``); the family adapter appends them to the model input at every step, so
Denoise, CFG and the scheduler are the ones every model uses. Its latent output is the whole
picture encoded, for Denoise at strength < 1 (at strength 1 only its size counts).

The mask is made hard at 0.5 first, as diffusers does (the models were trained on hard masks).
``noise_mask`` also marks the latent for SetLatentNoiseMask-style blending; diffusers does not
blend with a 9-channel U-Net, so it is off by default.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from nodeflow import Context, node
from nodes.families.concat import ConcatLatents
from nodes.masks import check_batch, check_size
from nodes.noise_mask import latent_mask
from nodes.types import VAE, Conditioning, Image, Latent, Mask
from nodes.vae import encode


class InpaintConditioning(NamedTuple):
    positive: Conditioning
    negative: Conditioning
    latent: Latent
    """The picture encoded (its posterior is sampled by Denoise below strength 1)."""


def masked_picture(image: Image, hard: Mask) -> Image:
    """The picture with the selected pixels mid-grey (0 once the VAE maps to [-1, 1])."""
    keep = (hard.values < 0.5)[..., None]
    return Image(image.pixels.where(keep, 0.5))


@node("InpaintModelConditioning", category="conditioning")
def inpaint_model_conditioning(
    ctx: Context,
    positive: Conditioning,
    negative: Conditioning,
    vae: VAE,
    image: Image,
    mask: Mask,
    noise_mask: bool = False,
) -> InpaintConditioning:
    """Condition an inpainting model (9-channel U-Net) on ``image`` with ``mask`` (1 = repaint,
    the picture's size): the mask and the masked picture's latents go to the model with both
    prompts. ``noise_mask`` also keeps the unmasked latents at every step."""
    import torch

    height, width = image.pixels.shape[1:3]
    check_size(mask, width, height, "mask", "image")
    check_batch(mask, image.batch_size, "mask", "image")
    if vae.is_vq:
        raise ValueError("vae: inpainting models use a KL autoencoder, not a VQ one")
    ctx.models.use(vae.model)
    hard = Mask((mask.values >= 0.5).to(torch.float32))
    masked = encode(vae, masked_picture(image, hard))
    factor = vae.scale_factor
    concat = ConcatLatents(
        mask=latent_mask(hard.values, height // factor, width // factor),
        posterior=masked.posterior,
        scaling_factor=masked.scaling_factor,
    )
    latent = encode(vae, image)
    if noise_mask:
        latent = dataclasses.replace(latent, noise_mask=hard.values)
    return InpaintConditioning(
        positive=dataclasses.replace(positive, concat=concat),
        negative=dataclasses.replace(negative, concat=concat),
        latent=latent,
    )
