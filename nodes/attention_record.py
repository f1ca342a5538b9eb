"""Recording cross-attention while denoising: the RecordAttention node and its patch.

Recording is an attention patch (``nodes.attention``) on the U-Net socket, so it costs nothing
when not asked for (no patch, no switched processors) and it is part of the cache key of every
node downstream. It observes only: the attention output is still computed by the same
scaled-dot-product call as diffusers' processor, so a recorded picture is bit-identical to an
unrecorded one. What it keeps is small: per feature-map size, the head-averaged probabilities of
the positive prompts' rows, summed over the recorded layers and steps, and averaged at the end
(``nodes.types.AttentionStore``); Denoise hands it on as its ``attention`` output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from nodeflow import node
from nodes.attention import ATTENTION_RECORD, AttentionCall, Layer, Sampling
from nodes.types import AttentionStore, UNet

__all__ = ["AttentionRecording", "in_window", "parse_sizes", "record_attention"]


def in_window(sampling: Sampling, start: float, end: float) -> bool:
    """Whether the current step lies in the window [start, end) of the steps, counted as the
    prompt-to-prompt paper counts them (``int(fraction * steps)``)."""
    return int(start * sampling.steps) <= sampling.step < int(end * sampling.steps)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"8, 16"`` -> (8, 16): feature-map heights; empty means every size."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        sizes = tuple(sorted({int(p) for p in parts}))
    except ValueError as exc:
        raise ValueError(f"sizes {text!r}: give feature-map heights such as '8, 16'") from exc
    if any(s <= 0 for s in sizes):
        raise ValueError(f"sizes {text!r}: heights must be positive")
    return sizes


@dataclass
class _Recorder:
    """One run's sums: {size: (sum of head-averaged probs [pictures, h*w, tokens], calls)}."""

    patch: AttentionRecording
    sums: dict[tuple[int, int], Any] = field(default_factory=dict)
    calls: dict[tuple[int, int], int] = field(default_factory=dict)
    steps: set[int] = field(default_factory=set)

    def acts(self, layer: Layer, sampling: Sampling) -> bool:
        sizes = self.patch.sizes
        return (
            layer.cross
            and (not sizes or layer.size[0] in sizes)
            and in_window(sampling, self.patch.first, self.patch.last)
        )

    def attend(self, call: AttentionCall) -> None:
        rows = call.sampling.positive_rows(call.query.shape[0])
        probs = call.probs[rows].float().mean(dim=1)
        size = call.layer.size
        previous = self.sums.get(size)
        self.sums[size] = probs if previous is None else previous + probs
        self.calls[size] = self.calls.get(size, 0) + 1
        self.steps.add(call.sampling.step)

    def finish(self, sampling: Sampling) -> None:
        maps = {}
        for (height, width), total in self.sums.items():
            mean = (total / self.calls[(height, width)]).cpu()
            maps[(height, width)] = mean.reshape(mean.shape[0], height, width, mean.shape[-1])
        sampling.records[ATTENTION_RECORD] = AttentionStore(
            maps=dict(sorted(maps.items())), steps=tuple(sorted(self.steps))
        )


@dataclass(frozen=True)
class AttentionRecording:
    """A patch asking for the cross-attention of layers of ``sizes`` (feature-map heights; empty
    is all) over the steps in [first, last) as fractions of the steps."""

    sizes: tuple[int, ...] = ()
    first: float = 0.0
    last: float = 1.0
    target: str = "unet"

    def start(self, model: Any, sampling: Sampling) -> _Recorder:
        return _Recorder(self)


Fraction = Annotated[float, Field(ge=0, le=1)]


@node("RecordAttention", category="sampling")
def record_attention(
    unet: UNet, sizes: str = "", start: Fraction = 0.0, end: Fraction = 1.0
) -> UNet:
    """Record the cross-attention of this U-Net while Denoise runs it: layers whose feature map
    is one of ``sizes`` high (e.g. "8, 16"; empty: all), steps in [start, end) as fractions.
    Denoise's ``attention`` output then holds the maps, for AttentionMaps or other nodes."""
    if end <= start:
        raise ValueError(f"the window [{start}, {end}) holds no steps")
    patch = AttentionRecording(parse_sizes(sizes), start, end)
    return dataclasses.replace(unet, patches=(*unet.patches, patch))
