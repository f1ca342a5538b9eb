"""How far apart a demo text encoder puts captions that differ in one attribute.

The U-Net reads a caption only through the text encoder's per-token states, so an attribute
whose words the encoder maps to nearly the same states cannot be drawn, however the U-Net is
grown. The v1 demo's encoder puts the five position phrases about 3% apart (relative norm of the
difference of the states from the phrase on) against about 100% for two colours: position is
blocked there before the U-Net sees it. The v2 run records this figure at every checkpoint, so
its log shows whether training separates the position words.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from nodes.clip_vocab import MODEL_MAX_LENGTH, clip_tokenizer
from nodes.demo.dataset import POSITION_PHRASES

__all__ = ["attribute_separation", "phrase_separation"]

TEMPLATE = "a large red circle{} on a blue background"
COLOR_TEMPLATE = "a large {} circle on a blue background"


@torch.no_grad()
def phrase_separation(text_encoder: Any, captions: Sequence[str], start: int) -> float:
    """Mean over caption pairs of ``|a - b| / |a|`` for the encoder's last hidden states from
    token ``start`` (the first token that differs) to the end of the longest caption."""
    tokenizer: Any = clip_tokenizer()
    ids = torch.tensor([
        tokenizer(text, padding="max_length", max_length=MODEL_MAX_LENGTH).input_ids
        for text in captions
    ])  # fmt: skip
    device = next(text_encoder.parameters()).device
    states = text_encoder(ids.to(device))[0].float().cpu()
    end = max(len(tokenizer(text).input_ids) for text in captions)
    window = states[:, start:end]
    pairs = list(itertools.combinations(range(len(captions)), 2))
    distances = [float((window[i] - window[j]).norm() / window[i].norm()) for i, j in pairs]
    return sum(distances) / len(distances)


def attribute_separation(text_encoder: Any) -> dict[str, float]:
    """The separation of the five position phrases and of two colours, in one caption."""
    positions = [TEMPLATE.format(" " + phrase) for phrase in POSITION_PHRASES.values()]
    colors = [COLOR_TEMPLATE.format(color) for color in ("red", "green")]
    # tokens: BOS a large red circle | on the <word>: the position word is the 8th token (7)
    return {
        "position": phrase_separation(text_encoder, positions, start=7),
        "color": phrase_separation(text_encoder, colors, start=3),
    }
