"""Prompt encoding: exactly as the diffusers pipelines' ``encode_prompt`` does it for a plain
prompt of up to 75 tokens; with A1111/ComfyUI weighting and 75-token chunks otherwise."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field

from nodeflow import Context, Widget, node
from nodes.lora import patched
from nodes.prompt_weights import Section, parse_prompt, plain_text
from nodes.types import Conditioning, SizeConditioning, TextEncoder

Weighting = Literal["comfy", "a1111"]
CHUNK_TOKENS = 75
"""Prompt tokens per chunk: CLIP reads 77, with BOS and EOS."""


def _tokens(tokenizer: Any, text: str) -> Any:
    return tokenizer(
        [text],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )


def encode_text(
    text_encoder: TextEncoder,
    text: str,
    device: object,
    weighting: Weighting = "comfy",
    max_sequence_length: int = 0,
) -> Conditioning:
    """The prompt's conditioning: weighting syntax and ``BREAK`` read (``nodes.prompt_weights``),
    prompts over 75 tokens encoded in chunks.

    A prompt whose weights are all 1.0 and that fits in one chunk is encoded exactly as diffusers'
    ``encode_prompt`` does it, so its pixels are the diffusers pipeline's. A text encoder with its
    own ``prompt_format`` (SD3, Flux) is encoded by that format, T5 reading
    ``max_sequence_length`` tokens (0: the format's default).
    """
    if text_encoder.prompt_format is not None:
        return text_encoder.prompt_format.encode(text_encoder, text, device, max_sequence_length)
    if text_encoder.model is None:
        raise ValueError(
            f"{text_encoder.source or 'this model'} has no text encoder (a Kandinsky 2.2 decoder "
            "is conditioned on image embeddings: use UnCLIPConditioning)"
        )
    sections = parse_prompt(text)
    plain = plain_text(sections)
    if plain is not None and len(_prompt_ids(text_encoder.tokenizer, plain)) <= CHUNK_TOKENS:
        return _encode_plain(text_encoder, plain, device)
    return _encode_chunks(text_encoder, sections, device, weighting)


def _encode_plain(text_encoder: TextEncoder, text: str, device: object) -> Conditioning:
    import torch

    if text_encoder.model_2 is not None:
        return _encode_sdxl(text_encoder, text, device)
    model = text_encoder.model
    tokens = _tokens(text_encoder.tokenizer, text)
    use_mask = getattr(model.config, "use_attention_mask", False)
    mask = tokens.attention_mask.to(device) if use_mask else None
    with torch.inference_mode(), patched(model, text_encoder.patches, "text_encoder"):
        embeds, pooled = _hidden(model, tokens.input_ids.to(device), mask, text_encoder)
    return Conditioning(embeds=embeds, pooled=pooled)


def _hidden(model: Any, ids: Any, mask: Any, text_encoder: TextEncoder) -> tuple[Any, Any]:
    """(prompt embeddings, pooled) of one encoder: its last hidden state, or with a clip skip
    (``stop_at_layer`` below -1) that layer's output through the final layer norm.

    The layer's output is caught with a hook removed right after, not ``output_hidden_states``:
    transformers 5 records hidden states with forward hooks that stay on the (shared) model."""
    stop = text_encoder.stop_at_layer
    if stop == -1:
        output = model(ids, attention_mask=mask)
        return output[0], output[1] if len(output) > 1 else None
    inner = getattr(model, "text_model", model)  # transformers 4 nests the parts
    caught: list[Any] = []

    def catch(module: Any, inputs: Any, result: Any) -> None:
        caught.append(result[0] if isinstance(result, tuple) else result)

    handle = inner.encoder.layers[stop].register_forward_hook(catch)
    try:
        output = model(ids, attention_mask=mask)
    finally:
        handle.remove()
    return inner.final_layer_norm(caught[-1]), output[1] if len(output) > 1 else None


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


class Chunk(NamedTuple):
    """77 token ids (BOS, up to 75 prompt tokens, EOS, padding), a weight for each, and how many
    of them are not padding."""

    ids: list[int]
    weights: list[float]
    length: int


def _prompt_ids(tokenizer: Any, text: str) -> list[int]:
    return list(
        tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids
    )


def _chunk(tokenizer: Any, tokens: list[tuple[int, float]]) -> Chunk:
    padding = CHUNK_TOKENS - len(tokens)
    ids = [tokenizer.bos_token_id, *(t for t, _ in tokens), tokenizer.eos_token_id]
    weights = [1.0, *(w for _, w in tokens), 1.0]
    return Chunk(ids + [tokenizer.pad_token_id] * padding, weights + [1.0] * padding, len(ids))


def token_chunks(tokenizer: Any, sections: list[Section]) -> list[Chunk]:
    """A parsed prompt as the 77-token chunks A1111 and ComfyUI make of it.

    Each segment is tokenized on its own; a section's tokens fill chunks of 75, each between BOS
    and EOS, the last padded with the tokenizer's pad token (``<|endoftext|>`` for SD 1.x, ``!``
    for the OpenCLIP encoders). ``BREAK`` ends a chunk early; one at the very start (or two in a
    row) makes an empty chunk, one at the end none, as in A1111. Neither tool's boundary
    heuristics are applied (A1111 moving the words after a nearby comma to the next chunk,
    ComfyUI keeping short words whole): a chunk boundary falls every 75 tokens.
    """
    chunks: list[Chunk] = []
    for i, section in enumerate(sections):
        tokens = [
            (token, segment.weight)
            for segment in section
            for token in _prompt_ids(tokenizer, segment.text)
        ]
        if not tokens and chunks and i == len(sections) - 1:
            break
        starts = range(0, len(tokens), CHUNK_TOKENS) if tokens else [0]
        chunks += [_chunk(tokenizer, tokens[s : s + CHUNK_TOKENS]) for s in starts]
    return chunks


def _encoders(text_encoder: TextEncoder) -> list[tuple[Any, Any, str, bool]]:
    """(tokenizer, model, LoRA target, SDXL) for each encoder."""
    if text_encoder.model_2 is None:
        return [(text_encoder.tokenizer, text_encoder.model, "text_encoder", False)]
    return [
        (text_encoder.tokenizer, text_encoder.model, "text_encoder", True),
        (text_encoder.tokenizer_2, text_encoder.model_2, "text_encoder_2", True),
    ]


def _run(
    model: Any, chunk: Chunk, sdxl: bool, device: object, text_encoder: TextEncoder
) -> tuple[Any, Any]:
    """(hidden states, pooled) of one chunk, taken as ``_encode_plain`` takes them."""
    import torch

    ids = torch.tensor([chunk.ids], device=device)
    if sdxl:
        output = model(ids, output_hidden_states=True)
        return output.hidden_states[-2], output[0]
    mask = None
    if getattr(model.config, "use_attention_mask", False):
        mask = (torch.arange(len(chunk.ids), device=device) < chunk.length).long()[None]
    return _hidden(model, ids, mask, text_encoder)


def _encode_chunks(
    text_encoder: TextEncoder, sections: list[Section], device: object, weighting: Weighting
) -> Conditioning:
    """Every chunk encoded, weighted, and concatenated along the tokens; with two encoders, each
    weighted on its own and the two side by side. Pooled: the first chunk's (as both tools)."""
    import torch

    hidden, pooled = [], None
    with torch.inference_mode():
        for tokenizer, model, target, sdxl in _encoders(text_encoder):
            chunks = token_chunks(tokenizer, sections)
            weighted = any(w != 1.0 for chunk in chunks for w in chunk.weights)
            with patched(model, text_encoder.patches, target):
                outputs = [_run(model, chunk, sdxl, device, text_encoder) for chunk in chunks]
                empty = None
                if weighted and weighting == "comfy":
                    empty = _run(model, _chunk(tokenizer, []), sdxl, device, text_encoder)[0]
            pairs = zip(outputs, chunks, strict=True)
            zs = [_weigh(z, chunk.weights, weighting, empty) for (z, _), chunk in pairs]
            hidden.append(torch.cat(zs, dim=1))
            pooled = outputs[0][1]
    embeds = hidden[0] if len(hidden) == 1 else torch.cat(hidden, dim=-1)
    return Conditioning(embeds=embeds, pooled=pooled)


