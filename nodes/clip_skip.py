"""Clip skip: prompts read from an earlier layer of the text encoder (ComfyUI's CLIPSetLastLayer).

Some SD 1.x fine-tunes were trained on the penultimate layer's output (A1111's "clip skip 2"),
and their pictures need it. The layer rides on the ``TextEncoder`` value, like a LoRA patch, so
the model itself is never changed and every prompt encoded through it reads that layer.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from pydantic import Field

from nodeflow import node
from nodes.types import TextEncoder


@node("SetLastLayer", category="conditioning")
def set_last_layer(
    text_encoder: TextEncoder,
    stop_at_clip_layer: Annotated[int, Field(ge=-48, le=-1)] = -1,
) -> TextEncoder:
    """Read prompts from this layer, counted from the end: -1 the last (as without this node),
    -2 the one before it ("clip skip 2"), each through the encoder's final layer norm, as ComfyUI's
    CLIPSetLastLayer does for SD 1.x. One-encoder models only."""
    if text_encoder.model_2 is not None:
        raise ValueError(
            "SetLastLayer: SDXL's two encoders already read their penultimate layers; "
            "changing that is not supported"
        )
    if text_encoder.model is None:
        raise ValueError("SetLastLayer: this model has no text encoder")
    layers = int(text_encoder.model.config.num_hidden_layers)
    if -stop_at_clip_layer > layers:
        raise ValueError(
            f"SetLastLayer: stop_at_clip_layer {stop_at_clip_layer} is beyond this text encoder's "
            f"{layers} layers"
        )
    return dataclasses.replace(text_encoder, stop_at_layer=stop_at_clip_layer)
