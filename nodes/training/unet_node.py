"""``TrainUNet``: full fine-tuning of the U-Net (DreamBooth's setting), the same loop as TrainLoRA.

Every U-Net parameter is trained, on a private float32 copy: the input model, which the model
manager shares with every other node and run, is never changed (``nodes.training.weights``
``FullTrained``). The copy is written as it goes to ``models/unet/<name>.safetensors``
(diffusers layout, the model's config in ``nodeflow.architecture``), the U-Net file LoadUNet
reads, with the resumable state beside it; the output U-Net is that copy, with the input's
patches still riding on it, so the rest of the workflow renders with it at once. Prior
preservation, previews, events, interrupts and resuming are TrainLoRA's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from nodeflow import Context, node
from nodes.training.dataset import Dataset
from nodes.training.widgets import (
    BatchSize,
    ClassImages,
    Count,
    Fraction,
    LearningRate,
    PriorWeight,
    Prompts,
    SamplingSteps,
    ScheduleName,
    Seed,
    Steps,
)
from nodes.types import VAE, Image, TextEncoder, UNet


class TrainUNetOutputs(NamedTuple):
    unet: UNet
    text_encoder: TextEncoder
    """The trained text encoder with ``train_text_encoder``, else the input one."""
    grid: Image
    """The preview prompts (columns) at every preview step (rows), labelled."""


@node("TrainUNet", category="training")
def train_unet(
    ctx: Context,
    unet: UNet,
    text_encoder: TextEncoder,
    vae: VAE,
    dataset: Dataset,
    name: str = "trained-unet",
    steps: Steps = 300,
    batch_size: BatchSize = 8,
    learning_rate: LearningRate = 1e-4,
    schedule: ScheduleName = "constant",
    warmup_steps: Count = 0,
    seed: Seed = 0,
    caption_dropout: Fraction = 0.1,
    train_text_encoder: bool = False,
    class_prompts: Prompts = "",
    class_images: ClassImages = 100,
    prior_loss_weight: PriorWeight = 1.0,
    save_every: Count = 100,
    preview_every: Count = 100,
    preview_prompts: Prompts = "",
    preview_steps: SamplingSteps = 20,
    resume: bool = True,
) -> TrainUNetOutputs:
    """Fine-tune every weight of the U-Net over ``dataset`` (AdamW in float32 on a copy; the
    input model is untouched), saved to models/unet/<name>.safetensors every ``save_every``
    steps and at the end (LoadUNet reads it); ``unet`` is the trained model. With
    ``train_text_encoder`` the CLIP text encoder is fully trained too, saved to
    models/text_encoders/<name>.safetensors (LoadTextEncoder reads it). With
    ``class_prompts`` (one a line) it is DreamBooth with prior preservation: ``class_images``
    pictures of them, drawn once by the base model (euler, ``preview_steps`` steps) and
    cached, are trained on beside the dataset, their loss weighted by ``prior_loss_weight``.
    Resuming, previews and the grid are TrainLoRA's."""
    from nodes.training.node_run import checkpoint_paths, class_prior, run_training
    from nodes.training.trainer import TrainSettings
    from nodes.training.weights import FullTrained, unet_architecture

    settings = TrainSettings(
        kind="full", rank=0, alpha=0.0, learning_rate=learning_rate, schedule=schedule,
        warmup_steps=warmup_steps, steps=steps, batch_size=batch_size, seed=seed, targets=(),
        full_text_encoder=train_text_encoder, caption_dropout=caption_dropout,
        prior_loss_weight=prior_loss_weight,
    )  # fmt: skip
    checkpoint = checkpoint_paths(name, ctx.env, "unet")
    if train_text_encoder:
        text_file = checkpoint_paths(name, ctx.env, "text_encoders").file
        checkpoint = dataclasses.replace(checkpoint, text_encoder_file=text_file)
    prior = class_prior(ctx, unet, text_encoder, vae, dataset, class_prompts, class_images,
                        seed, preview_steps)  # fmt: skip
    architecture = unet_architecture(unet, dict(vae.model.config))

    def make_trained() -> FullTrained:
        return FullTrained(unet, text_encoder, architecture, train_text_encoder)

    training, grid = run_training(
        ctx, unet, text_encoder, vae, dataset, settings, checkpoint, make_trained, prior,
        save_every=save_every, preview_every=preview_every, preview_text=preview_prompts,
        preview_steps=preview_steps, resume=resume,
    )  # fmt: skip
    done = training.trained
    result = dataclasses.replace(unet, model=_finished(done.copy_model, unet.model.dtype),
                                 source=str(checkpoint.file))  # fmt: skip
    encoder = text_encoder
    if done.text_copy is not None:
        encoder = dataclasses.replace(
            text_encoder,
            source=str(checkpoint.text_encoder_file),
            model=_finished(done.text_copy, text_encoder.model.dtype),
        )
    return TrainUNetOutputs(result, encoder, grid)


def _finished(model: Any, dtype: Any) -> Any:
    """A trained copy for inference: frozen, and in the input's dtype (trained in float32)."""
    model = model.eval().requires_grad_(False)
    return model if model.dtype == dtype else model.to(dtype)
