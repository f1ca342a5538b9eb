"""ControlNets for tests and the demo, made from a U-Net the way ControlNets are trained from one.

``ControlNetModel.from_unet`` copies the U-Net's encoder and zero-initialises the convolutions
that feed the U-Net, so a fresh ControlNet changes nothing: right for the built-in demo ControlNet
(an honest untrained one), useless for a test, which must see the control act. Test ControlNets
therefore get seeded random weights in those zero parts too.

The control image encoder downsamples to the latent size, so its depth follows the VAE's scale
(2 for the tiny test models, 4 for the demo model, 8 for real SD).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nodes.controlnet_layout import controlnet_to_original
from nodes.tiny import _seeded

__all__ = ["make_demo_controlnet", "make_tiny_controlnet", "write_controlnet_file"]

_ZERO_INITIALISED = (
    "controlnet_down_blocks",
    "controlnet_mid_block",
    "controlnet_cond_embedding.conv_out",
)


def _embedding_channels(latent_scale: int) -> tuple[int, ...]:
    downsamples = max(latent_scale.bit_length() - 1, 0)
    return tuple(8 * 2**i for i in range(downsamples + 1))


def controlnet_from_unet(unet: Any, latent_scale: int, *, seed: int, random_zeros: bool) -> Any:
    """A ControlNet copied from ``unet``; ``random_zeros`` fills the zero-initialised parts with
    seeded noise so that the control visibly acts."""
    from diffusers import ControlNetModel

    with _seeded(seed):
        net = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=_embedding_channels(latent_scale)
        )
        if random_zeros:
            for name, parameter in net.named_parameters():
                if name.startswith(_ZERO_INITIALISED):
                    parameter.data = torch.randn_like(parameter) * 0.2
    return net.eval()


def make_tiny_controlnet(model_folder: str | Path, path: str | Path, *, seed: int = 0) -> Path:
    """A random tiny ControlNet for the model folder's U-Net, saved as a diffusers folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    model_folder, path = Path(model_folder), Path(path)
    unet = UNet2DConditionModel.from_pretrained(model_folder / "unet", local_files_only=True)
    vae = AutoencoderKL.load_config(model_folder / "vae")
    scale = 2 ** (len(vae["block_out_channels"]) - 1)
    net = controlnet_from_unet(unet, scale, seed=seed, random_zeros=True)
    net.save_pretrained(path, safe_serialization=True)
    return path


def write_controlnet_file(folder: str | Path, file: str | Path, *, original: bool = True) -> Path:
    """A ControlNet folder's weights as one ``.safetensors`` file, in the original layout
    (``control_model.`` keys, as lllyasviel's files) or in diffusers' layout."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_pretrained(folder, local_files_only=True)
    state = {key: value.contiguous() for key, value in net.state_dict().items()}
    if original:
        state = controlnet_to_original(state)
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(file))
    return Path(file)


def make_demo_controlnet(path: Path) -> Path:
    """The built-in ControlNet: the demo U-Net's encoder, untrained (zero convolutions), made once
    (atomically) in ``path``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from nodes.loaders import DEMO, demo_model

    if (path / "config.json").exists():
        return path
    model = demo_model(DEMO)
    unet = UNet2DConditionModel.from_pretrained(model / "unet", local_files_only=True)
    vae = AutoencoderKL.load_config(model / "vae")
    scale = 2 ** (len(vae["block_out_channels"]) - 1)
    net = controlnet_from_unet(unet, scale, seed=0, random_zeros=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".making-", dir=path.parent))
    net.save_pretrained(staging, safe_serialization=True)
    try:
        staging.rename(path)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return path
