"""Nodes over a whole CLIP: load one, and embed a prompt into its joint image-text space.

A projected CLIP text embedding has the width and lives in the space of the same model's image
embeddings (that is what contrastive training does), so it travels on the ``ImageEmbeds`` socket:
``BlendEmbeds`` and ``TextDiff`` take it as they take image embeddings. The image side is
``LoadCLIPVision`` + ``CLIPVisionEncode`` on the same folder, which load its image tower with
projection.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from nodeflow import Context, Widget, node
from nodeflow.runtime.models import file_identity
from nodes.clip_model import CLIP, load_clip_folder, text_features
from nodes.loaders import (
    CHECKPOINT_DIRS,
    DEMO_CLIP,
    Dtype,
    _identity,
    quiet_hub_libraries,
    resolve_checkpoint,
)
from nodes.types import ImageEmbeds


class LoadedCLIP(NamedTuple):
    clip: CLIP


@node("LoadCLIP", category="loaders", fingerprint=_identity(CHECKPOINT_DIRS))
def load_clip(
    ctx: Context,
    path: Annotated[str, Widget(files="checkpoints")] = DEMO_CLIP,
    dtype: Dtype = "auto",
) -> LoadedCLIP:
    """Load a whole CLIP (image and text towers with projections, a transformers ``CLIPModel``
    folder), for text embeddings, caption ranking and CLIP guidance; ``demo-clip`` is the one
    trained on the demo scenes."""
    location = resolve_checkpoint(path, ctx.env)
    torch_dtype = ctx.runtime.dtype(dtype)
    key = ("clip", file_identity(location), str(torch_dtype))

    def load() -> CLIP:
        quiet_hub_libraries()
        loaded = load_clip_folder(location, torch_dtype)
        ctx.models.register(loaded.model, label=f"CLIP {location.name}")
        return loaded

    return LoadedCLIP(ctx.models.get(key, load))


class TextEmbedOutput(NamedTuple):
    text_embeds: ImageEmbeds


@node("CLIPTextFeatures", category="conditioning")
def clip_text_features(
    ctx: Context, clip: CLIP, text: Annotated[str, Widget(multiline=True)] = ""
) -> TextEmbedOutput:
    """A prompt's projected CLIP text embedding (what ``get_text_features`` returns), in the
    same space as the model's image embeddings: the ends of a text diff, or a blend partner."""
    ctx.models.use(clip.model)
    return TextEmbedOutput(ImageEmbeds(text_features(clip, [text]).cpu()))
