"""SD3's original MMDiT key layout (Stability's ``sd3_medium*.safetensors``) <-> diffusers'
``SD3Transformer2DModel``, both directions from one table.

What differs besides names: the original fuses q, k and v into one ``qkv`` linear per attention
(diffusers has three), and the adaLN modulations of the final layer and of the last block's
prompt stream emit (shift, scale) where diffusers' ``AdaLayerNormContinuous`` wants (scale,
shift). The last block's prompt stream is "pre-only" (no output projection or MLP), and SD3.5's
MMDiT-X blocks add a second image attention (``attn2``) and RMS q/k norms (``ln_q``/``ln_k``).
Fused and split tensors are views or one ``cat``; nothing else is copied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

TOP = [
    ("x_embedder.proj", "pos_embed.proj"),
    ("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
    ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
    ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
    ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
    ("context_embedder", "context_embedder"),
    ("final_layer.linear", "proj_out"),
]
SWAPPED_TOP = [("final_layer.adaLN_modulation.1", "norm_out.linear")]
POS_EMBED = ("pos_embed", "pos_embed.pos_embed")
SUFFIXES = (".weight", ".bias")
_BLOCK = re.compile(r"joint_blocks\.(\d+)\.")
_DIFFUSERS_BLOCK = re.compile(r"transformer_blocks\.(\d+)\.")


def _block_rows(i: int, last: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(plain renames, scale/shift-swapped renames) of block ``i``, as (original, diffusers)."""
    o, d = f"joint_blocks.{i}.", f"transformer_blocks.{i}."
    plain = [
        (o + "x_block.attn.proj", d + "attn.to_out.0"),
        (o + "x_block.attn.ln_q", d + "attn.norm_q"),
        (o + "x_block.attn.ln_k", d + "attn.norm_k"),
        (o + "context_block.attn.ln_q", d + "attn.norm_added_q"),
        (o + "context_block.attn.ln_k", d + "attn.norm_added_k"),
        (o + "x_block.attn2.proj", d + "attn2.to_out.0"),
        (o + "x_block.attn2.ln_q", d + "attn2.norm_q"),
        (o + "x_block.attn2.ln_k", d + "attn2.norm_k"),
        (o + "x_block.adaLN_modulation.1", d + "norm1.linear"),
        (o + "x_block.mlp.fc1", d + "ff.net.0.proj"),
        (o + "x_block.mlp.fc2", d + "ff.net.2"),
    ]
    context_norm = (o + "context_block.adaLN_modulation.1", d + "norm1_context.linear")
    if last:  # pre-only: the prompt stream ends here, normed by AdaLayerNormContinuous
        return plain, [context_norm]
    plain += [
        context_norm,
        (o + "context_block.attn.proj", d + "attn.to_add_out"),
        (o + "context_block.mlp.fc1", d + "ff_context.net.0.proj"),
        (o + "context_block.mlp.fc2", d + "ff_context.net.2"),
    ]
    return plain, []


def _fused_rows(i: int) -> list[tuple[str, tuple[str, str, str]]]:
    o, d = f"joint_blocks.{i}.", f"transformer_blocks.{i}.attn"
    return [
        (o + "x_block.attn.qkv", (d + ".to_q", d + ".to_k", d + ".to_v")),
        (o + "context_block.attn.qkv", (d + ".add_q_proj", d + ".add_k_proj", d + ".add_v_proj")),
        (o + "x_block.attn2.qkv", (d + "2.to_q", d + "2.to_k", d + "2.to_v")),
    ]


def _layers(keys: Iterable[str], pattern: re.Pattern[str]) -> int:
    found = {int(m.group(1)) for key in keys if (m := pattern.match(key))}
    return max(found) + 1 if found else 0


def swap_scale_shift(tensor: Any) -> Any:
    """(shift, scale) halves <-> (scale, shift) halves along the output dimension."""
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _rows(layers: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[Any]]:
    plain, swapped, fused = list(TOP), list(SWAPPED_TOP), []
    for i in range(layers):
        block_plain, block_swapped = _block_rows(i, i == layers - 1)
        plain += block_plain
        swapped += block_swapped
        fused += _fused_rows(i)
    return plain, swapped, fused


def sd3_to_diffusers(original: Mapping[str, Any]) -> dict[str, Any]:
    """An MMDiT state dict (``model.diffusion_model.`` stripped) in diffusers' names.

    Every key must be used: a key left over means a layout this table does not know, which is
    an error rather than a silently missing weight."""
    import torch

    plain, swapped, fused = _rows(_layers(original, _BLOCK))
    out: dict[str, Any] = {}
    used: set[str] = set()

    def take(key: str) -> Any:
        used.add(key)
        return original[key]

    if POS_EMBED[0] in original:
        out[POS_EMBED[1]] = take(POS_EMBED[0])
    for rows, change in ((plain, None), (swapped, swap_scale_shift)):
        for source, target in rows:
            for suffix in SUFFIXES:
                if source + suffix in original:
                    value = take(source + suffix)
                    out[target + suffix] = change(value) if change else value
    for source, targets in fused:
        for suffix in SUFFIXES:
            if source + suffix in original:
                parts = torch.chunk(take(source + suffix), 3, dim=0)
                out.update({t + suffix: p for t, p in zip(targets, parts, strict=True)})
    left = sorted(set(original) - used)
    if left:
        raise ValueError(f"SD3 transformer: keys of no known layout: {left[:4]}")
    return out


def sd3_to_original(diffusers: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``sd3_to_diffusers``: diffusers' names in the original MMDiT layout."""
    import torch

    plain, swapped, fused = _rows(_layers(diffusers, _DIFFUSERS_BLOCK))
    out: dict[str, Any] = {}
    used: set[str] = set()
    if POS_EMBED[1] in diffusers:
        out[POS_EMBED[0]] = diffusers[POS_EMBED[1]]
        used.add(POS_EMBED[1])
    for rows, change in ((plain, None), (swapped, swap_scale_shift)):
        for source, target in rows:
            for suffix in SUFFIXES:
                if target + suffix in diffusers:
                    value = diffusers[target + suffix]
                    out[source + suffix] = change(value) if change else value
                    used.add(target + suffix)
    for source, targets in fused:
        for suffix in SUFFIXES:
            if targets[0] + suffix in diffusers:
                names = [t + suffix for t in targets]
                out[source + suffix] = torch.cat([diffusers[n] for n in names])
                used.update(names)
    left = sorted(set(diffusers) - used)
    if left:
        raise ValueError(f"SD3 transformer: diffusers keys with no original name: {left[:4]}")
    return out


def sd3_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """What an MMDiT's shapes say of its config (original layout); heads are 64 wide, as in
    every released SD3/SD3.5 model."""
    hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
    layers = _layers(state, _BLOCK)
    pos = int(state["pos_embed"].shape[1])
    return {
        "patch_size": int(patch),
        "in_channels": int(in_channels),
        "out_channels": int(state["final_layer.linear.weight"].shape[0]) // int(patch) ** 2,
        "num_layers": layers,
        "attention_head_dim": 64,
        "num_attention_heads": int(hidden) // 64,
        "caption_projection_dim": int(hidden),
        "joint_attention_dim": int(state["context_embedder.weight"].shape[1]),
        "pooled_projection_dim": int(state["y_embedder.mlp.0.weight"].shape[1]),
        "pos_embed_max_size": round(pos**0.5),
        "qk_norm": "rms_norm" if "joint_blocks.0.x_block.attn.ln_q.weight" in state else None,
        "dual_attention_layers": tuple(
            i for i in range(layers) if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in state
        ),
    }
