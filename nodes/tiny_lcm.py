"""Tiny latent consistency models and LCM-LoRAs, in the layouts the published ones come in.

``make_tiny_lcm`` writes a ``LatentConsistencyModelPipeline`` folder: the tiny SD 1.x model of
``nodes.tiny`` with its U-Net rebuilt to take a guidance embedding (``time_cond_proj_dim``, as
``SimianLuo/LCM_Dreamshaper_v7`` has) and an ``LCMScheduler``. ``write_tiny_lcm_lora`` writes an
LCM-LoRA for a tiny SD or SDXL folder as ``latent-consistency/lcm-lora-sdv1-5`` and
``lcm-lora-sdxl`` are published: kohya key prefixes (``lora_unet_``) over diffusers module names
(not SGM names, even for SDXL), with an ``.alpha`` per module, on the attention and feed-forward
projections, ``proj_in``/``proj_out``, and the resnets' 3x3 convolutions and time projections.
The weights are random, so pictures are noise; what the tests check is that every layer lands.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import LCMScheduler, UNet2DConditionModel
from safetensors.torch import save_file

from nodes.tiny import _seeded, make_tiny_sd
from nodes.tiny_lora import _random_pair, _weight_shapes

__all__ = ["make_tiny_lcm", "write_tiny_lcm_lora"]

GUIDANCE_WIDTH = 32
"""The tiny U-Net's ``time_cond_proj_dim`` (256 in LCM_Dreamshaper_v7)."""
LCM_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)
"""The modules diffusers' LCM-LoRA training script (``train_lcm_distill_lora_sd*.py``) adapts."""


def make_tiny_lcm(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny LCM-distilled SD 1.x model (guidance-embedding U-Net) as a diffusers folder.

    It loads with ``LatentConsistencyModelPipeline.from_pretrained(path)``; the same ``seed``
    always gives byte-identical files.
    """
    path = Path(path)
    make_tiny_sd(path, seed=seed)
    config = dict(UNet2DConditionModel.load_config(path / "unet"))
    config["time_cond_proj_dim"] = GUIDANCE_WIDTH
    with _seeded(seed):
        UNet2DConditionModel.from_config(config).save_pretrained(
            path / "unet", safe_serialization=True
        )
    scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    LCMScheduler.from_config(scheduler).save_pretrained(path / "scheduler")
    index = json.loads((path / "model_index.json").read_text())
    index["_class_name"] = "LatentConsistencyModelPipeline"
    index["scheduler"] = ["diffusers", "LCMScheduler"]
    (path / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return path


def write_tiny_lcm_lora(
    model_folder: str | Path, out_file: str | Path, *, seed: int = 0, rank: int = 4
) -> Path:
    """Write a random LCM-LoRA for the diffusers model at ``model_folder`` to ``out_file``.

    alpha is 1.5 x rank (the published ones have alpha = rank = 64), so a loader that ignores
    alpha gives another picture. The same arguments always give byte-identical files.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = _weight_shapes(Path(model_folder) / "unet")
    ends = tuple("." + target for target in LCM_LORA_TARGETS)
    state: dict[str, torch.Tensor] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if not name.endswith(ends) or len(shape) not in (2, 4):
            continue
        down, up = _random_pair(shape, rank, gen)
        key = "lora_unet_" + name.replace(".", "_")
        state[f"{key}.lora_down.weight"] = down.contiguous()
        state[f"{key}.lora_up.weight"] = up.contiguous()
        state[f"{key}.alpha"] = torch.tensor(rank * 1.5)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, out, metadata={"format": "pt"})
    return out
