"""Tiny pixel-space models: DDPM/DDIM and consistency-model pipeline folders, built offline.

Each is a diffusers folder with the real layout of its pipeline (``model_index.json``, ``unet/``
holding a ``UNet2DModel``, ``scheduler/``), small enough to build in a second: 32x32 RGB, two
resolution levels, the lower one with self-attention, like ``google/ddpm-cifar10-32`` and
``openai/diffusers-cd_imagenet64_l2`` in shape. The weights are random, so the pictures are
noise until a trained model takes their place; what they test is every code path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
from diffusers import CMStochasticIterativeScheduler, DDIMScheduler, DDPMScheduler, UNet2DModel

from nodes.tiny import _seeded

__all__ = ["make_tiny_consistency", "make_tiny_ddim", "make_tiny_ddpm"]

SIZE = 32
CLASSES = 10


def _tiny_unet(classes: int | None, **extra: Any) -> UNet2DModel:
    return UNet2DModel(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        num_class_embeds=classes,
        **extra,
    )


def _write(path: Path, pipeline: str, unet: UNet2DModel, scheduler: Any) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(path / "unet", safe_serialization=True)
    scheduler.save_pretrained(path / "scheduler")
    index = {
        "_class_name": pipeline,
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "unet": ["diffusers", "UNet2DModel"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return path


def make_tiny_ddpm(path: str | Path, *, seed: int = 0, classes: int | None = None) -> Path:
    """A ``DDPMPipeline`` folder (linear betas, 1000 steps, epsilon), unconditional unless
    ``classes`` is given."""
    with _seeded(seed):
        unet = _tiny_unet(classes)
    return _write(Path(path), "DDPMPipeline", unet, DDPMScheduler(num_train_timesteps=1000))


def make_tiny_ddim(path: str | Path, *, seed: int = 0) -> Path:
    """A ``DDIMPipeline`` folder: the same U-Net shape, a DDIM scheduler config."""
    with _seeded(seed):
        unet = _tiny_unet(None)
    return _write(Path(path), "DDIMPipeline", unet, DDIMScheduler(num_train_timesteps=1000))


def make_tiny_consistency(
    path: str | Path, *, seed: int = 0, classes: int | None = CLASSES
) -> Path:
    """A class-conditional ``ConsistencyModelPipeline`` folder: the consistency models' scale-shift
    resnets and the ``CMStochasticIterativeScheduler`` (40 discretisation steps, sigma from 0.002
    to 80), as in the released ImageNet 64 models."""
    with _seeded(seed):
        unet = _tiny_unet(classes, resnet_time_scale_shift="scale_shift")
    scheduler = CMStochasticIterativeScheduler(
        num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0
    )
    return _write(Path(path), "ConsistencyModelPipeline", unet, scheduler)
