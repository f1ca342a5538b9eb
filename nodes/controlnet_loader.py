"""Reading a ControlNet offline: a diffusers folder, or one file in either layout.

T2I-Adapters load through here too (``nodes.t2i_adapter``), as ComfyUI's ControlNetLoader does.

A folder (``config.json`` + weights, or a model folder's ``controlnet/``) goes through
``ControlNetModel.from_pretrained`` with no hub access. A single file (``.safetensors``, or a
``.pth``/``.ckpt`` only when pickles are allowed) is read through ``nodes.single_file``'s reader;
original-layout keys are renamed (``nodes.controlnet_layout``), the architecture is read from the
tensor shapes plus the family's real U-Net config (heads, norms: what weights cannot tell), and
the model is built on the meta device with the file's tensors assigned into it, as every other
single-file loader here does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodes import hf
from nodes.control import ControlNet, unet_family
from nodes.controlnet_layout import controlnet_to_diffusers, is_controlnet, is_original
from nodes.single_file import CheckpointFile, _materialise, family_config
from nodes.t2i_adapter import (
    is_adapter,
    is_adapter_folder,
    load_adapter_folder,
    load_adapter_state,
)


def load_controlnet_at(location: Path, dtype: Any, allow_pickle: bool) -> ControlNet:
    """The ControlNet at ``location`` (a folder or a file), in ``dtype``, on the CPU."""
    folder = _folder(location)
    if folder is not None and is_adapter_folder(folder):
        return load_adapter_folder(folder, dtype, location)
    if folder is not None:
        from nodes.loaders import quiet_hub_libraries

        quiet_hub_libraries()
        model = hf.diffusers().ControlNetModel.from_pretrained(
            folder, torch_dtype=dtype, local_files_only=True
        )
        model.eval().requires_grad_(False)
        return ControlNet(model, unet_family(model.config), source=str(location))
    if location.is_dir():
        raise ValueError(f"{location}: no ControlNet folder (no config.json, no controlnet/)")
    return _load_file(location, dtype, allow_pickle)


def _folder(location: Path) -> Path | None:
    for candidate in (location, location / "controlnet"):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _load_file(path: Path, dtype: Any, allow_pickle: bool) -> ControlNet:
    file = CheckpointFile(path, allow_pickle=allow_pickle)
    if is_adapter(file.keys):
        return load_adapter_state(file.read("", dtype), path)
    if not is_controlnet(file.keys):
        raise ValueError(
            f"{path.name} holds no ControlNet or T2I-Adapter (no input_hint_block, "
            "controlnet_cond_embedding or adapter weights); a U-Net or checkpoint goes to "
            "LoadCheckpoint or LoadUNet"
        )
    state = file.read("", dtype)
    if is_original(state):
        state = controlnet_to_diffusers(state)
    family = _family(state)
    config = controlnet_config(state, family)
    make = hf.diffusers().ControlNetModel.from_config
    model = _materialise(lambda: make(config), state, f"ControlNet {path.name}")
    return ControlNet(model, family, source=str(path))


def _family(state: Mapping[str, Any]) -> str:
    if "add_embedding.linear_1.weight" in state:
        return "sdxl"
    proj = next((v for k, v in state.items() if k.endswith("proj_in.weight")), None)
    return "sd2" if proj is not None and proj.ndim == 2 else "sd1"


def _count(state: Mapping[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state if (m := regex.match(key))})


def controlnet_config(state: Mapping[str, Any], family: str) -> dict[str, Any]:
    """A ``ControlNetModel`` config for a diffusers-layout state dict of ``family``."""
    unet = family_config(family, "unet")
    levels = _count(state, r"down_blocks\.(\d+)\.")
    channels = [
        int(state[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)
    ]
    attention = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in state) for i in
                 range(levels)]  # fmt: skip
    depth = [
        _count(state, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") or 1
        for i in range(levels)
    ]
    embedding = [int(state["controlnet_cond_embedding.conv_in.weight"].shape[0])]
    blocks = _count(state, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    embedding += [
        int(state[f"controlnet_cond_embedding.blocks.{j}.weight"].shape[0])
        for j in range(1, blocks, 2)
    ]
    proj = next(v for k, v in state.items() if k.endswith("proj_in.weight"))
    to_k = next(v for k, v in state.items() if k.endswith("attn2.to_k.weight"))
    config = unet | {
        "block_out_channels": channels,
        "layers_per_block": _count(state, r"down_blocks\.0\.resnets\.(\d+)\."),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "in_channels": int(state["conv_in.weight"].shape[1]),
        "conditioning_channels": int(state["controlnet_cond_embedding.conv_in.weight"].shape[1]),
        "conditioning_embedding_out_channels": embedding,
        "cross_attention_dim": int(to_k.shape[1]),
        "use_linear_projection": proj.ndim == 2,
        "attention_head_dim": 8 if family == "sd1" else [max(1, c // 64) for c in channels],
        "transformer_layers_per_block": depth if any(d != 1 for d in depth) else 1,
    }
    if "add_embedding.linear_1.weight" in state:
        embedding_in = int(state["add_embedding.linear_1.weight"].shape[1])
        real = 6 * unet["addition_time_embed_dim"]
        pooled = embedding_in - real if embedding_in > real else config["cross_attention_dim"] // 2
        config |= {
            "addition_embed_type": "text_time",
            "projection_class_embeddings_input_dim": embedding_in,
            "addition_time_embed_dim": (embedding_in - pooled) // 6,
        }
    else:
        config |= {"addition_embed_type": None, "projection_class_embeddings_input_dim": None}
    accepted = inspect.signature(hf.diffusers().ControlNetModel.__init__).parameters
    return {key: value for key, value in config.items() if key in accepted}
