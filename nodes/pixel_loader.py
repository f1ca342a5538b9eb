"""Loading pixel-space models: ``DDPMPipeline``, ``DDIMPipeline`` and
``ConsistencyModelPipeline`` folders, offline, once per process.

A dedicated loader rather than LoadCheckpoint, because what it gives is different: one denoiser
and no text encoder or VAE, so a graph never has unconnected sockets that mean nothing. The
U-Net gets latent scale 1 (EmptyLatent is sized in pixels) and the pixel family
(``nodes.families.pixel``); its default scheduler is the folder's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from nodeflow import Context, Widget, node
from nodeflow.runtime.models import file_identity
from nodes import hf
from nodes.families.pixel import PixelUNet
from nodes.loaders import (
    CHECKPOINT_DIRS,
    DEMO_DDPM,
    Dtype,
    _identity,
    load_once,
    quiet_hub_libraries,
    resolve_checkpoint,
)
from nodes.types import UNet

PIXEL_PIPELINES = ("DDPMPipeline", "DDIMPipeline", "ConsistencyModelPipeline")
"""The diffusers pipelines whose model folders this loader reads."""


def pixel_pipeline(folder: Path) -> str | None:
    """The pixel-space pipeline a diffusers model folder was saved from, else ``None``."""
    index = folder / "model_index.json"
    if not index.is_file():
        return None
    name = json.loads(index.read_text()).get("_class_name")
    return name if name in PIXEL_PIPELINES else None


def load_pixel_folder(folder: Path, dtype: Any) -> UNet:
    """The folder's ``UNet2DModel`` with its scheduler config, as a pixel-space ``UNet``."""
    if pixel_pipeline(folder) is None:
        raise ValueError(
            f"{folder.name} is not a pixel-space model folder (a diffusers folder of "
            f"{', '.join(PIXEL_PIPELINES)}); load latent-space models with LoadCheckpoint"
        )
    quiet_hub_libraries()
    model = hf.diffusers().UNet2DModel.from_pretrained(
        folder, subfolder="unet", torch_dtype=dtype, local_files_only=True
    )
    model.eval().requires_grad_(False)
    if model.config.in_channels != 3:
        raise ValueError(
            f"{folder.name}: a pixel-space U-Net takes 3 channels, not {model.config.in_channels}"
        )
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    return UNet(model, scheduler, latent_scale=1, source=str(folder), family=PixelUNet())


@node("LoadPixelModel", category="loaders", fingerprint=_identity(CHECKPOINT_DIRS))
def load_pixel_model(
    ctx: Context,
    path: Annotated[str, Widget(files="checkpoints")] = DEMO_DDPM,
    dtype: Dtype = "auto",
) -> UNet:
    """Load a pixel-space model (a DDPM, DDIM or consistency-model diffusers folder): a U-Net
    whose output is the picture itself; turn Denoise's result into pictures with LatentToImage."""
    location = resolve_checkpoint(path, ctx.env)
    torch_dtype = ctx.runtime.dtype(dtype)
    key = ("pixel-model", file_identity(location), str(torch_dtype))
    return load_once(ctx, key, location.name, lambda: load_pixel_folder(location, torch_dtype))
