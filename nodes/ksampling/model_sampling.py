"""Model sampling set on the model, as ComfyUI's ModelSampling* nodes patch its MODEL.

In ComfyUI these nodes patch the MODEL, so every KSampler downstream samples with them. Here
they ride on the ``UNet`` value the same way (like LoRA patches, the model itself is untouched):

- ``FlowShift`` (ModelSamplingSD3 / ModelSamplingFlux): a rectified-flow model's sigma shift,
  which ``ComfyScheduler`` uses unless its own ``shift`` widget is set;
- ``ModelSamplingDiscrete``: a diffusion model's prediction type and zero terminal SNR, written
  into the model's scheduler config, which is what both the ``Scheduler`` node (diffusers'
  schedulers) and ``ComfyScheduler`` build their noise schedule and model output from.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field

from nodeflow import node
from nodes.single_file import ZERO_SNR_SAMPLING
from nodes.types import UNet

DiscreteSampling = Literal["eps", "v_prediction"]
PREDICTIONS = {"eps": "epsilon", "v_prediction": "v_prediction"}
"""ComfyUI's ``sampling`` names -> diffusers' ``prediction_type``."""
COMFY_ONLY_SAMPLING = ("lcm", "x0", "img_to_img")
"""ModelSamplingDiscrete's other choices in ComfyUI, which have no equivalent here."""


@node("FlowShift", category="sampling")
def flow_shift(unet: UNet, shift: Annotated[float, Field(gt=0, le=100)] = 3.0) -> UNet:
    """Shift a rectified-flow model's sigmas toward noise for ComfyScheduler (ComfyUI's
    ModelSamplingSD3 shift; for Flux, ModelSamplingFlux's mu)."""
    if unet.family.comfy_flow_sampling(unet) is None:
        raise ValueError(
            "FlowShift shifts a rectified-flow model (SD3, Flux); this model is a diffusion one"
        )
    return dataclasses.replace(unet, sampling_shift=shift)


@node("ModelSamplingDiscrete", category="sampling")
def model_sampling_discrete(
    unet: UNet, sampling: DiscreteSampling = "eps", zsnr: bool = False
) -> UNet:
    """Say what a diffusion model predicts (``eps``: the noise; ``v_prediction``: v) and whether
    it was trained with zero terminal SNR (``zsnr``: its noise schedule rescaled so the last
    timestep is pure noise), whatever its scheduler config says (ComfyUI's ModelSamplingDiscrete).

    Both Scheduler and ComfyScheduler sample with it; with ``zsnr`` on, the Scheduler node
    refuses pndm, lms, heun and consistency, which have no zero-terminal-SNR schedule, and its
    timesteps are spaced ``trailing``, so that they too start at pure noise (timestep 999), as
    ComfyScheduler's schedules do."""
    if unet.family.comfy_flow_sampling(unet) is not None:
        raise ValueError(
            "ModelSamplingDiscrete sets a diffusion model's sampling; this model is a "
            "rectified-flow one (SD3, Flux): use FlowShift for its shift"
        )
    config = unet.scheduler_config | {
        "prediction_type": PREDICTIONS[sampling],
        "rescale_betas_zero_snr": False,
    }
    if zsnr:  # Lin et al.: the rescaled betas, sampled from the last timestep (pure noise)
        config |= ZERO_SNR_SAMPLING
    return dataclasses.replace(unet, scheduler_config=config)