def _weigh(z: Any, weights: list[float], weighting: Weighting, empty: Any) -> Any:
    """One chunk's hidden states [1, 77, width] with its token weights applied (see TextEncode).

    Tokens of weight 1.0 are left exactly as they are in "comfy"; a chunk without weights is
    returned unchanged in both."""
    import torch

    if all(w == 1.0 for w in weights):
        return z
    w = torch.tensor(weights, dtype=torch.float32, device=z.device)[None, :, None]
    z32 = z.float()
    if weighting == "comfy":
        e = empty.float()
        out = torch.where(w != 1.0, (z32 - e) * w + e, z32)
    else:
        out = z32 * w
        out = out * (z32.mean() / out.mean())
    return out.to(z.dtype)


@node("TextEncode", category="conditioning", version=2, aliases=("CLIPTextEncode",))
def text_encode(
    ctx: Context,
    text_encoder: TextEncoder,
    text: Annotated[str, Widget(multiline=True)] = "",
    weighting: Weighting = "comfy",
    max_sequence_length: Annotated[int, Field(ge=0, le=512)] = 0,
) -> Conditioning:
    r"""Encode a prompt into conditioning with the model's text encoder(s).

    Weighting syntax, as in A1111 and ComfyUI: (words:1.3) weights words by 1.3, (words) by 1.1,
    [words] by 1/1.1; brackets nest and multiply; \( \) \[ \] are literal brackets. A
    prompt over 75 tokens is encoded in chunks of 75 that are joined (the U-Net attends to all);
    BREAK starts a new chunk.

    weighting, how a weight changes a token's embedding:
    - comfy (ComfyUI's default): moves it away from the empty prompt's embedding at the same
      position, by the weight: empty + (token - empty) x weight; weight 0 gives the empty prompt's.
    - a1111 (A1111's "Original" emphasis): multiplies it by the weight, then scales the whole
      chunk so that its mean is what it was, which also changes the unweighted tokens slightly.

    A prompt without weights (or with all weights 1.0) gives exactly the unweighted pixels.

    max_sequence_length: the T5 tokens an SD3 or Flux prompt is read as (0: the model's default,
    256 for SD3, 512 for Flux); SD3 and Flux prompts take no weighting syntax. SD 1.x/2.x/XL
    ignore it.
    """
    ctx.models.use(*text_encoder.models)
    device = text_encoder.model.device if text_encoder.model is not None else None
    return encode_text(text_encoder, text, device, weighting, max_sequence_length)


@node("TextEncodeEach", category="conditioning")
def text_encode_each(
    ctx: Context,
    text_encoder: TextEncoder,
    texts: dict[str, str],
    max_sequence_length: Annotated[int, Field(ge=0, le=512)] = 0,
) -> Conditioning:
    """Encode a different text with each of a model's text encoders, by the encoders' names.

    For models with several encoders of different strengths (SD3: clip_l, clip_g, t5xxl; Flux:
    clip_l, t5xxl), as ComfyUI's CLIPTextEncodeSD3 / CLIPTextEncodeFlux and diffusers' prompt_2 /
    prompt_3 allow: a long, detailed text for T5 and a short one for the CLIPs, say. Every
    encoder of the model must be named; the model's own prompt format says which they are, so
    this node names no family. Texts take no weighting syntax (as TextEncode for these models).
    """
    each = getattr(text_encoder.prompt_format, "encode_each", None)
    if each is None:
        raise ValueError(
            f"texts: {text_encoder.source or 'this model'} reads one text with all its encoders; "
            "use TextEncode"
        )
    ctx.models.use(*text_encoder.models)
    device = text_encoder.model.device if text_encoder.model is not None else None
    return each(text_encoder, texts, device, max_sequence_length)


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
