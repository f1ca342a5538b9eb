"""Classifier-free guidance: one batched U-Net call for both prompts, as diffusers does it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from nodeflow import node
from nodes.types import Conditioning, Guider, UNet


def _repeat_to(embeds: Any, batch: int) -> Any:
    if embeds.shape[0] == batch:
        return embeds
    if batch % embeds.shape[0]:
        raise ValueError(f"conditioning of batch {embeds.shape[0]} cannot fill a batch of {batch}")
    return embeds.repeat_interleave(batch // embeds.shape[0], dim=0)


def rescale_guidance(guided: Any, positive: Any, rescale: float) -> Any:
    """Pull the guided prediction's spread back to the positive one's (Lin et al. 2023, 3.4),
    which counters the over-exposure strong guidance causes."""
    dims = list(range(1, positive.ndim))
    std_positive = positive.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_positive / std_guided)
    return rescale * rescaled + (1 - rescale) * guided


def predict_noise(guider: Guider, latents: Any, timestep: Any, scheduler: Any) -> Any:
    """The guided model output for ``latents`` at ``timestep``.

    At scale 1 the negative pass would cancel out, so it is skipped (half the U-Net work).
    """
    import torch

    batch = latents.shape[0]
    unet = guider.unet.model
    positive = _repeat_to(guider.positive.embeds, batch)
    if guider.scale == 1.0:
        model_input = scheduler.scale_model_input(latents, timestep)
        return unet(model_input, timestep, encoder_hidden_states=positive, return_dict=False)[0]
    negative = _repeat_to(guider.negative.embeds, batch)
    model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
    embeds = torch.cat([negative, positive])
    output = unet(model_input, timestep, encoder_hidden_states=embeds, return_dict=False)[0]
    uncond, cond = output.chunk(2)
    guided = uncond + guider.scale * (cond - uncond)
    if guider.rescale > 0:
        guided = rescale_guidance(guided, cond, guider.rescale)
    return guided


@node("CFG", category="sampling")
def cfg(
    unet: UNet,
    positive: Conditioning,
    negative: Conditioning,
    scale: Annotated[float, Field(ge=0, le=100)] = 7.5,
    rescale: Annotated[float, Field(ge=0, le=1)] = 0.0,
) -> Guider:
    """Combine a prompt and a negative prompt with classifier-free guidance (rescale 0 = off)."""
    return Guider(unet=unet, positive=positive, negative=negative, scale=scale, rescale=rescale)
