"""Conditionings made into one batch: the same helpers serve every family's adapter."""

from __future__ import annotations

import math
from typing import Any


def repeat_to(embeds: Any, batch: int) -> Any:
    """``embeds`` repeated per row so it fills ``batch`` rows (one prompt for several pictures)."""
    if embeds.shape[0] == batch:
        return embeds
    if batch % embeds.shape[0]:
        raise ValueError(f"conditioning of batch {embeds.shape[0]} cannot fill a batch of {batch}")
    return embeds.repeat_interleave(batch // embeds.shape[0], dim=0)


def cat(tensors: list[Any], batch: int) -> Any:
    """One tensor per conditioning, each filled to ``batch`` rows, stacked in order."""
    import torch

    if any(t is None for t in tensors):
        raise ValueError("conditioning is missing an input this model needs")
    return torch.cat([repeat_to(t, batch) for t in tensors])


def same_length(embeds: list[Any]) -> list[Any]:
    """Prompt embeddings made as long as each other, so they batch: each is repeated along the
    tokens up to the least common multiple of the lengths (as ComfyUI does).

    A long prompt is encoded in 77-token chunks, so a positive and a negative prompt may differ in
    length. Repeating a whole sequence k times leaves cross-attention's result unchanged (every
    key and value appears k times, the softmax weights each copy 1/k as much), so each prompt
    still means exactly what it did alone, unlike padding with extra tokens.
    """
    if any(e is None for e in embeds):
        return embeds
    lengths = [int(e.shape[1]) for e in embeds]
    if len(set(lengths)) == 1:
        return embeds
    target = math.lcm(*lengths)
    return [e.repeat(1, target // n, 1) for e, n in zip(embeds, lengths, strict=True)]
