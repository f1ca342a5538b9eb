"""Classifier-free guidance: one batched U-Net call for both prompts, as diffusers does it."""

from __future__ import annotations

import math
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
    """The U-Net's extra inputs: SDXL's pooled prompt embeddings and size/crop "time ids", or a
    Kandinsky 2.2 decoder's image embeddings."""
    kind = getattr(guider.unet.model.config, "addition_embed_type", None)
    if kind == "text_time":
        return _size_conditions(guider, conditionings, latents)
    if kind == "image":
        batch = latents.shape[0]
        return {"image_embeds": _cat([c.image_embeds for c in conditionings], batch)}
    return None


def _size_conditions(
    guider: Guider, conditionings: list[Conditioning], latents: Any
) -> dict[str, Any]:
    import torch

    unet = guider.unet
    batch = latents.shape[0]
    height = latents.shape[-2] * unet.latent_scale
    width = latents.shape[-1] * unet.latent_scale
    default = SizeConditioning(original=(height, width), crop=(0, 0), target=(height, width))
    pooled, time_ids = [], []
    for conditioning in conditionings:
        if conditioning.pooled is None:
            raise ValueError("this U-Net (SDXL) needs pooled embeddings from an SDXL text encoder")
        size = conditioning.size or default
        ids = torch.tensor([size.time_ids()], dtype=conditioning.pooled.dtype)
        pooled.append(_repeat_to(conditioning.pooled, batch))
        time_ids.append(ids.to(latents.device).repeat(batch, 1))
    return {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(time_ids)}


def _cat(tensors: list[Any], batch: int) -> Any:
    import torch

    if any(t is None for t in tensors):
        raise ValueError("conditioning is missing an input this U-Net needs")
    return torch.cat([_repeat_to(t, batch) for t in tensors])


