"""A tiny SD3 diffusers folder written as the single file Stability publishes
(``sd3_medium_incl_clips_t5xxlfp16.safetensors`` layout), for the single-file loader's tests.

The transformer goes into the original MMDiT names (``nodes.mmdit_layout``), the VAE into LDM
names, the text encoders under ``text_encoders.clip_l|clip_g|t5xxl.transformer.`` with CLIP-L's
projection left out (released files have none; it is the identity). The folder's configs ride
along as ``nodeflow.architecture`` metadata, since a tiny model's heads and T5 attention distance
cannot be told from its shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from nodes.tiny import _load_state

__all__ = [
    "write_flux_ae_file",
    "write_flux_text_encoder_files",
    "write_flux_transformer_file",
    "write_sd3_single_file",
    "write_sd3_text_encoder_files",
]


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def write_sd3_single_file(
    folder: str | Path, out: str | Path, *, text_encoders: bool = True
) -> Path:
    """Write the SD3 model folder ``folder`` as one original-layout file at ``out``;
    ``text_encoders=False`` writes the transformer and VAE only (``sd3_medium.safetensors``)."""
    from nodes.ldm_layout import vae_to_ldm
    from nodes.mmdit_layout import sd3_to_original
    from nodes.sd3_single_file import TEXT_PREFIXES
    from nodes.single_file import ARCHITECTURE_KEY, UNET_PREFIX, VAE_PREFIX, hf_text_state

    folder, out = Path(folder), Path(out)
    state: dict[str, Any] = {}
    for key, value in sd3_to_original(_load_state(folder / "transformer")).items():
        state[UNET_PREFIX + key] = value
    for key, value in vae_to_ldm(_load_state(folder / "vae")).items():
        state[VAE_PREFIX + key] = value
    architecture = {"unet": _config(folder / "transformer"), "vae": _config(folder / "vae")}
    parts = ("text_encoder", "text_encoder_2", "text_encoder_3") if text_encoders else ()
    for part in parts:
        if not (folder / part).is_dir():
            continue
        weights = _load_state(folder / part)
        if part != "text_encoder_3":
            weights = hf_text_state(weights)
        if part == "text_encoder":
            weights.pop("text_projection.weight")
        if part == "text_encoder_3":  # transformers saves the tied input embedding once
            weights.setdefault("encoder.embed_tokens.weight", weights["shared.weight"].clone())
        for key, value in weights.items():
            state[TEXT_PREFIXES[part] + key] = value
        architecture[part] = _config(folder / part)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in state.items()}
    metadata = {"format": "pt", ARCHITECTURE_KEY: json.dumps(architecture, sort_keys=True)}
    save_file(state, out, metadata=metadata)
    return out


def write_flux_transformer_file(folder: str | Path, out: str | Path) -> Path:
    """Write the Flux folder ``folder``'s transformer as a BFL-layout file at ``out`` (bare
    ``double_blocks.N...`` keys, as ``flux1-dev.safetensors``), its config and the VAE's as
    ``nodeflow.architecture`` metadata (a tiny model's rotary axes and latent scale are not in
    the transformer's shapes)."""
    from nodes.flux_layout import flux_to_original
    from nodes.single_file import ARCHITECTURE_KEY

    folder, out = Path(folder), Path(out)
    state = flux_to_original(_load_state(folder / "transformer"))
    architecture = {"unet": _config(folder / "transformer"), "vae": _config(folder / "vae")}
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", ARCHITECTURE_KEY: json.dumps(architecture, sort_keys=True)}
    save_file({k: v.contiguous() for k, v in state.items()}, out, metadata=metadata)
    return out


def write_flux_ae_file(folder: str | Path, out: str | Path) -> Path:
    """Write the Flux folder ``folder``'s VAE as BFL's ``ae.safetensors``: bare LDM names
    (``encoder.down.0...``), no quant convs, and no metadata (the real file has none)."""
    from nodes.ldm_layout import vae_to_ldm

    folder, out = Path(folder), Path(out)
    state = vae_to_ldm(_load_state(folder / "vae"))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out, metadata={"format": "pt"})
    return out


def write_flux_text_encoder_files(
    folder: str | Path, clip_out: str | Path, t5_out: str | Path
) -> tuple[Path, Path]:
    """Write the Flux folder ``folder``'s text encoders as ComfyUI's ``clip_l.safetensors``
    (transformers names under ``text_model.``) and ``t5xxl.safetensors`` (transformers names);
    the T5 config rides along as ``text_encoder_3`` metadata (its attention distance is not in
    the shapes of a tiny model)."""
    from nodes.single_file import ARCHITECTURE_KEY, hf_text_state

    folder, clip_out, t5_out = Path(folder), Path(clip_out), Path(t5_out)
    clip = hf_text_state(_load_state(folder / "text_encoder"))
    t5 = _load_state(folder / "text_encoder_2")
    t5.setdefault("encoder.embed_tokens.weight", t5["shared.weight"].clone())
    architecture = {"text_encoder_3": _config(folder / "text_encoder_2")}
    for out, state, metadata in (
        (clip_out, clip, {"format": "pt"}),
        (t5_out, t5, {"format": "pt", ARCHITECTURE_KEY: json.dumps(architecture, sort_keys=True)}),
    ):
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, out, metadata=metadata)
    return clip_out, t5_out


def write_sd3_text_encoder_files(
    folder: str | Path, clip_l_out: str | Path, clip_g_out: str | Path, t5_out: str | Path
) -> tuple[Path, Path, Path]:
    """Write the SD3 folder ``folder``'s text encoders as ComfyUI's ``clip_l.safetensors``,
    ``clip_g.safetensors`` (transformers names under ``text_model.``, CLIP-L without its
    identity projection, as released) and ``t5xxl_fp16.safetensors`` (transformers names).
    Each file's config rides along as ``nodeflow.architecture`` metadata: a tiny model's heads
    and T5 attention distance are not in its shapes."""
    from nodes.single_file import ARCHITECTURE_KEY, hf_text_state

    folder = Path(folder)
    outs = (Path(clip_l_out), Path(clip_g_out), Path(t5_out))
    for part, out in zip(("text_encoder", "text_encoder_2", "text_encoder_3"), outs, strict=True):
        state = _load_state(folder / part)
        if part == "text_encoder_3":  # transformers saves the tied input embedding once
            state.setdefault("encoder.embed_tokens.weight", state["shared.weight"].clone())
        else:
            state = hf_text_state(state)
        if part == "text_encoder":
            state.pop("text_projection.weight")
        architecture = json.dumps({part: _config(folder / part)}, sort_keys=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"format": "pt", ARCHITECTURE_KEY: architecture}
        save_file({k: v.contiguous() for k, v in state.items()}, out, metadata=metadata)
    return outs
