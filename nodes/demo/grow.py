"""Grow a trained demo U-Net: add attention to levels that had none, without changing its output.

The v1 demo U-Net has no attention at its 16x16 level (``DownBlock2D`` / ``UpBlock2D``), and it
never learned position (15%, chance: BENCHMARKS.md). Training a v2 from scratch takes longer than
a session on the shared CPU, so v2 starts from v1 instead. diffusers names a
``CrossAttnDownBlock2D``'s and ``CrossAttnUpBlock2D``'s resnets and resamplers exactly as the
plain blocks' (``down_blocks.0.resnets.0``, ``down_blocks.0.downsamplers.0``), and only adds
``attentions.*``; so v1's weights load unchanged into the grown architecture, and only the new
transformer blocks need an initial value.

Each new ``Transformer2DModel`` returns ``proj_out(...) + residual``; with ``proj_out`` zeroed
(weight and bias) it is exactly the identity, so the grown U-Net computes what v1 computes, to
the bit, and training starts from v1's pictures rather than from a perturbed model (the zero
initialisation ControlNet uses for its new convolutions, for the same reason). The rest of the new
block is initialised as diffusers initialises it, from a seed, so gradients reach it as soon as
``proj_out`` has moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.transformers.transformer_2d import Transformer2DModel

__all__ = ["attention_levels", "grow_unet", "grown_config"]

PLAIN = {"down": "DownBlock2D", "up": "UpBlock2D"}
ATTENTION = {"down": "CrossAttnDownBlock2D", "up": "CrossAttnUpBlock2D"}


def attention_levels(config: Any) -> list[int]:
    """The levels (0 = the highest resolution) whose down block has cross-attention."""
    return [i for i, kind in enumerate(config["down_block_types"]) if kind.startswith("CrossAttn")]


def _check_levels(config: Any, levels: Sequence[int]) -> list[int]:
    count = len(config["down_block_types"])
    chosen = sorted(set(levels))
    if not chosen:
        raise ValueError("give at least one level to grow attention at")
    for level in chosen:
        if not 0 <= level < count:
            raise ValueError(f"attention level {level} is not one of the U-Net's 0..{count - 1}")
        down = config["down_block_types"][level]
        up = config["up_block_types"][count - 1 - level]
        if (down, up) != (PLAIN["down"], PLAIN["up"]):
            raise ValueError(
                f"level {level} is {down}/{up}; only a plain {PLAIN['down']}/{PLAIN['up']} "
                "level can be grown"
            )
    return chosen


def grown_config(config: Any, levels: Sequence[int]) -> dict[str, Any]:
    """``config`` (a U-Net's) with cross-attention blocks at ``levels`` too; nothing else
    changes, so every existing weight keeps its name and shape."""
    chosen = _check_levels(config, levels)
    count = len(config["down_block_types"])
    new = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    for level in chosen:
        down[level] = ATTENTION["down"]
        up[count - 1 - level] = ATTENTION["up"]
    new["down_block_types"], new["up_block_types"] = tuple(down), tuple(up)
    return new


def _new_prefixes(config: Any, levels: Sequence[int]) -> tuple[str, ...]:
    count = len(config["down_block_types"])
    return tuple(
        prefix
        for level in levels
        for prefix in (
            f"down_blocks.{level}.attentions.",
            f"up_blocks.{count - 1 - level}.attentions.",
        )
    )


@torch.no_grad()
def grow_unet(
    unet: UNet2DConditionModel, levels: Sequence[int], seed: int = 0
) -> UNet2DConditionModel:
    """A new U-Net with attention also at ``levels``, every old weight copied, and each new
    transformer block's ``proj_out`` zeroed so the result equals ``unet`` exactly.

    ``seed`` fixes the (diffusers-default) initial values of the rest of the new blocks. The new
    model is fp32 on the CPU, in training mode like a freshly built one.
    """
    chosen = _check_levels(unet.config, levels)
    torch.manual_seed(seed)
    grown = UNet2DConditionModel(**grown_config(unet.config, chosen))
    old = {k: v.detach().float().cpu() for k, v in unet.state_dict().items()}
    missing, unexpected = grown.load_state_dict(old, strict=False)
    new = _new_prefixes(unet.config, chosen)
    stray = [k for k in missing if not k.startswith(new)]
    if stray or unexpected:
        raise RuntimeError(
            "growing the U-Net did not keep its weights' names: "
            f"missing {stray[:5]}, unexpected {list(unexpected)[:5]}"
        )
    blocks = [
        (name, module)
        for name, module in grown.named_modules()
        if isinstance(module, Transformer2DModel) and (name + ".").startswith(new)
    ]
    for prefix in new:
        if not any((name + ".").startswith(prefix) for name, _ in blocks):
            raise RuntimeError(f"the grown U-Net has no transformer block under {prefix}")
    for _, block in blocks:
        block.proj_out.weight.zero_()
        block.proj_out.bias.zero_()
    return grown
