"""Model families behind the ``UNet`` socket.

A family adapter is what lets Denoise, CFG and the samplers stay free of family names (STYLE.md,
"families live behind the UNet socket"): it turns conditionings into the model's keyword inputs,
calls the model, and says what its latents look like. SD 1.x/2.x/XL, unCLIP decoders and
Kandinsky 2.2 decoders are all ``UNet2DConditionModel`` and share ``StableDiffusionUNet``; families
whose model is called differently (a transformer over patches, a pixel-space U-Net) get their own
adapter, chosen by the loader that builds the model and carried on the ``UNet`` value.
"""

from __future__ import annotations

from nodes.families.base import Family
from nodes.families.flux import FluxTransformer
from nodes.families.lcm import LatentConsistencyUNet
from nodes.families.pixel import PixelUNet
from nodes.families.sd3 import SD3Transformer
from nodes.families.unet import StableDiffusionUNet

__all__ = [
    "Family",
    "FluxTransformer",
    "LatentConsistencyUNet",
    "PixelUNet",
    "SD3Transformer",
    "StableDiffusionUNet",
]
