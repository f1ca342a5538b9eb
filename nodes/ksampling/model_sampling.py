"""The ``FlowShift`` node: ComfyUI's ModelSamplingSD3 / ModelSamplingFlux, a shift set on the model.

In ComfyUI these nodes patch the MODEL, so every KSampler downstream samples over the shifted
sigmas. Here the shift rides on the ``UNet`` value the same way (like LoRA patches, the model
itself is untouched) and ``ComfyScheduler`` uses it unless its own ``shift`` widget is set.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from pydantic import Field

from nodeflow import node
from nodes.types import UNet


@node("FlowShift", category="sampling")
def flow_shift(unet: UNet, shift: Annotated[float, Field(gt=0, le=100)] = 3.0) -> UNet:
    """Shift a rectified-flow model's sigmas toward noise for ComfyScheduler (ComfyUI's
    ModelSamplingSD3 shift; for Flux, ModelSamplingFlux's mu)."""
    if unet.family.comfy_flow_sampling(unet) is None:
        raise ValueError(
            "FlowShift shifts a rectified-flow model (SD3, Flux); this model is a diffusion one"
        )
    return dataclasses.replace(unet, sampling_shift=shift)
