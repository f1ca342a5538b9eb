"""Training as nodes: datasets in, a LoRA out that the rest of the workflow uses at once.

``TrainLoRA`` writes ``models/loras/<name>.safetensors`` as it goes (and its resumable state
beside it, ``<name>.state/``), then hands downstream the U-Net and text encoder with that very
file applied by ``nodes.lora.apply_lora``, the function LoadLoRA uses: a trained LoRA and the
same LoRA loaded later are one thing. Loss and learning rate ride on the progress events;
previews of fixed prompts go out as the node's previews and come back as a labelled grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import Field

from nodeflow import Context, Environment, Widget, node
from nodes.lora import apply_lora, read_lora_file
from nodes.paths import contained
from nodes.training.dataset import Dataset
from nodes.training.folder import folder_fingerprint, read_image_folder
from nodes.types import VAE, Image, TextEncoder, UNet

if TYPE_CHECKING:
    from nodes.training.trainer import Checkpoint, LoraTraining

Seed = Annotated[int, Field(ge=0, le=2**63 - 1), Widget(seed=True)]
STATE_SUFFIX = ".state"


def _dataset_folder(path: str, env: Environment) -> Path:
    """A folder inside the input directory; names that leave it are refused."""
    if Path(path).is_absolute():
        raise ValueError(f"path {path!r}: give a folder inside the input directory")
    return contained(env.input_dir, path)


def _folder_fingerprint(values: Mapping[str, Any], env: Environment) -> Any:
    return folder_fingerprint(_dataset_folder(values["path"], env))


@node("LoadImageDataset", category="training", fingerprint=_folder_fingerprint)
def load_image_dataset(
    ctx: Context,
    path: str,
    size: Annotated[int, Field(ge=8, le=4096)] = 512,
) -> Dataset:
    """A folder of pictures with captions (a .txt beside each, or a metadata.jsonl with
    file_name/text); every broken picture or missing caption is reported at once, by file name,
    before anything trains. Pictures are centre-cropped and resized to ``size``."""
    return read_image_folder(_dataset_folder(path, ctx.env), size)


@node("DemoSceneDataset", category="training")
def demo_scene_dataset(
    style: Literal["plain", "outlined"] = "outlined",
    size: Annotated[int, Field(ge=1, le=100_000)] = 1000,
    seed: Seed = 0,
) -> Dataset:
    """``size`` scenes of the demo world (nodes.demo.dataset's training split) in the given
    style, with their exact captions: the demo model's own data, or its outlined variant."""
    import random

    from nodes.demo.dataset import IMAGE_SIZE, caption, render, sample_scene

    rng = random.Random(seed)
    scenes = [sample_scene(rng, split="train", style=style) for _ in range(size)]
    return Dataset(
        pictures=tuple(render(scene) for scene in scenes),
        captions=tuple(caption(scene) for scene in scenes),
        size=IMAGE_SIZE,
        identity=f"demo:{style}:{size}:{seed}",
    )


class TrainLoraOutputs(NamedTuple):
    unet: UNet
    text_encoder: TextEncoder
    grid: Image
    """The preview prompts (columns) at every preview step (rows), labelled."""


def lora_paths(name: str, env: Environment) -> Checkpoint:
    """``<loras>/<name>.safetensors`` and ``<loras>/<name>.state``, inside the loras folder."""
    from nodes.training.trainer import Checkpoint

    if not name or Path(name).is_absolute() or name.endswith(".safetensors"):
        raise ValueError(f"name {name!r}: a plain name, e.g. 'my-style' (saved as .safetensors)")
    folder = env.model_dirs("loras")[0]
    file = contained(folder, name + ".safetensors")
    return Checkpoint(lora_file=file, state_dir=file.with_name(file.stem + STATE_SUFFIX))


def _prompts(text: str, dataset: Dataset) -> tuple[str, ...]:
    """The preview prompts: one a line, or the dataset's first four distinct captions."""
    given = tuple(line.strip() for line in text.splitlines() if line.strip())
    if given:
        return given
    return tuple(dict.fromkeys(dataset.captions))[:4]


@node("TrainLoRA", category="training")
def train_lora(
    ctx: Context,
    unet: UNet,
    text_encoder: TextEncoder,
    vae: VAE,
    dataset: Dataset,
    name: str = "trained-lora",
    steps: Annotated[int, Field(ge=1, le=1_000_000)] = 500,
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8,
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-3,
    schedule: Literal["constant", "cosine"] = "constant",
    warmup_steps: Annotated[int, Field(ge=0)] = 0,
    rank: Annotated[int, Field(ge=1, le=256)] = 4,
    alpha: Annotated[float, Field(gt=0, le=1024)] = 4.0,
    target_modules: str = "to_q, to_k, to_v, to_out.0",
    seed: Seed = 0,
    caption_dropout: Annotated[float, Field(ge=0, le=1)] = 0.1,
    save_every: Annotated[int, Field(ge=0)] = 100,
    preview_every: Annotated[int, Field(ge=0)] = 100,
    preview_prompts: Annotated[str, Widget(multiline=True)] = "",
    preview_steps: Annotated[int, Field(ge=1, le=200)] = 20,
    resume: bool = True,
) -> TrainLoraOutputs:
    """Train a LoRA on the U-Net's attention (or ``target_modules``) over ``dataset``, saved
    to models/loras/<name>.safetensors every ``save_every`` steps and at the end; the outputs
    carry it applied exactly as LoadLoRA applies that file. With ``resume`` a run continues
    from <name>.state when its settings match (a constant schedule can be extended). Every
    ``preview_every`` steps the preview prompts (one a line; empty: four of the dataset's
    captions) are sampled from a fixed seed; ``grid`` shows them over training."""
    from nodes.training.lora_layers import parse_targets
    from nodes.training.previews import row_picture
    from nodes.training.trainer import LoraSettings, LoraTraining

    settings = LoraSettings(
        rank=rank, alpha=alpha, learning_rate=learning_rate, schedule=schedule,
        warmup_steps=warmup_steps, steps=steps, batch_size=batch_size, seed=seed,
        targets=parse_targets(target_modules), caption_dropout=caption_dropout,
    )  # fmt: skip
    checkpoint = lora_paths(name, ctx.env)
    ctx.models.use(unet.model, text_encoder.model, vae.model)
    prompts = _prompts(preview_prompts, dataset)

    def report(step: int, total: int, loss: float, lr: float) -> None:
        ctx.progress(step, total, {"loss": loss, "lr": lr})

    def preview(step: int, row: Any) -> None:
        ctx.preview(row_picture(row), step)

    training = LoraTraining(
        unet, text_encoder, vae, dataset, settings, checkpoint,
        save_every=save_every, preview_every=preview_every, prompts=prompts,
        preview_seed=seed, sampling_steps=preview_steps, resume=resume, report=report,
        preview=preview,
    )  # fmt: skip
    training.run()
    applied = apply_lora(unet, text_encoder, read_lora_file(checkpoint.lora_file))
    return TrainLoraOutputs(applied.unet, applied.text_encoder, _grid(training, prompts))


def _grid(training: LoraTraining, prompts: tuple[str, ...]) -> Image:
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


NODES = [load_image_dataset, demo_scene_dataset, train_lora]
TYPES = [Dataset]