def same_length(embeds: list[Any]) -> list[Any]:
    """Prompt embeddings made as long as each other, so they batch: each is repeated along the
    tokens up to the least common multiple of the lengths (as ComfyUI does).

    A long prompt is encoded in 77-token chunks, so a positive and a negative prompt may differ in
    length. Repeating a whole sequence k times leaves cross-attention's result unchanged (every
    key and value appears k times, the softmax weights each copy 1/k as much), so each prompt
    still means exactly what it did alone, unlike padding with extra tokens.
    """
    if any(e is None for e in embeds):
        return embeds
    lengths = [int(e.shape[1]) for e in embeds]
    if len(set(lengths)) == 1:
        return embeds
    target = math.lcm(*lengths)
    return [e.repeat(1, target // n, 1) for e, n in zip(embeds, lengths, strict=True)]


def takes_class_labels(unet: UNet) -> bool:
    """A U-Net with a class embedding (Stable unCLIP: the noised image embedding)."""
    return getattr(unet.model.config, "class_embed_type", None) is not None


def _unet_inputs(guider: Guider, conditionings: list[Conditioning], latents: Any) -> dict:
    """The conditioning keyword arguments of one batched U-Net call, in ``conditionings`` order."""
    batch = latents.shape[0]
    embeds = [c.embeds for c in conditionings]
    inputs: dict[str, Any] = {
        "encoder_hidden_states": None if embeds[0] is None else _cat(same_length(embeds), batch),
        "added_cond_kwargs": _added_conditions(guider, conditionings, latents),
    }
    if takes_class_labels(guider.unet):
        inputs["class_labels"] = _cat([c.class_labels for c in conditionings], batch)
    return inputs


def _learned_variance(scheduler: Any) -> bool:
    return getattr(scheduler.config, "variance_type", None) in ("learned", "learned_range")


def unet_inputs(guider: Guider, latents: Any) -> dict[str, Any]:
    """The U-Net's conditioning arguments for a batch like ``latents``: the same at every step,
    so a sampling loop makes them once (``predict_noise(..., inputs=...)``)."""
    if guider.scale == 1.0:
        return _unet_inputs(guider, [guider.positive], latents)
    return _unet_inputs(guider, [guider.negative, guider.positive], latents)


def predict_noise(
    guider: Guider,
    latents: Any,
    timestep: Any,
    scheduler: Any,
    inputs: dict[str, Any] | None = None,
) -> Any:
    """The guided model output for ``latents`` at ``timestep`` (``inputs``: from
    ``unet_inputs``, made here when not given).

    At scale 1 the negative pass would cancel out, so it is skipped (half the U-Net work).

    A U-Net that also predicts its variance (twice the latent channels out, as Kandinsky 2.2's
    decoder) has guidance applied to the noise half only; the variance comes from the positive
    pass, and reaches the scheduler only when the scheduler uses a learned variance (as in
    diffusers' Kandinsky pipeline).
    """
    import torch

    unet = guider.unet.model
    channels = latents.shape[1]
    if inputs is None:
        inputs = unet_inputs(guider, latents)
    if guider.scale == 1.0:
        model_input = scheduler.scale_model_input(latents, timestep)
        output = unet(model_input, timestep, **inputs, return_dict=False)[0]
        if output.shape[1] == 2 * channels and not _learned_variance(scheduler):
            return output[:, :channels]
        return output
    model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
    output = unet(model_input, timestep, **inputs, return_dict=False)[0]
    variance = None
    if output.shape[1] == 2 * channels:
        output, variance = output.split(channels, dim=1)
    uncond, cond = output.chunk(2)
    guided = uncond + guider.scale * (cond - uncond)
    if guider.rescale > 0:
        guided = rescale_guidance(guided, cond, guider.rescale)
    if variance is not None and _learned_variance(scheduler):
        guided = torch.cat([guided, variance.chunk(2)[1]], dim=1)
    return guided


def _check_fits(unet: UNet, conditioning: Conditioning, name: str) -> None:
    """Refuse conditioning this U-Net cannot use (another model's text encoder, a missing image
    embedding), with a message that says so, rather than as a shape error deep inside the U-Net."""
    config = unet.model.config
    image_only = getattr(config, "encoder_hid_dim_type", None) == "image_proj"
    if conditioning.image_embeds is not None:
        _check_image_embeds(unet, conditioning, name)
    elif image_only:
        raise ValueError(
            f"{name}: this U-Net (an unCLIP decoder such as Kandinsky 2.2) is conditioned on image "
            "embeddings; make its conditioning with UnCLIPConditioning"
        )
    if conditioning.embeds is None:
        if not image_only:
            raise ValueError(f"{name}: this U-Net needs a prompt; give UnCLIPConditioning one")
        return
    if image_only:
        raise ValueError(f"{name}: this U-Net takes no prompt, only image embeddings")
    width = int(conditioning.embeds.shape[-1])
    expected = getattr(config, "cross_attention_dim", width)
    if width != expected:
        raise ValueError(
            f"{name}: the conditioning is {width} wide but this U-Net attends to {expected}; "
            "encode the prompt with the text encoder of the same model"
        )
    sdxl = getattr(config, "addition_embed_type", None) == "text_time"
    if sdxl and conditioning.pooled is None:
        raise ValueError(f"{name}: this U-Net (SDXL) needs pooled embeddings from SDXL's encoders")


def _check_image_embeds(unet: UNet, conditioning: Conditioning, name: str) -> None:
    config = unet.model.config
    width = int(conditioning.image_embeds.shape[-1])
    if getattr(config, "addition_embed_type", None) == "image":
        expected = int(config.encoder_hid_dim)
    elif unet.noise_augmentor is not None and takes_class_labels(unet):
        expected = int(config.projection_class_embeddings_input_dim) // 2
    else:
        raise ValueError(f"{name}: this U-Net takes no image embeddings (it is no unCLIP decoder)")
    if width != expected:
        raise ValueError(
            f"{name}: the image embeddings are {width} wide but this U-Net takes {expected}; "
            "use the prior or image encoder made for this decoder"
        )
    if conditioning.noise_level and unet.noise_augmentor is None:
        raise ValueError(f"{name}: noise_level applies to Stable unCLIP decoders only; set it to 0")


@node("CFG", category="sampling", aliases=("CFGGuider",))
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
