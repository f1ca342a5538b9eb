"""T2I-Adapters: a small network that turns the control image into features for the U-Net.

Unlike a ControlNet, an adapter never sees the latents or the prompt: it reads the control image
once per run, and its features (times the strength) are added inside the U-Net's down blocks
(diffusers' ``down_intrablock_additional_residuals``). It rides on the same ``ControlNet`` socket
with ``kind`` ``t2i_adapter`` (ComfyUI's ControlNetLoader loads both too), so ``LoadControlNet``,
``ApplyControlNet`` (strength, and the start/end window: at start 0 it is diffusers' SDXL
``adapter_conditioning_factor``), chaining with ControlNets, and the ComfyUI importer need no new
node.

Files: a diffusers folder (``config.json`` of a ``T2IAdapter``), or one file in diffusers' layout
(``adapter.`` keys) or TencentARC's original one (``body.N.block1``..., as their ``.pth`` files;
``.pth`` only when pickles are allowed). A file's architecture is read from its tensor shapes:
the pixel-unshuffle factor from ``conv_in`` (8 for SD 1.x/2.x adapters, 16 for SDXL's
``full_adapter_xl``, whose second block does not downsample), the blocks per level from where the
channels first change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodes import hf
from nodes.control import ADAPTER, ControlNet, unet_family

XL_UNSHUFFLE = 16
"""SDXL's adapters unshuffle 16x16 pixels (their first two levels share one resolution)."""


def is_adapter_folder(folder: Path) -> bool:
    """Whether ``folder/config.json`` describes a diffusers ``T2IAdapter``."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("_class_name") == "T2IAdapter"


def is_adapter(keys: Any) -> bool:
    """Whether a file's tensor names are a T2I-Adapter's (either layout)."""
    keys = set(keys)
    return "adapter.conv_in.weight" in keys or (
        "conv_in.weight" in keys and "body.0.block1.weight" in keys
    )


def adapter_family(config: Mapping[str, Any]) -> str:
    """``sdxl`` for SDXL's adapter type, else ``sd1`` (an adapter never sees the text, so one
    made for SD 1.x fits a 2.x U-Net of the same shape)."""
    return "sdxl" if config.get("adapter_type") == "full_adapter_xl" else "sd1"


def load_adapter_folder(folder: Path, dtype: Any, source: Path) -> ControlNet:
    """A diffusers ``T2IAdapter`` folder, offline."""
    model = hf.diffusers().T2IAdapter.from_pretrained(
        folder, torch_dtype=dtype, local_files_only=True
    )
    model.eval().requires_grad_(False)
    return ControlNet(model, adapter_family(model.config), source=str(source), kind=ADAPTER)


def load_adapter_state(state: Mapping[str, Any], path: Path) -> ControlNet:
    """A T2I-Adapter from a file's tensors (either layout), built on the meta device and the
    tensors assigned into it."""
    from nodes.single_file import _materialise

    if "adapter.conv_in.weight" not in state:
        state = original_to_diffusers(state)
    config = adapter_config(state, path)
    make = hf.diffusers().T2IAdapter.from_config
    model = _materialise(lambda: make(config), state, f"T2I-Adapter {path.name}")
    return ControlNet(model, adapter_family(config), source=str(path), kind=ADAPTER)


def _level_sizes(state: Mapping[str, Any], pattern: str) -> list[int]:
    """How many residual blocks each level has, from keys ``pattern`` (level, block)."""
    regex = re.compile(pattern)
    counts: dict[int, set[int]] = {}
    for key in state:
        if match := regex.match(key):
            counts.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    return [len(counts[level]) for level in sorted(counts)]


def original_to_diffusers(state: Mapping[str, Any]) -> dict[str, Any]:
    """TencentARC's layout (``body.K`` for block K of all levels in a row, ``in_conv`` where
    the channels change) renamed to diffusers' (``adapter.body.LEVEL.resnets.J``)."""
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))})
    if any(k.startswith("body.") and ".skep." in k for k in state):
        raise ValueError("a T2I-Adapter with skip convolutions (sk=False) is not supported")
    first_change = next((b for b in blocks if f"body.{b}.in_conv.weight" in state), len(blocks))
    per_level = first_change
    if per_level == 0 or len(blocks) % per_level:
        raise ValueError(f"cannot read the adapter's levels from {len(blocks)} blocks")
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        if match := re.match(r"body\.(\d+)\.(.*)", key):
            level, block = divmod(int(match.group(1)), per_level)
            rest = match.group(2)
            if rest.startswith("in_conv."):
                renamed[f"adapter.body.{level}.{rest}"] = value
            else:
                renamed[f"adapter.body.{level}.resnets.{block}.{rest}"] = value
        else:
            renamed[f"adapter.{key}"] = value
    return renamed


def adapter_config(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A ``T2IAdapter`` config for a diffusers-layout state dict."""
    import math

    sizes = _level_sizes(state, r"adapter\.body\.(\d+)\.resnets\.(\d+)\.block1\.weight")
    if not sizes or len(set(sizes)) != 1:
        raise ValueError(f"{path.name}: a T2I-Adapter with uneven levels {sizes} (light adapter?)")
    channels = [
        int(state[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in range(len(sizes))
    ]
    unshuffled = int(state["adapter.conv_in.weight"].shape[1])
    in_channels = 3 if math.isqrt(unshuffled // 3) ** 2 * 3 == unshuffled else 1
    factor = math.isqrt(unshuffled // in_channels)
    if factor * factor * in_channels != unshuffled:
        raise ValueError(f"{path.name}: conv_in takes {unshuffled} channels, no pixel unshuffle")
    return {
        "in_channels": in_channels,
        "channels": channels,
        "num_res_blocks": sizes[0],
        "downscale_factor": factor,
        "adapter_type": "full_adapter_xl" if factor >= XL_UNSHUFFLE else "full_adapter",
    }


def adapter_features(net: ControlNet, image: Any, sample: Any) -> tuple[Any, ...]:
    """The adapter's features of ``image`` ([batch, 3, h, w] in 0..1; averaged to grey for a
    one-channel adapter, as ComfyUI does), in ``sample``'s device and dtype."""
    model = net.model
    if int(model.config.in_channels) == 1 and image.shape[1] != 1:
        image = image.mean(dim=1, keepdim=True)
    features = model(image.to(sample.device, model.dtype))
    return tuple(feature.to(sample.dtype) for feature in features)


def check_adapter_fits(unet: Any, net: ControlNet, name: str) -> None:
    """Refuse an adapter of another family than the U-Net (SDXL or not) or of other channels,
    naming both, before sampling rather than as a shape error inside the U-Net."""
    config = unet.model.config
    family = unet_family(config)
    where = f" ({net.source})" if net.source else ""
    if (net.family == "sdxl") != (family == "sdxl"):
        raise ValueError(
            f"{name}: the T2I-Adapter{where} is made for {net.family} models, but this U-Net is "
            f"{family}; load an adapter of the model's family"
        )
    ours = [int(c) for c in config.block_out_channels]
    theirs = [int(c) for c in net.model.config.channels]
    if theirs[: len(ours)] != ours:
        raise ValueError(
            f"{name}: the T2I-Adapter{where} does not fit this {family} U-Net (channels "
            f"{theirs} against the U-Net's {ours})"
        )
