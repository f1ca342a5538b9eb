"""ControlNet weights in the original layout (lllyasviel's ``cldm``) and in diffusers' layout.

An original ControlNet file holds ``control_model.`` + a copy of the U-Net's encoder in LDM
names (``time_embed``, ``input_blocks``, ``middle_block``, SDXL's ``label_emb``), which
``nodes.ldm_layout`` already renames, plus three ControlNet parts:

- ``zero_convs.{i}.0``: one 1x1 convolution per skip connection -> ``controlnet_down_blocks.{i}``
- ``middle_block_out.0`` -> ``controlnet_mid_block``
- ``input_hint_block.{0,2,4,...}``: the control image's encoder, convolutions at even indices
  (SiLUs between) -> ``controlnet_cond_embedding.conv_in``, ``.blocks.{j}``, ``.conv_out``
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nodes.ldm_layout import unet_to_diffusers, unet_to_ldm

ORIGINAL_PREFIX = "control_model."
_HINT = re.compile(r"input_hint_block\.(\d+)\.(weight|bias)$")
_ZERO = re.compile(r"zero_convs\.(\d+)\.0\.(weight|bias)$")
_DOWN = re.compile(r"controlnet_down_blocks\.(\d+)\.(weight|bias)$")
_EMBED = "controlnet_cond_embedding."
_MID_ORIGINAL, _MID = "middle_block_out.0.", "controlnet_mid_block."


def is_original(keys: Any) -> bool:
    """Whether ``keys`` are an original-layout ControlNet (with or without its prefix)."""
    return any("input_hint_block." in key for key in keys)


def is_controlnet(keys: Any) -> bool:
    return is_original(keys) or any(key.startswith(_EMBED) for key in keys)


def controlnet_to_diffusers(original: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an original-layout ControlNet state dict to ``ControlNetModel`` keys."""
    state = {key.removeprefix(ORIGINAL_PREFIX): value for key, value in original.items()}
    hints = sorted({int(m.group(1)) for key in state if (m := _HINT.match(key))})
    if len(hints) < 2:
        raise ValueError("the ControlNet's input_hint_block has fewer than two convolutions")
    hint_names = {hints[0]: "conv_in", hints[-1]: "conv_out"}
    hint_names |= {index: f"blocks.{j}" for j, index in enumerate(hints[1:-1])}
    out: dict[str, Any] = {}
    encoder: dict[str, Any] = {}
    for key, value in state.items():
        if match := _HINT.match(key):
            out[f"{_EMBED}{hint_names[int(match.group(1))]}.{match.group(2)}"] = value
        elif match := _ZERO.match(key):
            out[f"controlnet_down_blocks.{match.group(1)}.{match.group(2)}"] = value
        elif key.startswith(_MID_ORIGINAL):
            out[_MID + key.removeprefix(_MID_ORIGINAL)] = value
        else:
            encoder[key] = value
    return out | unet_to_diffusers(encoder)


def controlnet_to_original(diffusers: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a ``ControlNetModel`` state dict to the original layout, ``control_model.`` keys
    (what the built-in tiny ControlNets are written as, to test the loader on that format)."""
    out: dict[str, Any] = {}
    encoder: dict[str, Any] = {}
    blocks = sorted(
        int(key.split(".")[2]) for key in diffusers if key.startswith(f"{_EMBED}blocks.")
    )
    count = len(set(blocks))
    hint_index = {"conv_in": 0, "conv_out": 2 * (count + 1)}
    hint_index |= {f"blocks.{j}": 2 * (j + 1) for j in range(count)}
    for key, value in diffusers.items():
        if key.startswith(_EMBED):
            module, _, kind = key.removeprefix(_EMBED).rpartition(".")
            out[f"input_hint_block.{hint_index[module]}.{kind}"] = value
        elif match := _DOWN.match(key):
            out[f"zero_convs.{match.group(1)}.0.{match.group(2)}"] = value
        elif key.startswith(_MID):
            out[_MID_ORIGINAL + key.removeprefix(_MID)] = value
        else:
            encoder[key] = value
    out |= unet_to_ldm(encoder)
    return {ORIGINAL_PREFIX + key: value for key, value in out.items()}
