"""Prompt encoding, done exactly as the diffusers pipelines' ``encode_prompt`` does it."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import Field

from nodeflow import Context, Widget, node
from nodes.lora import patched
from nodes.types import Conditioning, SizeConditioning, TextEncoder


def _tokens(tokenizer: Any, text: str) -> Any:
    return tokenizer(
        [text],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )


def encode_text(text_encoder: TextEncoder, text: str, device: object) -> Conditioning:
    import torch

    if text_encoder.model is None:
        raise ValueError(
            f"{text_encoder.source or 'this model'} has no text encoder (a Kandinsky 2.2 decoder "
            "is conditioned on image embeddings: use UnCLIPConditioning)"
        )
    if text_encoder.model_2 is not None:
        return _encode_sdxl(text_encoder, text, device)
    model = text_encoder.model
    tokens = _tokens(text_encoder.tokenizer, text)
    use_mask = getattr(model.config, "use_attention_mask", False)
    mask = tokens.attention_mask.to(device) if use_mask else None
    with torch.inference_mode(), patched(model, text_encoder.patches, "text_encoder"):
        output = model(tokens.input_ids.to(device), attention_mask=mask)
    return Conditioning(embeds=output[0], pooled=output[1] if len(output) > 1 else None)


def _encode_sdxl(text_encoder: TextEncoder, text: str, device: object) -> Conditioning:
    """Both encoders' penultimate hidden states, concatenated; the second one's pooled output."""
    import torch

    pairs = (
        (text_encoder.tokenizer, text_encoder.model, "text_encoder"),
        (text_encoder.tokenizer_2, text_encoder.model_2, "text_encoder_2"),
    )
    hidden, pooled = [], None
    with torch.inference_mode():
        for tokenizer, model, target in pairs:
            ids = _tokens(tokenizer, text).input_ids.to(device)
            with patched(model, text_encoder.patches, target):
                output = model(ids, output_hidden_states=True)
            pooled = output[0]  # text_embeds of the projection model, as diffusers takes it
            hidden.append(output.hidden_states[-2])
    return Conditioning(embeds=torch.cat(hidden, dim=-1), pooled=pooled)


@node("TextEncode", category="conditioning")
def text_encode(
    ctx: Context, text_encoder: TextEncoder, text: Annotated[str, Widget(multiline=True)] = ""
) -> Conditioning:
    """Encode a prompt into conditioning with the model's text encoder(s)."""
    ctx.models.use(*text_encoder.models)
    device = text_encoder.model.device if text_encoder.model is not None else None
    return encode_text(text_encoder, text, device)


Pixels = Annotated[int, Field(ge=0, le=16384)]


@node("SizeConditioning", category="conditioning")
def size_conditioning(
    conditioning: Conditioning,
    original_width: Pixels = 1024,
    original_height: Pixels = 1024,
    crop_left: Pixels = 0,
    crop_top: Pixels = 0,
    target_width: Pixels = 1024,
    target_height: Pixels = 1024,
) -> Conditioning:
    """Tell an SDXL U-Net the source size, crop and target size it should imitate.

    SDXL was trained knowing each image's original size and crop; a small original size or a
    non-zero crop asks for pictures that look upscaled or cut off. Without this node the picture's
    own size and no crop are used, as in diffusers.
    """
    size = SizeConditioning(
        original=(original_height, original_width),
        crop=(crop_top, crop_left),
        target=(target_height, target_width),
    )
    return dataclasses.replace(conditioning, size=size)
