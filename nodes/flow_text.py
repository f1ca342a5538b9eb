"""Prompts for the rectified-flow transformers: SD3's three encoders and Flux's two.

A ``TextEncoder`` whose ``prompt_format`` is one of these is encoded by it instead of SD's CLIP
recipe (``nodes.text``); the loader that reads the model chooses the format, so TextEncode itself
names no family. Both follow their diffusers pipeline's ``encode_prompt`` exactly: CLIP reads 77
tokens (truncated), T5 ``max_sequence_length`` tokens (padded with ``<pad>``, truncated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nodes.lora import patched
from nodes.prompt_weights import parse_prompt, plain_text
from nodes.types import Conditioning, TextEncoder


def literal_prompt(text: str) -> str:
    """The prompt without weighting syntax; weights are refused rather than silently dropped."""
    plain = plain_text(parse_prompt(text))
    if plain is None:
        raise ValueError(
            "prompt weighting ((word:1.2), [word], BREAK) is not supported for SD3 and Flux "
            "prompts yet; write the prompt without it"
        )
    return plain


def each_text(encoders: tuple[str, ...], texts: Mapping[str, str]) -> list[str]:
    """The texts in the encoders' order; every encoder must be named once and nothing else, so
    a misspelt name is an error rather than an encoder silently reading nothing."""
    if set(texts) != set(encoders):
        raise ValueError(
            f"texts must name exactly this model's text encoders {list(encoders)}, "
            f"got {sorted(texts)}"
        )
    return [texts[name] for name in encoders]


def _ids(tokenizer: Any, text: str, length: int, device: object) -> Any:
    tokens = tokenizer(
        [text], padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    )
    return tokens.input_ids.to(device)


def _t5(text_encoder: TextEncoder, text: str, length: int, device: object) -> Any:
    """T5's last hidden state over ``length`` tokens."""
    return text_encoder.model_3(_ids(text_encoder.tokenizer_3, text, length, device))[0]


def _clip_hidden_and_pooled(
    tokenizer: Any, model: Any, patches: Any, target: str, text: str, device: object
) -> tuple[Any, Any]:
    """A CLIP encoder's penultimate hidden states and its projected pooled output."""
    ids = _ids(tokenizer, text, tokenizer.model_max_length, device)
    with patched(model, patches, target):  # type: ignore[arg-type]
        output = model(ids, output_hidden_states=True)
    return output.hidden_states[-2], output[0]


@dataclass(frozen=True)
class SD3Prompt:
    """SD3: pooled = CLIP-L's and CLIP-G's projected pooled outputs side by side; per token =
    their penultimate hidden states side by side, zero-padded to T5's width, followed by T5's
    tokens (zeros in their place when the model comes without T5, as SD3 allows)."""

    joint_width: int
    """The transformer's ``joint_attention_dim`` (T5-XXL's width, 4096 for the real models)."""
    default_length: int = 256
    encoders: tuple[str, ...] = ("clip_l", "clip_g", "t5xxl")
    """The names ``encode_each`` takes a text by (ComfyUI's CLIPTextEncodeSD3 inputs)."""

    def encode(
        self, text_encoder: TextEncoder, text: str, device: object, max_length: int = 0
    ) -> Conditioning:
        return self.encode_each(
            text_encoder, dict.fromkeys(self.encoders, text), device, max_length
        )

    def encode_each(
        self,
        text_encoder: TextEncoder,
        texts: Mapping[str, str],
        device: object,
        max_length: int = 0,
    ) -> Conditioning:
        """Each encoder reads its own text, as diffusers' ``prompt``, ``prompt_2`` and
        ``prompt_3`` (CLIP-L, CLIP-G, T5) and ComfyUI's clip_l, clip_g and t5xxl do."""
        import torch

        if text_encoder.model is None or text_encoder.model_2 is None:
            raise ValueError(
                f"{text_encoder.source or 'this SD3 model'} has no CLIP text encoders (a file "
                "without them, such as sd3_medium.safetensors); use a file or folder that has them"
            )
        text_l, text_g, text_t5 = (literal_prompt(t) for t in each_text(self.encoders, texts))
        length = max_length or self.default_length
        with torch.inference_mode():
            hidden_l, pooled_l = _clip_hidden_and_pooled(
                text_encoder.tokenizer, text_encoder.model, text_encoder.patches,
                "text_encoder", text_l, device,
            )  # fmt: skip
            hidden_g, pooled_g = _clip_hidden_and_pooled(
                text_encoder.tokenizer_2, text_encoder.model_2, text_encoder.patches,
                "text_encoder_2", text_g, device,
            )  # fmt: skip
            if text_encoder.model_3 is not None:
                t5 = _t5(text_encoder, text_t5, length, device)
            else:
                t5 = torch.zeros(
                    (1, length, self.joint_width), device=hidden_l.device, dtype=hidden_l.dtype
                )
            clip = torch.cat([hidden_l, hidden_g], dim=-1)
            clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
            embeds = torch.cat([clip, t5], dim=-2)
            pooled = torch.cat([pooled_l, pooled_g], dim=-1)
        return Conditioning(embeds=embeds, pooled=pooled)


@dataclass(frozen=True)
class FluxPrompt:
    """Flux: per token = T5's last hidden state; pooled = CLIP-L's pooled output (unprojected,
    ``pooler_output``)."""

    default_length: int = 512
    encoders: tuple[str, ...] = ("clip_l", "t5xxl")
    """The names ``encode_each`` takes a text by (ComfyUI's CLIPTextEncodeFlux inputs)."""

    def encode(
        self, text_encoder: TextEncoder, text: str, device: object, max_length: int = 0
    ) -> Conditioning:
        return self.encode_each(
            text_encoder, dict.fromkeys(self.encoders, text), device, max_length
        )

    def encode_each(
        self,
        text_encoder: TextEncoder,
        texts: Mapping[str, str],
        device: object,
        max_length: int = 0,
    ) -> Conditioning:
        """CLIP-L and T5 each read their own text, as diffusers' ``prompt`` and ``prompt_2``."""
        import torch

        text_l, text_t5 = (literal_prompt(t) for t in each_text(self.encoders, texts))
        if text_encoder.model_3 is None:
            raise ValueError(f"{text_encoder.source or 'this Flux model'} has no T5 encoder")
        tokenizer = text_encoder.tokenizer
        with torch.inference_mode():
            ids = _ids(tokenizer, text_l, tokenizer.model_max_length, device)
            with patched(text_encoder.model, text_encoder.patches, "text_encoder"):
                pooled = text_encoder.model(ids, output_hidden_states=False).pooler_output
            embeds = _t5(text_encoder, text_t5, max_length or self.default_length, device)
        return Conditioning(embeds=embeds, pooled=pooled)
