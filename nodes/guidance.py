"""Classifier-free guidance: one batched U-Net call for both prompts, as diffusers does it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from nodeflow import node
from nodes.control import CONTROL, control_run
from nodes.families.unet import takes_class_labels
from nodes.gradient_guidance import with_gradient_terms
from nodes.types import Conditioning, Guider, UNet

if TYPE_CHECKING:
    from nodes.attention import Sampling

__all__ = ["cfg", "predict_noise", "rescale_guidance", "takes_class_labels", "unet_inputs"]


def rescale_guidance(guided: Any, positive: Any, rescale: float) -> Any:
    """Pull the guided prediction's spread back to the positive one's (Lin et al. 2023, 3.4),
    which counters the over-exposure strong guidance causes."""
    dims = list(range(1, positive.ndim))
    std_positive = positive.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_positive / std_guided)
    return rescale * rescaled + (1 - rescale) * guided


def _batch_inputs(guider: Guider, conditionings: list[Conditioning], latents: Any) -> dict:
    return guider.unet.family.model_inputs(guider, conditionings, latents)


def _learned_variance(scheduler: Any) -> bool:
    return getattr(scheduler.config, "variance_type", None) in ("learned", "learned_range")


def unet_inputs(guider: Guider, latents: Any, sampling: Sampling | None = None) -> dict[str, Any]:
    """The U-Net's conditioning arguments for a batch like ``latents``: the same at every step,
    so a sampling loop makes them once (``predict_noise(..., inputs=...)``).

    Controls on the conditionings join as a ``ControlRun`` under ``CONTROL``, told the step by
    ``sampling`` (the loop's, as for every model patch) so they act only in their window.
    """
    unet = guider.unet
    if guider.scale == 1.0 or unet.family.guidance_embedded:
        conditionings = [guider.positive]
    else:
        conditionings = [guider.negative, guider.positive]
    inputs = _batch_inputs(guider, conditionings, latents)
    run = control_run(conditionings, latents, unet.latent_scale, sampling)
    if run is not None:
        if not unet.family.takes_control:
            raise ValueError(f"this model ({unet.family.name}) cannot be steered by a ControlNet")
        inputs[CONTROL] = run
    return inputs


def _scale_input(scheduler: Any, latents: Any, timestep: Any) -> Any:
    """The scheduler's input scaling (Euler's 1/sqrt(sigma^2+1)); flow schedulers have none."""
    scale = getattr(scheduler, "scale_model_input", None)
    return latents if scale is None else scale(latents, timestep)


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

    The guider's gradient terms (classifier or CLIP guidance) are folded in last, into the
    CFG-guided output (``nodes.gradient_guidance``).
    """
    output = _cfg_output(guider, latents, timestep, scheduler, inputs)
    if guider.terms:
        output = with_gradient_terms(guider.terms, output, latents, timestep, scheduler)
    return output


def _cfg_output(
    guider: Guider, latents: Any, timestep: Any, scheduler: Any, inputs: dict[str, Any] | None
) -> Any:
    import torch

    unet = guider.unet
    family = unet.family
    channels = latents.shape[1]
    if inputs is None:
        inputs = unet_inputs(guider, latents)
    if guider.scale == 1.0 or family.guidance_embedded:
        model_input = _scale_input(scheduler, latents, timestep)
        output = family.predict(unet, model_input, timestep, inputs)
        if output.shape[1] == 2 * channels and not _learned_variance(scheduler):
            return output[:, :channels]
        return output
    model_input = _scale_input(scheduler, torch.cat([latents, latents]), timestep)
    output = family.predict(unet, model_input, timestep, inputs)
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
        unet.family.check_conditioning(unet, conditioning, name)
    return Guider(unet=unet, positive=positive, negative=negative, scale=scale, rescale=rescale)
