"""A real-size Stable Diffusion 1.5 of random weights, as a diffusers folder, built offline.

The GPU check (``bench_gpu.py``) needs the real architecture's cost (the 860M U-Net, CLIP-L, the
SD VAE) and nothing downloaded; the shapes come from the shipped configs (``nodes/configs/sd1``),
the weights from the libraries' own initialisation. ``compare_comfyui.py`` builds the same model
as an original-layout single file for ComfyUI; this is the diffusers-folder form that both
nodeflow's loader and diffusers' ``StableDiffusionPipeline`` read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_sd15(folder: Path, device: Any) -> Path:
    """A real-size SD 1.5 diffusers folder of random weights, stored in fp16.

    The modules are initialised on ``device`` (seconds on a GPU instead of a minute on a CPU;
    the two draw different weights from the same seeds, which no check compares), with the
    libraries' own initialisation, so norms start at one as in a trained model."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.clip_vocab import write_clip_tokenizer
    from nodes.tiny import family_config

    folder.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(folder / "tokenizer")
    scheduler = family_config("sd1", "scheduler")
    getattr(diffusers, scheduler["_class_name"]).from_config(scheduler).save_pretrained(
        folder / "scheduler"
    )
    makers: dict[str, Callable[[], Any]] = {
        "unet": lambda: UNet2DConditionModel.from_config(family_config("sd1", "unet")),
        "vae": lambda: AutoencoderKL.from_config(family_config("sd1", "vae")),
        "text_encoder": lambda: CLIPTextModel(
            CLIPTextConfig(**family_config("sd1", "text_encoder"))
        ),
    }
    for index, (name, make) in enumerate(makers.items()):
        torch.manual_seed(index)
        with torch.device(device):
            model = make()
        model.half().cpu().save_pretrained(folder / name)
        del model
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", scheduler["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def component_bytes(folder: Path, dtype: Any) -> dict[str, int]:
    """Bytes each model will take in ``dtype``, read from the safetensors headers (no load)."""
    from safetensors import safe_open

    sizes = {}
    for name in ("unet", "vae", "text_encoder"):
        total = 0
        for file in (folder / name).glob("*.safetensors"):
            with safe_open(str(file), "pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    total += math.prod(f.get_slice(key).get_shape()) * dtype.itemsize
        sizes[name] = total
    return sizes
