"""Denoising only inside a mask: what inpainting with an ordinary checkpoint is.

``SetLatentNoiseMask`` marks a latent's region to repaint. Denoise then starts from noise (or, at
strength < 1, from the noised picture) everywhere, and after every step puts the known latents
back outside the mask, noised to the next step's level, exactly as diffusers'
``StableDiffusionInpaintPipeline`` does with a 4-channel U-Net::

    known = scheduler.add_noise(image_latents, noise, next_timestep)  # clean after the last step
    latents = (1 - mask) * known + mask * latents

It is a latent hook of the sampling loop (``nodes.attention.Sampling.latent_hooks``, the same
seam prompt-to-prompt's local blend uses), so ``sample()`` has no inpainting case. The mask is
brought to latent size with nearest-neighbour sampling, as diffusers does. diffusers binarizes
its mask at 0.5 first; here a soft mask (e.g. from BlurMask) blends softly, and a mask from
ThresholdMask gives diffusers' result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nodeflow import node
from nodes.masks import check_batch, check_size
from nodes.noising import noised
from nodes.types import Latent, Mask

if TYPE_CHECKING:
    from nodes.attention import Sampling


def latent_mask(mask: Any, height: int, width: int) -> Any:
    """A [batch, height, width] mask at latent size [batch, 1, h, w], nearest-neighbour as
    diffusers' ``torch.nn.functional.interpolate(mask, size=...)``."""
    import torch.nn.functional as F

    return F.interpolate(mask[:, None].float(), size=(height, width))


@dataclass
class KeepUnmasked:
    """A latent hook: after step i, outside the mask, the known latents noised to step i + 1."""

    scheduler: Any
    timesteps: Any
    known: Any
    """The clean latents of the picture (a posterior sample, as diffusers draws it)."""
    noise: Any
    mask: Any
    """[batch, 1, h, w] at latent size, on the latents' device."""

    def __call__(self, latents: Any, sampling: Sampling) -> Any:
        import torch

        known = self.known
        following = sampling.step + 1
        if following < len(self.timesteps):
            timestep = torch.tensor([self.timesteps[following]])
            known = noised(self.scheduler, known, self.noise, timestep)
        return (1 - self.mask) * known + self.mask * latents


def keep_unmasked(latent: Latent, scheduler: Any, timesteps: Any, known: Any, noise: Any) -> Any:
    """The hook for ``latent``'s noise mask, or None when it has none."""
    if latent.noise_mask is None:
        return None
    mask = latent_mask(latent.noise_mask, known.shape[-2], known.shape[-1])
    mask = mask.to(device=known.device, dtype=known.dtype)
    return KeepUnmasked(scheduler, timesteps, known, noise, mask)


@node("SetLatentNoiseMask", category="latent")
def set_latent_noise_mask(latent: Latent, mask: Mask) -> Latent:
    """Denoise only where ``mask`` is 1 and keep this latent's picture elsewhere (inpainting
    with an ordinary checkpoint). The latent needs content (VAEEncode of the picture); the mask
    must be the picture's size."""
    if latent.samples is None:
        raise ValueError("latent: an empty latent has no picture to keep; use VAEEncode's")
    check_size(mask, latent.width, latent.height, "mask", "latent's picture")
    check_batch(mask, latent.batch_size, "mask", "latent")
    return dataclasses.replace(latent, noise_mask=mask.values)
