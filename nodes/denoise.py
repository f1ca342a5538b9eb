"""The sampling loop: seeded noise in, denoised latents out, diffusers' numerics throughout.

Noise is drawn as diffusers draws it (one CPU ``torch.Generator`` seeded with the seed, through
``randn_tensor``; the same generator then feeds any posterior sample and each stochastic step),
so a seed gives the same picture here and in a diffusers pipeline with the same components.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, NamedTuple

from pydantic import Field

from nodeflow import Context, Widget, node
from nodes.attention import ATTENTION_RECORD, Sampling
from nodes.families.concat import drawn
from nodes.flow_schedulers import timestep_options
from nodes.guidance import predict_noise, unet_inputs
from nodes.lora import patched
from nodes.noise_mask import keep_unmasked
from nodes.noising import noised
from nodes.placement import model_device, model_dtype
from nodes.preview import latent_preview
from nodes.types import AttentionStore, Guider, Latent, Scheduler
from nodes.unclip import with_class_labels

Seed = Annotated[int, Field(ge=0, le=2**64 - 1), Widget(seed=True)]


def _step_kwargs(scheduler: Any, generator: Any, eta: float) -> dict[str, Any]:
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _timesteps(
    scheduler: Any, recipe: Scheduler, latent_size: tuple[int, int], strength: float, device: Any
) -> Any:
    """The timesteps to run (the recipe's chosen ones, else ``steps`` evenly spaced); below
    strength 1 only the last ``strength`` share (img2img).

    ``latent_size`` (height, width) is what a resolution-dependent shift reads (Flux)."""
    steps = recipe.steps
    if recipe.timesteps:
        scheduler.set_timesteps(timesteps=list(recipe.timesteps), device=device)
        steps = len(scheduler.timesteps) // scheduler.order
    else:
        scheduler.set_timesteps(steps, device=device, **timestep_options(recipe, latent_size))
    if strength >= 1.0:
        return scheduler.timesteps
    start = max(steps - min(int(steps * strength), steps), 0) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def _content(latent: Latent, generator: Any, device: Any, dtype: Any) -> Any:
    """The latent's picture: a posterior sample drawn with the run's generator (as diffusers'
    img2img and inpainting draw it), or the given samples."""
    from diffusers.utils.torch_utils import randn_tensor

    if latent.posterior is not None:
        mean, std = latent.posterior
        sample = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        init = mean + std * sample
        if latent.shift_factor:  # SD3 and Flux VAEs
            init = init - latent.shift_factor
        init = latent.scaling_factor * init
    elif latent.samples is not None:
        init = latent.samples
    else:
        raise ValueError(
            "img2img (strength below 1) needs a latent with content, e.g. from VAEEncode"
        )
    return init.to(device=device, dtype=dtype)


def _initial_latents(
    latent: Latent, guider: Guider, scheduler: Any, timesteps: Any, strength: float, generator: Any
) -> tuple[Any, Any, Any]:
    """(initial latents, the latent's picture or None, the noise drawn).

    The picture is drawn first when sampling starts from it (strength < 1) or keeps part of it
    (a noise mask), then the noise: diffusers' order in img2img and inpainting."""
    from diffusers.utils.torch_utils import randn_tensor

    unet = guider.unet
    device, dtype = model_device(unet.model), model_dtype(unet.model)
    if strength < 1.0 and len(timesteps) == 0:
        raise ValueError(f"strength {strength} leaves no steps to run; raise strength or steps")
    keeps = strength < 1.0 or latent.noise_mask is not None
    init = _content(latent, generator, device, dtype) if keeps else None
    if strength >= 1.0:
        factor = unet.latent_scale
        if latent.width % factor or latent.height % factor:
            raise ValueError(
                f"{latent.width}x{latent.height} is not a multiple of "
                f"this model's latent scale {factor}"
            )
        shape = (
            latent.batch_size,
            unet.latent_channels,
            latent.height // factor,
            latent.width // factor,
        )
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        return noise * getattr(scheduler, "init_noise_sigma", 1.0), init, noise  # flow: none
    noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
    return noised(scheduler, init, noise, timesteps[:1].repeat(init.shape[0])), init, noise


def _latent_size(latent: Latent, guider: Guider) -> tuple[int, int]:
    """(height, width) of the latents Denoise will sample."""
    if latent.samples is not None:
        return int(latent.samples.shape[-2]), int(latent.samples.shape[-1])
    factor = guider.unet.latent_scale
    return latent.height // factor, latent.width // factor


def _prompt_rows(guider: Guider) -> int:
    embeds = guider.positive.embeds
    return 1 if embeds is None else int(embeds.shape[0])


def sample(
    guider: Guider,
    scheduler_recipe: Scheduler,
    latent: Latent,
    seed: int,
    strength: float = 1.0,
    ctx: Context | None = None,
    sampling: Sampling | None = None,
) -> Any:
    """Denoised latents for ``latent`` under ``guider``.

    A positive conditioning of several prompts over a latent of one picture starts every prompt
    from the same noise (prompt-to-prompt's source and edit are denoised together that way).
    ``sampling`` is what the U-Net's attention patches are told and hand results back in
    (``nodes.attention.Sampling``); one is made when not given.
    """
    import torch

    scheduler = scheduler_recipe.create()
    device = model_device(guider.unet.model)
    generator = torch.Generator("cpu").manual_seed(seed)
    latent_size = _latent_size(latent, guider)
    timesteps = _timesteps(scheduler, scheduler_recipe, latent_size, strength, device)
    guider = with_class_labels(guider, generator)  # Stable unCLIP: noise drawn before latents
    guider = guider.unet.family.before_sampling(guider, generator)
    latents, known, noise = _initial_latents(
        latent, guider, scheduler, timesteps, strength, generator
    )
    guider = drawn(guider, generator)  # conditioning channels sampled after the noise
    prompts = _prompt_rows(guider)
    if latents.shape[0] == 1 and prompts > 1:
        latents = latents.repeat(prompts, *([1] * (latents.ndim - 1)))
    step_kwargs = _step_kwargs(scheduler, generator, scheduler_recipe.eta)
    total = len(timesteps)
    sampling = sampling if sampling is not None else Sampling()
    sampling.steps, sampling.pictures = total, int(latents.shape[0])
    one_pass = guider.scale == 1.0 or guider.unet.family.guidance_embedded
    sampling.halves = 1 if one_pass else 2
    sampling.latent_size = (int(latents.shape[-2]), int(latents.shape[-1]))
    keep = keep_unmasked(latent, scheduler, timesteps, known, noise)
    if keep is not None:
        sampling.latent_hooks.append(keep)
    unet = guider.unet
    with torch.inference_mode(), patched(unet.model, unet.patches, "unet", sampling):
        # the conditioning is the same at every step; ``sampling`` tells controls the step
        inputs = unet_inputs(guider, latents, sampling)
        for index, timestep in enumerate(timesteps):
            sampling.step = index
            if ctx is not None:
                ctx.check_interrupted()
            noise_pred = predict_noise(guider, latents, timestep, scheduler, inputs)
            result = scheduler.step(noise_pred, timestep, latents, **step_kwargs)
            latents = sampling.after_step(result.prev_sample)
            if ctx is not None:
                ctx.progress(index + 1, total)  # also where an interrupt stops the loop
            if ctx is not None and ctx.wants_previews:
                preview = getattr(result, "pred_original_sample", None)
                ctx.preview(latent_preview(preview if preview is not None else latents), index + 1)
    return latents


class DenoiseOutputs(NamedTuple):
    latent: Latent
    attention: AttentionStore
    """The cross-attention maps a RecordAttention patch recorded (empty without one)."""


@node("Denoise", category="sampling", aliases=("KSampler", "KSamplerAdvanced", "SamplerCustom"))
def denoise(
    ctx: Context,
    guider: Guider,
    scheduler: Scheduler,
    latent: Latent,
    seed: Seed = 0,
    strength: Annotated[float, Field(ge=0, le=1)] = 1.0,
) -> DenoiseOutputs:
    """Denoise from seeded noise (strength 1) or from the given latent (img2img, strength < 1).

    ``attention`` holds the cross-attention maps when the U-Net comes through RecordAttention;
    otherwise it is empty and recording cost nothing.
    """
    ctx.models.use(*guider.models)
    sampling = Sampling()
    latents = sample(guider, scheduler, latent, seed, strength, ctx, sampling)
    attention = sampling.records.get(ATTENTION_RECORD, AttentionStore())
    return DenoiseOutputs(
        latent=Latent(
            samples=latents, width=latent.width, height=latent.height, batch_size=latents.shape[0]
        ),
        attention=attention,
    )
