"""Between pixels and latents, with diffusers' scaling and normalisation.

Latents are ``(z - shift_factor) * scaling_factor`` of the VAE's own ``z``; ``shift_factor`` comes
from the VAE config (SD3 and Flux VAEs have one, SD's none), so no family is named here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

from nodeflow import Context, node
from nodes.types import VAE, Image, Latent


def _latent_tensor(vae: VAE, latent: Latent) -> Any:
    import torch

    if latent.samples is not None:
        return latent.samples
    factor = vae.scale_factor
    shape = (
        latent.batch_size,
        vae.model.config.latent_channels,
        latent.height // factor,
        latent.width // factor,
    )
    return torch.zeros(shape, device=vae.model.device, dtype=vae.model.dtype)


@contextmanager
def _upcast_if_needed(model: Any) -> Iterator[Any]:
    """The SDXL VAE overflows in fp16 (black or NaN pictures); its config says so with
    ``force_upcast``, and diffusers then decodes in fp32. So do we, and put it back after."""
    import torch

    if not (getattr(model.config, "force_upcast", False) and model.dtype == torch.float16):
        yield model
        return
    # nn.Module.to, not diffusers' override, which warns about casting on every call
    torch.nn.Module.to(model, torch.float32)
    try:
        yield model
    finally:
        torch.nn.Module.to(model, torch.float16)


def decode(vae: VAE, latent: Latent) -> Image:

    with _upcast_if_needed(vae.model) as model:
        return _decode(vae, model, latent)


def _decode(vae: VAE, model: Any, latent: Latent) -> Image:
    import torch

    latents = _latent_tensor(vae, latent).to(device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        if vae.is_vq:  # Kandinsky's MoVQ: unscaled latents, decoded without quantizing
            decoded = model.decode(latents, force_not_quantize=True, return_dict=False)[0]
        else:
            latents = latents / model.config.scaling_factor
            shift = getattr(model.config, "shift_factor", None)
            if shift is not None:
                latents = latents + shift
            decoded = model.decode(latents, return_dict=False)[0]
    pixels = (decoded / 2 + 0.5).clamp(0, 1)
    return Image(pixels.cpu().permute(0, 2, 3, 1).float())


def encode(vae: VAE, image: Image) -> Latent:
    import torch

    model = vae.model
    factor = vae.scale_factor
    batch, height, width, _ = image.pixels.shape
    if height % factor or width % factor:
        raise ValueError(
            f"image size {width}x{height} is not a multiple of the VAE's factor {factor}"
        )
    pixels = image.pixels.permute(0, 3, 1, 2).to(device=model.device, dtype=model.dtype) * 2 - 1
    if vae.is_vq:  # as Kandinsky 2.2's img2img: the encoder's latents, unscaled
        with torch.inference_mode():
            latents = model.encode(pixels).latents
        return Latent(samples=latents, width=width, height=height, batch_size=batch)
    with torch.inference_mode():
        posterior = model.encode(pixels).latent_dist
    scaling = model.config.scaling_factor
    shift = float(getattr(model.config, "shift_factor", None) or 0.0)  # SD3/Flux VAEs
    mean = posterior.mean - shift if shift else posterior.mean
    return Latent(
        samples=mean * scaling,
        width=width,
        height=height,
        batch_size=batch,
        posterior=(posterior.mean, posterior.std),
        scaling_factor=scaling,
        shift_factor=shift,
    )


@node("VAEDecode", category="latent")
def vae_decode(ctx: Context, vae: VAE, latent: Latent) -> Image:
    """Turn latents into pictures."""
    ctx.models.use(vae.model)
    return decode(vae, latent)


@node("VAEEncode", category="latent")
def vae_encode(
    ctx: Context, vae: VAE, image: Image, posterior: Literal["sample", "mean"] = "sample"
) -> Latent:
    """Turn pictures into latents (for img2img); Denoise samples the posterior with its seed.

    ``posterior: mean`` keeps only the posterior's mean, as ComfyUI's VAEEncode does (its
    regulariser takes the mode): then Denoise draws nothing before the noise, so a workflow
    imported from ComfyUI gets ComfyUI's noise as well as its latent."""
    ctx.models.use(vae.model)
    latent = encode(vae, image)
    return replace(latent, posterior=None) if posterior == "mean" else latent
