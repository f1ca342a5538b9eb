"""What TrainLoRA and TrainUNet do alike around the loop: prior pictures, events, the grid.

A training node checks its names, draws (or reads) DreamBooth's class pictures when it has class
prompts, runs ``nodes.training.trainer.Training`` with the node's progress, interrupt and preview
callbacks, and hands back the labelled grid of the previews. Only what is trained and what is
returned differ between the nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodeflow import Context, Environment
from nodes.paths import contained
from nodes.training.dataset import Dataset
from nodes.training.trainer import Checkpoint, Training, TrainSettings
from nodes.training.weights import Trained
from nodes.types import VAE, Image, TextEncoder, UNet

STATE_SUFFIX = ".state"


def checkpoint_paths(name: str, env: Environment, kind: str) -> Checkpoint:
    """``<kind>/<name>.safetensors`` and ``<kind>/<name>.state``, inside the models folder of
    ``kind`` (``loras``, ``unet``); names that leave it are refused."""
    if not name or Path(name).is_absolute() or name.endswith(".safetensors"):
        raise ValueError(f"name {name!r}: a plain name, e.g. 'my-style' (saved as .safetensors)")
    folder = env.model_dirs(kind)[0]
    file = contained(folder, name + ".safetensors")
    return Checkpoint(file=file, state_dir=file.with_name(file.stem + STATE_SUFFIX))


def preview_prompts_of(text: str, dataset: Dataset) -> tuple[str, ...]:
    """The preview prompts: one a line, or the dataset's first four distinct captions."""
    given = tuple(line.strip() for line in text.splitlines() if line.strip())
    if given:
        return given
    return tuple(dict.fromkeys(dataset.captions))[:4]


def class_prior(
    ctx: Context, unet: UNet, text_encoder: TextEncoder, vae: VAE, dataset: Dataset,
    class_prompts: str, class_images: int, seed: int, steps: int,
) -> Dataset | None:  # fmt: skip
    """DreamBooth's class pictures (None without class prompts), drawn by the base model with
    progress events, or read from the cache an earlier run left."""
    from nodes.training.class_prior import CACHE_KIND, parse_class_prompts, prior_pictures

    prompts = parse_class_prompts(class_prompts)
    if not prompts:
        return None
    if class_images < 1:
        raise ValueError("class_images: prior preservation needs at least one class picture")

    def made(index: int, count: int) -> None:
        ctx.progress(index, count, {"class_images": float(index)})

    folder = ctx.env.model_dirs(CACHE_KIND)[0]
    return prior_pictures(unet, text_encoder, vae, prompts, class_images, dataset.size, seed,
                          steps, folder, made)  # fmt: skip


def run_training(
    ctx: Context,
    unet: UNet,
    text_encoder: TextEncoder,
    vae: VAE,
    dataset: Dataset,
    settings: TrainSettings,
    checkpoint: Checkpoint,
    make_trained: Callable[[], Trained],
    prior: Dataset | None,
    *,
    save_every: int,
    preview_every: int,
    preview_text: str,
    preview_steps: int,
    resume: bool,
) -> tuple[Training, Image]:
    """Run the loop with the node's events: loss and lr as progress metrics, preview rows as
    previews; the finished run and its labelled grid."""
    from nodes.training.previews import row_picture

    ctx.models.use(unet.model, text_encoder.model, vae.model)
    prompts = preview_prompts_of(preview_text, dataset)

    def report(step: int, total: int, loss: float, lr: float) -> None:
        ctx.progress(step, total, {"loss": loss, "lr": lr})

    def preview(step: int, row: Any) -> None:
        ctx.preview(row_picture(row), step)

    training = Training(
        unet, text_encoder, vae, dataset, settings, checkpoint, make_trained, prior,
        save_every=save_every, preview_every=preview_every, prompts=prompts,
        preview_seed=settings.seed, sampling_steps=preview_steps, resume=resume, report=report,
        preview=preview,
    )  # fmt: skip
    training.run()
    return training, grid_image(training, prompts)


def grid_image(training: Training, prompts: tuple[str, ...]) -> Image:
    """The labelled grid as an ``Image`` (a blank 8x8 picture when nothing was previewed)."""
    import numpy as np
    import torch

    from nodes.training.previews import labelled_grid

    if not training.preview_rows:
        return Image(torch.ones(1, 8, 8, 3))
    rows = torch.stack(training.preview_rows)
    picture = labelled_grid(rows, training.preview_steps, prompts)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
    return Image(pixels[None])
