"""Tiny random LoRAs for the tiny SD3 / Flux transformers, as diffusers' ``save_lora_weights``
writes them: ``transformer.<module>.lora_A/B.weight`` with the PEFT config (rank, alpha, targets)
in the ``lora_adapter_metadata`` header.

As in ``nodes.tiny_lora``: ``up`` is not zero and alpha != rank, so a loader that ignores the
alpha, misses a layer or swaps ``down`` and ``up`` gives another picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from nodes.tiny_lora import _random_pair, _targets, _weight_shapes

__all__ = ["write_tiny_kohya_flux_lora", "write_tiny_transformer_lora"]

TRANSFORMER_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
)  # fmt: skip
"""The joint attention's image and prompt projections (what SD3/Flux LoRA trainers target)."""


def write_tiny_transformer_lora(
    model_folder: str | Path, out: str | Path, *, seed: int = 0, rank: int = 4
) -> Path:
    """Write a random diffusers/PEFT-layout LoRA for ``model_folder``'s transformer to ``out``;
    alpha is rank / 2 (scale 0.5). The same arguments give byte-identical files."""
    shapes = _weight_shapes(Path(model_folder) / "transformer")
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name in _targets(shapes, TRANSFORMER_TARGETS):
        down, up = _random_pair(shapes[name], rank, gen)
        state[f"transformer.{name}.lora_A.weight"] = down.contiguous()
        state[f"transformer.{name}.lora_B.weight"] = up.contiguous()
    metadata = {
        "transformer.r": rank,
        "transformer.lora_alpha": rank / 2,
        "transformer.target_modules": sorted(TRANSFORMER_TARGETS),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": "pt", "lora_adapter_metadata": json.dumps(metadata, sort_keys=True)}
    save_file(state, out, metadata=header)
    return out


KOHYA_FLUX_DOUBLE = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn_proj": ("attn.to_out.0",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "img_mod_lin": ("norm1.linear",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn_proj": ("attn.to_add_out",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
    "txt_mod_lin": ("norm1_context.linear",),
}
"""kohya's Flux double-block layers and the diffusers modules whose stacked outputs they are
(written out here, apart from ``nodes.flux_layout``, so the fixture does not share its table)."""
KOHYA_FLUX_SINGLE = {
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
}
"""Single-block layers. ``linear1`` last: diffusers' converter splits it with the real model's
widths (3072 x 3 + 12288), so a file for a tiny model that diffusers must read leaves it out."""


def write_tiny_kohya_flux_lora(
    model_folder: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    rank: int = 4,
    linear1: bool = False,
) -> Path:
    """Write a random kohya-layout Flux LoRA (``lora_unet_double_blocks_0_img_attn_qkv...``,
    BFL module names, fused q/k/v) for ``model_folder``'s transformer to ``out``.

    Every double-block layer and the single blocks' ``linear2`` and ``modulation_lin`` (with
    ``linear1`` too if asked); alpha is rank / 2 (scale 0.5), stored as kohya stores it.
    """
    shapes = _weight_shapes(Path(model_folder) / "transformer")
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    singles = {k: v for k, v in KOHYA_FLUX_SINGLE.items() if linear1 or k != "linear1"}
    for block, prefix, layers in (
        ("double_blocks", "transformer_blocks", KOHYA_FLUX_DOUBLE),
        ("single_blocks", "single_transformer_blocks", singles),
    ):
        i = 0
        while f"{prefix}.{i}.{next(iter(layers.values()))[0]}" in shapes:
            for name, parts in layers.items():
                part_shapes = [shapes[f"{prefix}.{i}.{p}"] for p in parts]
                fused = (sum(s[0] for s in part_shapes), part_shapes[0][1])
                down, up = _random_pair(fused, rank, gen)
                key = f"lora_unet_{block}_{i}_{name}"
                state[f"{key}.lora_down.weight"] = down.contiguous()
                state[f"{key}.lora_up.weight"] = up.contiguous()
                state[f"{key}.alpha"] = torch.tensor(rank / 2)
            i += 1
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, out, metadata={"format": "pt"})
    return out
