"""What the grow-trainer tests share: a micro v1 demo folder to grow, the arguments of a short
micro run, and a grown folder's weights, so the resume and lever tests run the same small run."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from nodes.demo.train_demo import ModelSizes, build_models, save_diffusers_folder


def write_micro_v1(folder: Path) -> Path:
    """A micro demo model with no attention at level 0, as a diffusers folder (fp32)."""
    models = build_models(ModelSizes.micro(), seed=4)
    models.vae.register_to_config(scaling_factor=0.5)
    save_diffusers_folder(models, folder, half=False)
    return folder


def grow_args(base: Path, out: Path, *extra: str) -> list[str]:
    """``train_grow`` arguments for a 4-step micro run that saves and evaluates nothing extra."""
    return ["--grow-from", str(base), "--out", str(out), "--steps", "4", "--batch-size", "2",
            "--warmup", "2", "--save-every", "100", "--log-every", "100", "--eval-every", "0",
            "--eval-samples", "0", "--eval-positioned", "0", "--threads", "1", "--device", "cpu",
            "--position-share", "0.5", "--fp32", *extra]  # fmt: skip


def grown_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The U-Net's and the text encoder's tensors of a written folder, in one mapping."""
    tensors = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    return tensors | {f"te.{k}": v for k, v in
                      load_file(folder / "text_encoder" / "model.safetensors").items()}  # fmt: skip
