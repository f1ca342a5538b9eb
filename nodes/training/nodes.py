"""Training as nodes: datasets in, a LoRA out that the rest of the workflow uses at once.

``TrainLoRA`` writes ``models/loras/<name>.safetensors`` as it goes (and its resumable state
beside it, ``<name>.state/``), then hands downstream the U-Net and text encoder with that very
file applied by ``nodes.lora.apply_lora``, the function LoadLoRA uses: a trained LoRA and the
same LoRA loaded later are one thing. Loss and learning rate ride on the progress events;
previews of fixed prompts go out as the node's previews and come back as a labelled grid.
``TrainUNet`` (``nodes.training.unet_node``, full fine-tuning) and ``CaptionTemplate``
(``nodes.training.captions``, DreamBooth's rare token) are registered here with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field

from nodeflow import Context, Environment, Widget, node
from nodes.lora import apply_lora, read_lora_file
from nodes.paths import contained
from nodes.training.captions import caption_template
from nodes.training.dataset import Dataset
from nodes.training.folder import folder_fingerprint, read_image_folder
from nodes.training.unet_node import train_unet
from nodes.types import VAE, Image, TextEncoder, UNet

Seed = Annotated[int, Field(ge=0, le=2**63 - 1), Widget(seed=True)]


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
    text_encoder_modules: str = "",
    seed: Seed = 0,
    caption_dropout: Annotated[float, Field(ge=0, le=1)] = 0.1,
    class_prompts: Annotated[str, Widget(multiline=True)] = "",
    class_images: Annotated[int, Field(ge=0, le=100_000)] = 100,
    prior_loss_weight: Annotated[float, Field(ge=0, le=100)] = 1.0,
    save_every: Annotated[int, Field(ge=0)] = 100,
    preview_every: Annotated[int, Field(ge=0)] = 100,
    preview_prompts: Annotated[str, Widget(multiline=True)] = "",
    preview_steps: Annotated[int, Field(ge=1, le=200)] = 20,
    resume: bool = True,
) -> TrainLoraOutputs:
    """Train a LoRA on the U-Net's attention (or ``target_modules``), and on the CLIP text
    encoder's ``text_encoder_modules`` when given (e.g. ``q_proj, k_proj, v_proj, out_proj``),
    over ``dataset``, saved to models/loras/<name>.safetensors (kohya layout) every
    ``save_every`` steps and at the end; the outputs carry it applied exactly as LoadLoRA
    applies that file. With ``class_prompts`` (one a line) it is DreamBooth with prior
    preservation: ``class_images`` pictures of those prompts, drawn once by the base model
    (euler, ``preview_steps`` steps; cached under models/training_priors/), are trained on
    beside the dataset (as many a step as ``batch_size``), their loss
    weighted by ``prior_loss_weight``. With ``resume`` a run continues from <name>.state when
    its settings match (a constant schedule can be extended). Every ``preview_every`` steps the
    preview prompts (one a line; empty: four of the dataset's captions) are sampled from a fixed
    seed; ``grid`` shows them over training."""
    from nodes.training.lora_layers import parse_targets
    from nodes.training.node_run import checkpoint_paths, class_prior, run_training
    from nodes.training.trainer import TrainSettings
    from nodes.training.weights import LoraTrained

    te_targets = (parse_targets(text_encoder_modules, "text_encoder_modules")
                  if text_encoder_modules.strip() else ())  # fmt: skip
    settings = TrainSettings(
        kind="lora", rank=rank, alpha=alpha, learning_rate=learning_rate, schedule=schedule,
        warmup_steps=warmup_steps, steps=steps, batch_size=batch_size, seed=seed,
        targets=parse_targets(target_modules), te_targets=te_targets,
        caption_dropout=caption_dropout, prior_loss_weight=prior_loss_weight,
    )  # fmt: skip
    checkpoint = checkpoint_paths(name, ctx.env, "loras")
    prior = class_prior(ctx, unet, text_encoder, vae, dataset, class_prompts, class_images,
                        seed, preview_steps)  # fmt: skip

    def make_trained() -> LoraTrained:
        return LoraTrained(unet, text_encoder, settings.targets, settings.te_targets, rank,
                           alpha, seed)  # fmt: skip

    _, grid = run_training(
        ctx, unet, text_encoder, vae, dataset, settings, checkpoint, make_trained, prior,
        save_every=save_every, preview_every=preview_every, preview_text=preview_prompts,
        preview_steps=preview_steps, resume=resume,
    )  # fmt: skip
    applied = apply_lora(unet, text_encoder, read_lora_file(checkpoint.file))
    return TrainLoraOutputs(applied.unet, applied.text_encoder, grid)


NODES = [load_image_dataset, demo_scene_dataset, caption_template, train_lora, train_unet]
TYPES = [Dataset]
