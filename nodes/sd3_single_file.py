"""SD3 / SD3.5 single files as Stability publishes them (``sd3_medium_incl_clips_t5xxlfp16``,
``sd3.5_medium``...), read offline into the same models a diffusers folder gives.

Layout: the MMDiT under ``model.diffusion_model.`` (original names, ``nodes.mmdit_layout``), the
16-channel VAE under ``first_stage_model.`` (LDM names), and, in the ``incl_clips`` files, the
text encoders under ``text_encoders.clip_l|clip_g|t5xxl.transformer.`` (transformers names). A
file without text encoders loads as a denoiser and VAE; its prompts then need LoadTextEncoder.
Sizes come from the tensor shapes, everything else from the real configs in
``nodes/configs/sd3/`` (or the file's ``nodeflow.architecture`` metadata). CLIP-L carries no
projection in these files: SD3 uses its pooled output as is, so the identity goes there (as
diffusers' ``from_single_file`` does). Weights are assigned into modules built on the meta
device, never copied (``nodes.single_file``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nodes import hf
from nodes.clip_vocab import EOS_TOKEN, clip_tokenizer
from nodes.single_file import (
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointFile,
    _materialise,
    build_text_encoder,
    build_vae,
    family_config,
    hf_text_state,
    stored_architecture,
)

TEXT_PREFIXES = {
    "text_encoder": "text_encoders.clip_l.transformer.",
    "text_encoder_2": "text_encoders.clip_g.transformer.",
    "text_encoder_3": "text_encoders.t5xxl.transformer.",
}
MARK = UNET_PREFIX + "joint_blocks."


def is_sd3_file(keys: list[str]) -> bool:
    return any(key.startswith(MARK) for key in keys)


def _has(file: CheckpointFile, prefix: str) -> bool:
    return any(key.startswith(prefix) for key in file.keys)


def build_sd3_transformer(
    original: dict[str, Any], stored: Mapping[str, Any] | None = None
) -> Any:
    """``SD3Transformer2DModel`` from an original-layout MMDiT state dict (prefix stripped)."""
    from nodes.mmdit_layout import sd3_config, sd3_to_diffusers

    config = family_config("sd3", "transformer") | sd3_config(original) | dict(stored or {})
    config.pop("_class_name", None)
    state = sd3_to_diffusers(original)
    cls = hf.diffusers().SD3Transformer2DModel
    return _materialise(lambda: cls.from_config(config), state, "SD3 transformer")


def _t5_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """T5 encoder sizes from its shapes (heads from the relative attention bias table)."""
    bias = state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    buckets, heads = (int(n) for n in bias.shape)
    query = state["encoder.block.0.layer.0.SelfAttention.q.weight"]
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    return {
        "vocab_size": int(state["shared.weight"].shape[0]),
        "d_model": int(state["shared.weight"].shape[1]),
        "num_heads": heads,
        "relative_attention_num_buckets": buckets,
        "d_kv": int(query.shape[0]) // heads,
        "d_ff": int(state["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]),
        "num_layers": max(layers) + 1,
    }


def build_t5(state: dict[str, Any], stored: Mapping[str, Any] | None = None) -> Any:
    """``T5EncoderModel`` from a transformers-layout state dict; the input embedding is the
    shared one (files keep it once)."""
    transformers = hf.transformers()
    config = family_config("sd3", "text_encoder_3") | _t5_config(state) | dict(stored or {})
    state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])
    t5_config = transformers.T5Config(**config)
    return _materialise(lambda: transformers.T5EncoderModel(t5_config), state, "T5 encoder")


def _read_transformer(file: CheckpointFile, dtype: Any, fp8: bool, stored: Any) -> Any:
    from nodes.fp8 import fp8_linear_weights, store_fp8

    chosen = fp8_linear_weights(dtype) if fp8 else dtype
    model = build_sd3_transformer(file.read(UNET_PREFIX, chosen), stored.get("unet"))
    if fp8:
        store_fp8(model, dtype)
    return model


def load_sd3_file(
    path: Path, dtype: Any, allow_pickle: bool = False, fp8: bool = False
) -> tuple[Any, Any, Any]:
    """(UNet, TextEncoder, VAE) of an SD3 single file; parts the file lacks are ``None``
    (no VAE), or a TextEncoder without models (no text encoders). ``fp8``: the transformer's
    linear weights are read straight into fp8 storage (``nodes.fp8``), computed in ``dtype``."""
    import torch

    from nodes.flow_text import SD3Prompt
    from nodes.ldm_layout import vae_to_diffusers
    from nodes.t5 import t5_tokenizer
    from nodes.types import VAE, TextEncoder

    file = CheckpointFile(path, allow_pickle=allow_pickle)
    stored = stored_architecture(file)
    model = _read_transformer(file, dtype, fp8, stored)
    vae = None
    if _has(file, VAE_PREFIX):
        state = vae_to_diffusers(file.read(VAE_PREFIX, dtype))
        vae = VAE(build_vae(state, "sd3", stored=stored.get("vae")), source=str(path))  # type: ignore[arg-type]
    encoders: dict[str, Any] = {}
    for part in ("text_encoder", "text_encoder_2"):
        if not _has(file, TEXT_PREFIXES[part]):
            continue
        state = hf_text_state(file.read(TEXT_PREFIXES[part], dtype))
        if "text_projection.weight" not in state:  # CLIP-L: SD3 takes its pooled output as is
            width = int(state["text_model.embeddings.token_embedding.weight"].shape[1])
            state["text_projection.weight"] = torch.eye(width, dtype=dtype)
        base = family_config("sd3", part)
        encoders[part] = build_text_encoder(state, base, projection=True, stored=stored.get(part))
    if _has(file, TEXT_PREFIXES["text_encoder_3"]):
        state = file.read(TEXT_PREFIXES["text_encoder_3"], dtype)
        encoders["text_encoder_3"] = build_t5(state, stored.get("text_encoder_3"))
    if encoders and len(encoders.keys() & {"text_encoder", "text_encoder_2"}) != 2:
        raise ValueError(f"{path.name}: an SD3 file with text encoders must hold CLIP-L and CLIP-G")
    text_encoder = TextEncoder(
        clip_tokenizer(EOS_TOKEN) if encoders else None,
        encoders.get("text_encoder"),
        tokenizer_2=clip_tokenizer("!") if encoders else None,
        model_2=encoders.get("text_encoder_2"),
        tokenizer_3=t5_tokenizer() if "text_encoder_3" in encoders else None,
        model_3=encoders.get("text_encoder_3"),
        prompt_format=SD3Prompt(joint_width=int(model.config.joint_attention_dim)),
        source=str(path),
    )
    latent_scale = vae.scale_factor if vae is not None else 8
    return sd3_unet(model, path, latent_scale), text_encoder, vae


def sd3_unet(model: Any, path: Path, latent_scale: int = 8) -> Any:
    """The ``UNet`` socket value of an SD3 transformer read from ``path``; the latent scale is
    the real SD3 VAE's 8 unless the file's own VAE says otherwise."""
    from nodes.families.sd3 import SD3Transformer
    from nodes.types import UNet

    return UNet(
        model,
        family_config("sd3", "scheduler"),
        latent_scale=latent_scale,
        source=str(path),
        family=SD3Transformer(),
    )


def load_sd3_transformer(path: Path, dtype: Any, allow_pickle: bool = False) -> Any:
    """Only the transformer of an SD3 file, as a ``UNet`` (LoadUNet); VAE and encoders unread."""
    file = CheckpointFile(path, allow_pickle=allow_pickle)
    stored = stored_architecture(file)
    model = build_sd3_transformer(file.read(UNET_PREFIX, dtype), stored.get("unet"))
    vae = stored.get("vae")
    scale = 2 ** (len(vae["block_out_channels"]) - 1) if vae and "block_out_channels" in vae else 8
    return sd3_unet(model, path, scale)


def _sd3_clip(location: Path, part: str, dtype: Any, allow_pickle: bool) -> Any:
    """One of SD3's CLIP encoders (``part``: ``text_encoder`` for CLIP-L, ``text_encoder_2`` for
    CLIP-G) with its projection, from a transformers folder or a file as ComfyUI's
    ``text_encoders/`` holds them (transformers or OpenCLIP names). A file without a projection
    (CLIP-L as released) gets the identity, since SD3 takes CLIP-L's pooled output as it is."""
    import torch

    from nodes.single_file import detect, openclip_text_state

    folder = location if (location / "config.json").is_file() else location / part
    if (folder / "config.json").is_file():
        cls = hf.transformers().CLIPTextModelWithProjection
        model = cls.from_pretrained(folder, dtype=dtype, local_files_only=True)
        return model.eval().requires_grad_(False)
    file = CheckpointFile(location, allow_pickle=allow_pickle)
    found = detect(file)
    if found.kind != "text_encoder":
        raise ValueError(f"{location.name} is no CLIP text encoder ({found.describe()})")
    if found.layout == "openclip":
        state = openclip_text_state(file.read("", dtype), drop_last_layer=False)
    else:
        state = hf_text_state(file.read("", dtype))
    if "text_projection.weight" not in state:
        width = int(state["text_model.embeddings.token_embedding.weight"].shape[1])
        state["text_projection.weight"] = torch.eye(width, dtype=dtype)
    stored = stored_architecture(file).get(part)
    model = build_text_encoder(state, family_config("sd3", part), projection=True, stored=stored)
    return model.eval().requires_grad_(False)


