"""Tiny inpainting models: the tiny SD 1.x or SDXL model with a 9-channel U-Net.

An inpainting checkpoint differs from its base model only in the U-Net's first convolution: it
takes 9 channels (the noisy latents, the mask, the masked picture's latents), as
``stable-diffusion-inpainting`` and ``stable-diffusion-xl-1.0-inpainting-0.1`` do. The folders
load with ``StableDiffusionInpaintPipeline`` / ``StableDiffusionXLInpaintPipeline`` and with
nodeflow's LoadCheckpoint, and ``nodes.tiny.write_single_file`` writes them as single files.
"""

from __future__ import annotations

import json
from pathlib import Path

from nodes.tiny import _seeded, _tiny_unet, make_tiny_sd, make_tiny_sdxl

INPAINT_PIPELINES = {
    "sd1": "StableDiffusionInpaintPipeline",
    "sdxl": "StableDiffusionXLInpaintPipeline",
}


def make_tiny_inpaint(path: str | Path, *, family: str = "sd1", seed: int = 0) -> Path:
    """Write a tiny inpainting model of ``family`` ("sd1" or "sdxl") as a diffusers folder."""
    from diffusers import UNet2DConditionModel

    path = Path(path)
    {"sd1": make_tiny_sd, "sdxl": make_tiny_sdxl}[family](path, seed=seed)
    with _seeded(seed):
        config = dict(_tiny_unet(family).config)
    config["in_channels"] = 9
    with _seeded(seed):
        unet = UNet2DConditionModel.from_config(config)
    unet.save_pretrained(path / "unet", safe_serialization=True)
    index_path = path / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = INPAINT_PIPELINES[family]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return path
