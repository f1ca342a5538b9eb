"""Training an SD3 transformer without T5 at the cost of one prompt token instead of 256.

When an SD3 model comes without T5, ``StableDiffusion3Pipeline`` (and nodeflow's ``SD3Prompt``)
appends ``max_sequence_length`` (default 256) all-zero tokens to the 77 CLIP tokens. All of them
enter the transformer as the same vector (the context embedder's bias), so in every block they
stay identical: each is one key repeated N times, which in softmax attention is exactly one key
whose logit is raised by ``log N``; their own outputs are never read (the last block is
``context_pre_only``). Training with one zero token and that bias computes the same function as
the pipeline's 333-token sequence, at a fraction of the cost (the prompt stream would otherwise
be five times the 64 image tokens). ``tests/nodes/test_demo_sd3_training.py`` holds the two equal.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

__all__ = ["NullTokenAttention", "null_token_bias"]


def null_token_bias(counts: torch.Tensor, image_tokens: int, prompt_tokens: int) -> torch.Tensor:
    """The additive attention bias [B, 1, 1, image + prompt] that makes the last prompt token
    count ``counts[b]`` times for row ``b``."""
    bias = torch.zeros(len(counts), 1, 1, image_tokens + prompt_tokens, dtype=torch.float32)
    bias[:, 0, 0, -1] = torch.log(counts.float())
    return bias


class NullTokenAttention:
    """A joint-attention processor for ``SD3Transformer2DModel`` that applies ``bias`` (set per
    batch) to every query's attention logits; otherwise the same computation as diffusers'
    ``JointAttnProcessor2_0`` (image and prompt projections, optional q/k norms, one attention
    over both streams, split, output projections)."""

    def __init__(self) -> None:
        self.bias: torch.Tensor | None = None

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if encoder_hidden_states is None:
            raise ValueError("NullTokenAttention serves joint attention only (dual attention off)")
        batch, image_tokens = hidden_states.shape[0], hidden_states.shape[1]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        query, key, value = (heads(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        prompt = encoder_hidden_states
        p_query, p_key, p_value = (
            heads(f(prompt)) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
        )
        if attn.norm_added_q is not None:
            p_query = attn.norm_added_q(p_query)
        if attn.norm_added_k is not None:
            p_key = attn.norm_added_k(p_key)
        query = torch.cat([query, p_query], dim=2)
        key = torch.cat([key, p_key], dim=2)
        value = torch.cat([value, p_value], dim=2)
        bias = None if self.bias is None else self.bias.to(query.device, query.dtype)
        out = functional.scaled_dot_product_attention(query, key, value, attn_mask=bias)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(query.dtype)
        image, prompt_out = out[:, :image_tokens], out[:, image_tokens:]
        if not attn.context_pre_only:
            prompt_out = attn.to_add_out(prompt_out)
        image = attn.to_out[1](attn.to_out[0](image))
        return image, prompt_out
