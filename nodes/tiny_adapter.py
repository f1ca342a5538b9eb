"""T2I-Adapters for tests, and a tiny SD 1.x model whose U-Net has SD's block order.

An adapter's features are added at the end of each U-Net down block; SD 1.x/2.x's last down block
is the one without attention or downsampling, so its adapters (``full_adapter``) halve the size
from one feature to the next. The shared tiny U-Net (``nodes.tiny``) has SDXL's order (the block
without attention first), which only SDXL's adapter type (``full_adapter_xl``) fits; the SD 1.x
tests therefore use ``make_tiny_sd_adapter_model``: the same tiny model with a U-Net of SD's order.
Adapters downscale the control image to the latent size by pixel unshuffling: by the VAE's scale
(2 for the tiny models) for SD, twice that for SDXL, as the real ones do (8 and 16).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from nodes.tiny import _seeded, make_tiny_sd

__all__ = ["make_tiny_adapter", "make_tiny_sd_adapter_model", "write_adapter_file"]

LATENT_SCALE = 2
"""The tiny models' VAE scale."""


def make_tiny_sd_adapter_model(path: str | Path, *, seed: int = 0) -> Path:
    """The tiny SD 1.x model (``make_tiny_sd``) with a U-Net in SD's block order: attention
    blocks first, the plain block last."""
    from diffusers import UNet2DConditionModel

    path = make_tiny_sd(path, seed=seed)
    config = dict(UNet2DConditionModel.load_config(path / "unet"))
    config["down_block_types"] = ["CrossAttnDownBlock2D", "DownBlock2D"]
    config["up_block_types"] = ["UpBlock2D", "CrossAttnUpBlock2D"]
    with _seeded(seed):
        unet = UNet2DConditionModel.from_config(config)
    unet.save_pretrained(path / "unet", safe_serialization=True)
    return path


def make_tiny_adapter(
    path: str | Path, *, family: str = "sd1", seed: int = 0, in_channels: int = 3
) -> Path:
    """A random T2I-Adapter for the tiny models' U-Net (channels 32, 64), saved as a diffusers
    folder: ``full_adapter`` for ``sd1``, ``full_adapter_xl`` for ``sdxl``."""
    from diffusers import T2IAdapter

    xl = family == "sdxl"
    with _seeded(seed):
        adapter = T2IAdapter(
            in_channels=in_channels,
            channels=[32, 64],
            num_res_blocks=2,
            downscale_factor=LATENT_SCALE * (2 if xl else 1),
            adapter_type="full_adapter_xl" if xl else "full_adapter",
        )
    adapter.eval().save_pretrained(path, safe_serialization=True)
    return Path(path)


def diffusers_to_original(state: dict[str, Any], per_level: int) -> dict[str, Any]:
    """diffusers' adapter keys in TencentARC's layout (``body.K`` numbered over all levels)."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("adapter.")
        if match := re.match(r"body\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            level, block, rest = int(match.group(1)), int(match.group(2)), match.group(3)
            key = f"body.{level * per_level + block}.{rest}"
        elif match := re.match(r"body\.(\d+)\.in_conv\.(.*)", key):
            key = f"body.{int(match.group(1)) * per_level}.in_conv.{match.group(2)}"
        renamed[key] = value
    return renamed


def write_adapter_file(folder: str | Path, file: str | Path, *, original: bool = True) -> Path:
    """An adapter folder's weights as one ``.safetensors`` file, in TencentARC's layout or in
    diffusers' (``adapter.`` keys)."""
    from diffusers import T2IAdapter

    adapter = T2IAdapter.from_pretrained(folder, local_files_only=True)
    state = {key: value.contiguous() for key, value in adapter.state_dict().items()}
    if original:
        state = diffusers_to_original(state, int(adapter.config.num_res_blocks))
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(file))
    return Path(file)
