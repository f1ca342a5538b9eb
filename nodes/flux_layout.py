"""Flux's original (Black Forest Labs) module names <-> diffusers' ``FluxTransformer2DModel``.

BFL's reference code, ComfyUI and kohya's trainer name Flux's layers
``double_blocks.N.img_attn.qkv``, ``single_blocks.N.linear1`` and so on; diffusers renames them
and splits the fused projections: a double block's ``qkv`` is diffusers' ``to_q``/``to_k``/
``to_v`` (``add_*_proj`` for the prompt stream), and a single block's ``linear1`` is
``to_q``/``to_k``/``to_v``/``proj_mlp`` stacked along the output dimension. The final layer's
adaLN modulation emits (shift, scale) where diffusers' ``AdaLayerNormContinuous`` wants
(scale, shift).

The table is written from diffusers' converters (``_convert_kohya_flux_lora_to_diffusers`` in
``loaders/lora_conversion_utils.py``), but the split sizes are read from the model instead of
being the real model's widths (3072 / 12288), so the same code serves any width.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["FluxModule", "flux_linear_modules", "is_flux_name"]

_TOP: tuple[tuple[str, str], ...] = (
    ("img_in", "x_embedder"),
    ("txt_in", "context_embedder"),
    ("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
    ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
    ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
    ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
    ("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
    ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2"),
    ("final_layer.linear", "proj_out"),
)
_DOUBLE: tuple[tuple[str, str | tuple[str, ...]], ...] = (
    ("img_attn.qkv", ("attn.to_q", "attn.to_k", "attn.to_v")),
    ("img_attn.proj", "attn.to_out.0"),
    ("img_mlp.0", "ff.net.0.proj"),
    ("img_mlp.2", "ff.net.2"),
    ("img_mod.lin", "norm1.linear"),
    ("txt_attn.qkv", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")),
    ("txt_attn.proj", "attn.to_add_out"),
    ("txt_mlp.0", "ff_context.net.0.proj"),
    ("txt_mlp.2", "ff_context.net.2"),
    ("txt_mod.lin", "norm1_context.linear"),
)
_SINGLE: tuple[tuple[str, str | tuple[str, ...]], ...] = (
    ("linear1", ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")),
    ("linear2", "proj_out"),
    ("modulation.lin", "norm.linear"),
)
_DOUBLE_BLOCK = re.compile(r"transformer_blocks\.(\d+)\.")
_SINGLE_BLOCK = re.compile(r"single_transformer_blocks\.(\d+)\.")
FLUX_BLOCK_PREFIXES = ("double_blocks", "single_blocks")


@dataclass(frozen=True)
class FluxModule:
    """One BFL linear layer as diffusers modules.

    ``parts`` are diffusers module names whose outputs, stacked in this order along the output
    dimension, are the BFL layer's output (one name for an unfused layer). ``swapped``: the BFL
    output is diffusers' with its two halves exchanged (the final (shift, scale) modulation).
    """

    bfl: str
    parts: tuple[str, ...]
    swapped: bool = False


def _count(names: Iterable[str], pattern: re.Pattern[str]) -> int:
    found = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    return max(found) + 1 if found else 0


def flux_linear_modules(diffusers_names: Iterable[str]) -> list[FluxModule]:
    """The BFL linear layers of a Flux transformer whose diffusers module names are given.

    The block counts come from the names (``transformer_blocks.N``,
    ``single_transformer_blocks.N``), so a tiny test model and the 19 + 38 block original get
    the same treatment.
    """
    names = list(diffusers_names)
    doubles = _count(names, _DOUBLE_BLOCK)
    singles = _count(names, _SINGLE_BLOCK)
    modules = [FluxModule(bfl, (ours,)) for bfl, ours in _TOP]
    modules.append(FluxModule("final_layer.adaLN_modulation.1", ("norm_out.linear",), swapped=True))
    for kind, count, rows, prefix in (
        ("double_blocks", doubles, _DOUBLE, "transformer_blocks"),
        ("single_blocks", singles, _SINGLE, "single_transformer_blocks"),
    ):
        for i in range(count):
            for bfl, ours in rows:
                parts = (ours,) if isinstance(ours, str) else ours
                modules.append(
                    FluxModule(f"{kind}.{i}.{bfl}", tuple(f"{prefix}.{i}.{p}" for p in parts))
                )
    present = set(names)
    return [m for m in modules if all(p in present for p in m.parts)]


def is_flux_name(name: str) -> bool:
    """Whether a (dotted or kohya-underscored) module name is a BFL Flux block name."""
    return name.startswith(FLUX_BLOCK_PREFIXES)