def load_sd3_text_encoders(
    clip_l: Path, clip_g: Path, t5: Path, dtype: Any, allow_pickle: bool = False
) -> Any:
    """SD3's three text encoders from three files or folders (ComfyUI's TripleCLIPLoader:
    ``clip_l``, ``clip_g``, ``t5xxl``), as the ``TextEncoder`` an SD3 checkpoint carries: CLIP-L
    and CLIP-G with projections and the shipped CLIP tokenizers (CLIP-G pads with ``!``, as
    SD3's ``tokenizer_2``), T5 with the shipped T5 tokenizer, encoded by ``SD3Prompt``."""
    from nodes.flow_text import SD3Prompt
    from nodes.loaders import _load_t5
    from nodes.t5 import t5_tokenizer
    from nodes.types import TextEncoder

    model_l = _sd3_clip(clip_l, "text_encoder", dtype, allow_pickle)
    model_g = _sd3_clip(clip_g, "text_encoder_2", dtype, allow_pickle)
    model_3 = _load_t5(t5, dtype, allow_pickle)
    width_l, width_g = int(model_l.config.hidden_size), int(model_g.config.hidden_size)
    joint_width = int(model_3.config.d_model)
    if width_l + width_g > joint_width:
        raise ValueError(
            f"{clip_l.name} ({width_l} wide) and {clip_g.name} ({width_g} wide) together are "
            f"wider than {t5.name} ({joint_width}); SD3 takes CLIP-L, CLIP-G and T5-XXL"
        )
    return TextEncoder(
        clip_tokenizer(EOS_TOKEN),
        model_l,
        tokenizer_2=clip_tokenizer("!"),
        model_2=model_g,
        tokenizer_3=t5_tokenizer(),
        model_3=model_3,
        prompt_format=SD3Prompt(joint_width=joint_width),
        source=f"{clip_l} + {clip_g} + {t5}",
    )
