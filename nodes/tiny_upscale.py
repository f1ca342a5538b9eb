"""A tiny, random Stable Diffusion x4 upscaler, written as a real diffusers folder, offline.

The real model (``stabilityai/stable-diffusion-x4-upscaler``) is an SD 2.x-style U-Net whose input
is the 4 latent channels plus the 3 channels of the noised low-resolution picture, told the noise
level through a class embedding (``num_class_embeds``); its VAE decodes a latent at the
low-resolution size to a picture 4 times larger (three levels) with a scaling factor of 0.08333;
the picture is noised by its own linear DDPM schedule (``low_res_scheduler``) up to
``max_noise_level`` 350. This tiny one keeps every one of those facts and the real schedulers'
configs, with a few thousand times fewer weights.
"""

from __future__ import annotations

from pathlib import Path

import diffusers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from nodes.clip_vocab import write_clip_tokenizer
from nodes.tiny import TEXT_HIDDEN_SIZE, _model_index, _seeded, _text_config, _write_json

__all__ = ["LOW_RES_SCHEDULER", "SCHEDULER", "make_tiny_x4_upscaler"]

SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
"""The real upscaler's sampling schedule (v-prediction)."""
LOW_RES_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "variance_type": "fixed_small",
}
"""The real upscaler's schedule for noising the low-resolution picture."""
MAX_NOISE_LEVEL = 350


def make_tiny_x4_upscaler(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny x4 upscaler folder that ``StableDiffusionUpscalePipeline`` loads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(path / "tokenizer", pad_token="!")
    for name, config in (("scheduler", SCHEDULER), ("low_res_scheduler", LOW_RES_SCHEDULER)):
        getattr(diffusers, config["_class_name"]).from_config(config).save_pretrained(path / name)
    with _seeded(seed):
        UNet2DConditionModel(
            sample_size=32,
            in_channels=7,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN_SIZE,
            attention_head_dim=8,
            use_linear_projection=True,
            num_class_embeds=1000,
        ).save_pretrained(path / "unet", safe_serialization=True)
    with _seeded(seed):
        AutoencoderKL(
            block_out_channels=(32, 32, 64),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            latent_channels=4,
            scaling_factor=0.08333,
            sample_size=64,
        ).save_pretrained(path / "vae", safe_serialization=True)
    with _seeded(seed):
        CLIPTextModel(_text_config(openclip=True, pad_token="!")).save_pretrained(
            path / "text_encoder"
        )
    components = {
        "low_res_scheduler": ["diffusers", "DDPMScheduler"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "max_noise_level": MAX_NOISE_LEVEL,
    }
    index = _model_index("StableDiffusionUpscalePipeline", components)
    for optional in ("image_encoder", "requires_safety_checker"):
        index.pop(optional, None)
    _write_json(path / "model_index.json", index)
    return path
