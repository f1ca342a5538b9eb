"""Pictures to CLIP image embeddings: the image-variation path of unCLIP models.

A picture's CLIP image embedding, given to an unCLIP decoder instead of the prior's, asks for
variations of that picture. Preprocessing is the model's own ``CLIPImageProcessor`` on the 8-bit
picture, as diffusers' pipelines run it, so the embeddings equal theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NamedTuple

from nodeflow import Context, Widget, node
from nodeflow.runtime.models import file_identity
from nodes import hf
from nodes.image import to_pil
from nodes.loaders import (
    CHECKPOINT_DIRS,
    DEMO_CLIP_VISION,
    Dtype,
    _identity,
    quiet_hub_libraries,
    resolve_checkpoint,
)
from nodes.types import CLIPVision, Image, ImageEmbeds

PROCESSOR_FOLDERS = ("image_processor", "feature_extractor")
"""Where diffusers folders keep the image encoder's preprocessing config."""


class LoadedCLIPVision(NamedTuple):
    clip_vision: CLIPVision


@node(
    "LoadCLIPVision",
    category="loaders",
    fingerprint=_identity(CHECKPOINT_DIRS),
    aliases=("CLIPVisionLoader",),
)
def load_clip_vision(
    ctx: Context,
    path: Annotated[str, Widget(files="checkpoints")] = DEMO_CLIP_VISION,
    dtype: Dtype = "auto",
) -> LoadedCLIPVision:
    """Load a CLIP image encoder with projection: a model folder with ``image_encoder/`` (a
    Kandinsky 2.2 prior, say: its encoder shares the prior's embedding space), or an image
    encoder folder with its preprocessing config."""
    location = resolve_checkpoint(path, ctx.env)
    torch_dtype = ctx.runtime.dtype(dtype)
    key = ("clip_vision", file_identity(location), str(torch_dtype))

    def load() -> CLIPVision:
        loaded = _load_clip_vision(location, torch_dtype)
        ctx.models.register(loaded.model, label=f"image encoder of {location.name}")
        return loaded

    return LoadedCLIPVision(ctx.models.get(key, load))


def _load_clip_vision(location: Path, dtype: Any) -> CLIPVision:
    transformers = hf.transformers()
    CLIPImageProcessor = transformers.CLIPImageProcessor
    CLIPVisionModelWithProjection = transformers.CLIPVisionModelWithProjection

    encoder = location / "image_encoder" if (location / "image_encoder").is_dir() else location
    if not (encoder / "config.json").is_file():
        raise ValueError(f"{location} holds no CLIP image encoder (no image_encoder/ folder)")
    candidates = [location / name for name in PROCESSOR_FOLDERS] + [encoder]
    processor_folder = next(
        (c for c in candidates if (c / "preprocessor_config.json").is_file()), None
    )
    if processor_folder is None:
        raise ValueError(f"{location}: no preprocessor_config.json for the image encoder")
    quiet_hub_libraries()
    model = CLIPVisionModelWithProjection.from_pretrained(
        encoder, dtype=dtype, local_files_only=True
    )
    processor = CLIPImageProcessor.from_pretrained(processor_folder, local_files_only=True)
    return CLIPVision(model.eval().requires_grad_(False), processor, source=str(location))


def encode_image(clip_vision: CLIPVision, image: Image) -> Any:
    import torch

    model = clip_vision.model
    pixels = clip_vision.processor(to_pil(image), return_tensors="pt").pixel_values
    with torch.inference_mode():
        return model(pixels.to(device=model.device, dtype=model.dtype))["image_embeds"]


def zero_input_embeds(model: Any, batch: int) -> Any:
    """The embedding of an all-zero input, what diffusers' Kandinsky pipelines take as the
    negative image embedding when no negative prompt is given ("zero embed")."""
    import torch

    size = model.config.image_size
    zeros = torch.zeros(1, 3, size, size, device=model.device, dtype=model.dtype)
    with torch.inference_mode():
        return model(zeros)["image_embeds"].repeat(batch, 1)


class CLIPVisionOutput(NamedTuple):
    image_embeds: ImageEmbeds
    negative_image_embeds: ImageEmbeds


@node("CLIPVisionEncode", category="conditioning")
def clip_vision_encode(ctx: Context, clip_vision: CLIPVision, image: Image) -> CLIPVisionOutput:
    """Embed pictures with a CLIP image encoder, for image variations with an unCLIP decoder;
    the negative embedding is the encoder's "no picture" (all-zero input) embedding."""
    ctx.models.use(clip_vision.model)
    embeds = encode_image(clip_vision, image)
    negative = zero_input_embeds(clip_vision.model, embeds.shape[0])
    return CLIPVisionOutput(ImageEmbeds(embeds), ImageEmbeds(negative))
