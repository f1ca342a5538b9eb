"""Classifier-free guidance: one batched U-Net call for both prompts, as diffusers does it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from nodeflow import node
from nodes.types import Conditioning, Guider, SizeConditioning, UNet


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


def _added_conditions(
    guider: Guider, conditionings: list[Conditioning], latents: Any
) -> dict[str, Any] | None:
    """SDXL's extra U-Net inputs: pooled prompt embeddings and the size/crop "time ids"."""
    import torch

    unet = guider.unet
    if getattr(unet.model.config, "addition_embed_type", None) != "text_time":
        return None
    batch = latents.shape[0]
    height = latents.shape[-2] * unet.latent_scale
    width = latents.shape[-1] * unet.latent_scale
    default = SizeConditioning(original=(height, width), crop=(0, 0), target=(height, width))
    pooled, time_ids = [], []
    for conditioning in conditionings:
        if conditioning.pooled is None:
            raise ValueError("this U-Net (SDXL) needs pooled embeddings from an SDXL text encoder")
        size = conditioning.size or default
        ids = torch.tensor([size.time_ids()], dtype=conditioning.embeds.dtype)
        pooled.append(_repeat_to(conditioning.pooled, batch))
        time_ids.append(ids.to(latents.device).repeat(batch, 1))
    return {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(time_ids)}


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
        added = _added_conditions(guider, [guider.positive], latents)
        return unet(
            model_input,
            timestep,
            encoder_hidden_states=positive,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
    negative = _repeat_to(guider.negative.embeds, batch)
    model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
    embeds = torch.cat([negative, positive])
    added = _added_conditions(guider, [guider.negative, guider.positive], latents)
    output = unet(
        model_input,
        timestep,
        encoder_hidden_states=embeds,
        added_cond_kwargs=added,
        return_dict=False,
    )[0]
    uncond, cond = output.chunk(2)
    guided = uncond + guider.scale * (cond - uncond)
    if guider.rescale > 0:
        guided = rescale_guidance(guided, cond, guider.rescale)
    return guided


def _check_fits(unet: UNet, conditioning: Conditioning, name: str) -> None:
    """Refuse conditioning from another model's text encoder here, with a message that says so,
    rather than as a matrix-shape error deep inside the U-Net."""
    width = int(conditioning.embeds.shape[-1])
    expected = getattr(unet.model.config, "cross_attention_dim", width)
    if width != expected:
        raise ValueError(
            f"{name}: the conditioning is {width} wide but this U-Net attends to {expected}; "
            "encode the prompt with the text encoder of the same model"
        )
    sdxl = getattr(unet.model.config, "addition_embed_type", None) == "text_time"
    if sdxl and conditioning.pooled is None:
        raise ValueError(f"{name}: this U-Net (SDXL) needs pooled embeddings from SDXL's encoders")


@node("CFG", category="sampling")
def cfg(
    unet: UNet,
    positive: Conditioning,
    negative: Conditioning,
    scale: Annotated[float, Field(ge=0, le=100)] = 7.5,
    rescale: Annotated[float, Field(ge=0, le=1)] = 0.0,
) -> Guider:
    """Combine a prompt and a negative prompt with classifier-free guidance (rescale 0 = off)."""
    for name, conditioning in (("positive", positive), ("negative", negative)):
        _check_fits(unet, conditioning, name)
    return Guider(unet=unet, positive=positive, negative=negative, scale=scale, rescale=rescale)
