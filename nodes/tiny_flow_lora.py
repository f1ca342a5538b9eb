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

__all__ = ["write_tiny_transformer_lora"]

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
