"""Flux transformers as single files in Black Forest Labs' layout (``flux1-dev.safetensors``,
what ComfyUI's UNETLoader reads), loaded offline into diffusers' ``FluxTransformer2DModel``.

The file holds the transformer only, under BFL names (``double_blocks.N.img_attn.qkv.weight``),
bare or under ``model.diffusion_model.``; the text encoders and the ``ae`` VAE ship as separate
files. Sizes come from the shapes (``nodes.flux_layout.flux_config``); what shapes cannot tell
(the rotary axes split) comes from the shipped Flux.1 config or the file's
``nodeflow.architecture`` metadata. Weights are assigned into a module built on the meta device.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodes import hf
from nodes.single_file import (
    UNET_PREFIX,
    CheckpointFile,
    _materialise,
    family_config,
    stored_architecture,
)

MARKS = ("double_blocks.0.img_attn.qkv.weight", UNET_PREFIX + "double_blocks.0.img_attn.qkv.weight")


def is_flux_file(keys: list[str]) -> bool:
    """A BFL-layout Flux transformer (bare keys, or under ``model.diffusion_model.``)."""
    return any(key in MARKS for key in keys)


def build_flux_transformer(
    original: Mapping[str, Any], stored: Mapping[str, Any] | None, source: str
) -> Any:
    """``FluxTransformer2DModel`` from a BFL state dict (prefix stripped)."""
    from nodes.flux_layout import flux_config, flux_part_sizes, flux_to_diffusers

    config = family_config("flux", "transformer") | flux_config(original) | dict(stored or {})
    config.pop("_class_name", None)
    try:
        state = flux_to_diffusers(original, flux_part_sizes(config, config["num_single_layers"]))
    except ValueError as exc:
        raise ValueError(f"{Path(source).name}: {exc}") from exc
    cls = hf.diffusers().FluxTransformer2DModel
    return _materialise(lambda: cls.from_config(config), state, f"{Path(source).name}: Flux")


def load_flux_transformer(path: Path, dtype: Any, allow_pickle: bool = False) -> Any:
    """The transformer of a BFL Flux file as a ``UNet`` (LoadUNet), with Flux's scheduler and
    family adapter; the latent scale is the real ``ae``'s 8 unless the metadata says otherwise."""
    from nodes.families.flux import FluxTransformer
    from nodes.types import UNet

    file = CheckpointFile(path, allow_pickle=allow_pickle)
    prefix = UNET_PREFIX if any(k.startswith(UNET_PREFIX) for k in file.keys) else ""
    stored = stored_architecture(file)
    model = build_flux_transformer(file.read(prefix, dtype), stored.get("unet"), str(path))
    vae = stored.get("vae")
    scale = 2 ** (len(vae["block_out_channels"]) - 1) if vae and "block_out_channels" in vae else 8
    guidance = bool(model.config.guidance_embeds)
    return UNet(
        model,
        flux_scheduler(guidance),
        latent_scale=scale,
        source=str(path),
        family=FluxTransformer(guidance_embedded=guidance),
    )


def flux_scheduler(guidance_embedded: bool) -> dict[str, Any]:
    """Flux.1 dev's scheduler (shift from the picture's token count), or, for a model without
    a guidance embedding (schnell, timestep-distilled), a fixed shift of 1 and no dynamic
    shifting, as FLUX.1-schnell's scheduler config and ComfyUI's ``FluxSchnell`` have it."""
    config = family_config("flux", "scheduler")
    if guidance_embedded:
        return config
    return config | {"shift": 1.0, "use_dynamic_shifting": False}
