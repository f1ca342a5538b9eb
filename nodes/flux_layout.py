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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FluxModule",
    "flux_config",
    "flux_linear_modules",
    "flux_part_sizes",
    "flux_to_diffusers",
    "flux_to_original",
    "is_flux_name",
]

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


_NORMS: tuple[tuple[str, str, str], ...] = (
    ("double_blocks", "img_attn.norm.query_norm.scale", "attn.norm_q.weight"),
    ("double_blocks", "img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
    ("double_blocks", "txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
    ("double_blocks", "txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"),
    ("single_blocks", "norm.query_norm.scale", "attn.norm_q.weight"),
    ("single_blocks", "norm.key_norm.scale", "attn.norm_k.weight"),
)
_BFL_DOUBLE = re.compile(r"double_blocks\.(\d+)\.")
_BFL_SINGLE = re.compile(r"single_blocks\.(\d+)\.")
_DIFFUSERS_PREFIX = {
    "double_blocks": "transformer_blocks",
    "single_blocks": "single_transformer_blocks",
}


def _diffusers_module_names(original: Mapping[str, Any]) -> list[str]:
    """The diffusers linear-module names a BFL state dict implies (block counts from its keys),
    used to look the table up from the BFL side."""
    doubles, singles = _count(original, _BFL_DOUBLE), _count(original, _BFL_SINGLE)
    names = [ours for _, ours in _TOP] + ["norm_out.linear"]
    for prefix, count, rows in (
        ("transformer_blocks", doubles, _DOUBLE),
        ("single_transformer_blocks", singles, _SINGLE),
    ):
        for i in range(count):
            for _, ours in rows:
                names += [f"{prefix}.{i}.{p}" for p in ((ours,) if isinstance(ours, str) else ours)]
    return names


def _norm_rows(original_keys: Iterable[str]) -> list[tuple[str, str]]:
    keys = list(original_keys)
    counts = {
        "double_blocks": _count(keys, _BFL_DOUBLE),
        "single_blocks": _count(keys, _BFL_SINGLE),
    }
    return [
        (f"{kind}.{i}.{bfl}", f"{_DIFFUSERS_PREFIX[kind]}.{i}.{ours}")
        for kind, bfl, ours in _NORMS
        for i in range(counts[kind])
    ]


def flux_to_diffusers(original: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
    """A BFL Flux transformer state dict (prefix stripped) in diffusers' names.

    ``sizes``: {diffusers module: output width} for the fused layers' parts, which the file
    cannot tell apart (``flux_part_sizes``). Every key must be used: a key left over means a
    layout this table does not know, an error rather than a silently missing weight.
    """
    import torch

    from nodes.mmdit_layout import swap_scale_shift

    out: dict[str, Any] = {}
    used: set[str] = set()
    for module in flux_linear_modules(_diffusers_module_names(original)):
        for suffix in (".weight", ".bias"):
            key = module.bfl + suffix
            if key not in original:
                continue
            used.add(key)
            value = original[key]
            if module.swapped:
                value = swap_scale_shift(value)
            if len(module.parts) == 1:
                out[module.parts[0] + suffix] = value
                continue
            widths = [sizes[p] for p in module.parts]
            for part, piece in zip(module.parts, torch.split(value, widths), strict=True):
                out[part + suffix] = piece
    for bfl, ours in _norm_rows(original):
        if bfl in original:
            used.add(bfl)
            out[ours] = original[bfl]
    left = sorted(set(original) - used)
    if left:
        shown = ", ".join(left[:5])
        raise ValueError(f"unknown Flux transformer keys: {shown} ({len(left)} in all)")
    return out


def flux_to_original(diffusers: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers Flux transformer state dict in BFL names (fused layers concatenated)."""
    import torch

    from nodes.mmdit_layout import swap_scale_shift

    names = {key.rsplit(".", 1)[0] for key in diffusers}
    out: dict[str, Any] = {}
    for module in flux_linear_modules(names):
        for suffix in (".weight", ".bias"):
            if module.parts[0] + suffix not in diffusers:
                continue
            value = torch.cat([diffusers[p + suffix] for p in module.parts], dim=0)
            out[module.bfl + suffix] = swap_scale_shift(value) if module.swapped else value
    counts = {
        "double_blocks": _count(diffusers, _DOUBLE_BLOCK),
        "single_blocks": _count(diffusers, _SINGLE_BLOCK),
    }
    for kind, bfl, ours in _NORMS:
        for i in range(counts[kind]):
            out[f"{kind}.{i}.{bfl}"] = diffusers[f"{_DIFFUSERS_PREFIX[kind]}.{i}.{ours}"]
    return out


def flux_config(original: Mapping[str, Any]) -> dict[str, Any]:
    """``FluxTransformer2DModel`` sizes from a BFL state dict's shapes.

    The split of the head width into rotary axes (``axes_dims_rope``) is not in the shapes; it
    stays the shipped config's unless the file's metadata says otherwise.
    """
    head_dim = int(original["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0])
    inner, in_channels = (int(n) for n in original["img_in.weight"].shape)
    return {
        "in_channels": in_channels,
        "out_channels": int(original["final_layer.linear.weight"].shape[0]),
        "num_layers": _count(original, _BFL_DOUBLE),
        "num_single_layers": _count(original, _BFL_SINGLE),
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": int(original["txt_in.weight"].shape[1]),
        "pooled_projection_dim": int(original["vector_in.in_layer.weight"].shape[1]),
        "guidance_embeds": "guidance_in.in_layer.weight" in original,
    }


def flux_part_sizes(config: Mapping[str, Any], num_single_layers: int) -> dict[str, int]:
    """{diffusers module: output width} of the single blocks' fused ``linear1`` parts and the
    double blocks' q/k/v, from a ``FluxTransformer2DModel`` config (MLP ratio 4, as diffusers)."""
    inner = int(config["attention_head_dim"]) * int(config["num_attention_heads"])
    sizes: dict[str, int] = {}
    for i in range(int(config["num_layers"])):
        for part in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            sizes[f"transformer_blocks.{i}.attn.{part}"] = inner
    for i in range(num_single_layers):
        for part in ("attn.to_q", "attn.to_k", "attn.to_v"):
            sizes[f"single_transformer_blocks.{i}.{part}"] = inner
        sizes[f"single_transformer_blocks.{i}.proj_mlp"] = 4 * inner
    return sizes
