"""Prompt encoding, done exactly as diffusers' StableDiffusionPipeline.encode_prompt does it."""

from __future__ import annotations

from typing import Annotated

from nodeflow import Context, Widget, node
from nodes.types import Conditioning, TextEncoder


def encode_text(text_encoder: TextEncoder, text: str, device: object) -> Conditioning:
    import torch

    tokenizer, model = text_encoder.tokenizer, text_encoder.model
    tokens = tokenizer(
        [text],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    use_mask = getattr(model.config, "use_attention_mask", False)
    mask = tokens.attention_mask.to(device) if use_mask else None
    with torch.inference_mode():
        output = model(tokens.input_ids.to(device), attention_mask=mask)
    return Conditioning(embeds=output[0], pooled=output[1] if len(output) > 1 else None)


@node("TextEncode", category="conditioning")
def text_encode(
    ctx: Context, text_encoder: TextEncoder, text: Annotated[str, Widget(multiline=True)] = ""
) -> Conditioning:
    """Encode a prompt into conditioning with the model's text encoder."""
    return encode_text(text_encoder, text, text_encoder.model.device)
