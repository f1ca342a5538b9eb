"""Image embeddings as decoder conditioning: the unCLIP half of DALL-E 2 style models.

A Kandinsky 2.2 decoder is conditioned on the image embedding alone. A Stable unCLIP decoder is
conditioned on a prompt and on the image embedding noised to a chosen level, given to its U-Net as
a class embedding: the noised embedding side by side with a sinusoidal embedding of the level.
More noise leaves the decoder more freedom (more varied pictures).

The noise is drawn from Denoise's generator, first thing in sampling: that is where diffusers'
``StableUnCLIPPipeline`` draws it (after the prior, before the initial latents, from the one
generator of the run), so a Denoise seed gives diffusers' pixels, and the conditioning node itself
stays deterministic and cached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from nodeflow import node
from nodes.guidance import takes_class_labels
from nodes.types import Conditioning, Guider, ImageEmbeds


@dataclass(frozen=True, eq=False)
class NoiseAugmentor:
    """Stable unCLIP's ``image_normalizer`` and ``image_noising_scheduler``."""

    normalizer: Any
    scheduler: Any

    @property
    def max_level(self) -> int:
        return int(self.scheduler.config.num_train_timesteps) - 1

    def __call__(self, embeds: Any, level: int, generator: Any) -> Any:
        """Noise ``embeds`` to ``level`` and append the level's embedding, as diffusers does."""
        import torch
        from diffusers.models.embeddings import get_timestep_embedding
        from diffusers.utils.torch_utils import randn_tensor

        if not 0 <= level <= self.max_level:
            raise ValueError(f"noise_level {level} is outside 0..{self.max_level}")
        noise = randn_tensor(
            embeds.shape, generator=generator, device=embeds.device, dtype=embeds.dtype
        )
        levels = torch.tensor([level] * embeds.shape[0], device=embeds.device)
        mean = self.normalizer.mean.to(embeds.device, embeds.dtype)
        std = self.normalizer.std.to(embeds.device, embeds.dtype)
        scaled = (embeds - mean) * 1.0 / std
        noised = self.scheduler.add_noise(scaled, timesteps=levels, noise=noise)
        unscaled = noised * std + mean
        level_embedding = get_timestep_embedding(
            timesteps=levels,
            embedding_dim=unscaled.shape[-1],
            flip_sin_to_cos=True,
            downscale_freq_shift=0,
        )
        return torch.cat((unscaled, level_embedding.to(unscaled.dtype)), 1)


def with_class_labels(guider: Guider, generator: Any) -> Guider:
    """The guider with each conditioning's class labels made (noise drawn from ``generator``).

    A conditioning without image embeddings gets zeros, as diffusers gives the negative prompt.
    Only the conditionings sampling uses are noised (the negative one not at scale 1), positive
    first, so the draws match diffusers'.
    """
    unet = guider.unet
    if not takes_class_labels(unet):
        return guider
    if unet.noise_augmentor is None:
        raise ValueError("this U-Net takes class labels, known to nodeflow for Stable unCLIP only")
    import torch

    width = int(unet.model.config.projection_class_embeddings_input_dim)
    device, dtype = unet.model.device, unet.model.dtype

    def labelled(conditioning: Conditioning) -> Conditioning:
        if conditioning.image_embeds is None:
            labels = torch.zeros((1, width), device=device, dtype=dtype)
        else:
            embeds = conditioning.image_embeds.to(device=device, dtype=dtype)
            labels = unet.noise_augmentor(embeds, conditioning.noise_level, generator)
        return dataclasses.replace(conditioning, class_labels=labels)

    positive = labelled(guider.positive)
    negative = guider.negative if guider.scale == 1.0 else labelled(guider.negative)
    return dataclasses.replace(guider, positive=positive, negative=negative)


@node("UnCLIPConditioning", category="conditioning", aliases=("unCLIPConditioning",))
def unclip_conditioning(
    image_embeds: ImageEmbeds,
    conditioning: Conditioning | None = None,
    noise_level: Annotated[int, Field(ge=0, le=10000)] = 0,
) -> Conditioning:
    """Condition an unCLIP decoder on image embeddings (from PriorSample, CLIPVisionEncode or
    BlendEmbeds).

    Kandinsky 2.2: the image embeddings alone (leave ``conditioning`` unlinked; for the negative
    side use PriorSample's negative_image_embeds). Stable unCLIP: the prompt's conditioning plus
    the image embeddings, noised to ``noise_level`` (0 = as given; higher = freer variations); its
    negative side is the negative prompt alone, as in diffusers.
    """
    if conditioning is None:
        return Conditioning(embeds=None, image_embeds=image_embeds.embeds, noise_level=noise_level)
    return dataclasses.replace(
        conditioning, image_embeds=image_embeds.embeds, noise_level=noise_level
    )
