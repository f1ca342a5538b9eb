"""Loading rectified-flow transformer models (SD3 / SD3.5, Flux) from diffusers folders, offline.

A diffusers folder with a ``transformer/`` instead of a ``unet/`` is one of these; the
transformer config's class tells which, and chooses the family adapter the ``UNet`` value carries
(``nodes.families``) and the prompt format its ``TextEncoder`` carries (``nodes.flow_text``).
SD3 has CLIP-L, CLIP-G (both with projection) and, optionally, T5 (``text_encoder_3``); Flux has
CLIP-L and T5 (``text_encoder_2``). The T5 tokenizer comes from the folder, else the shipped one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodes import hf
from nodes.families.flux import FluxTransformer
from nodes.families.sd3 import SD3Transformer
from nodes.flow_text import FluxPrompt, SD3Prompt
from nodes.t5 import t5_tokenizer_in
from nodes.types import VAE, TextEncoder, UNet

TRANSFORMERS = ("SD3Transformer2DModel", "FluxTransformer2DModel")


def is_transformer_folder(folder: Path) -> bool:
    """A diffusers model folder whose denoiser is a transformer (``transformer/config.json``)."""
    return (folder / "transformer" / "config.json").is_file()


def _transformer_class(folder: Path) -> str:
    config = json.loads((folder / "transformer" / "config.json").read_text())
    name = str(config.get("_class_name", ""))
    if name not in TRANSFORMERS:
        raise ValueError(
            f"{folder}: transformer {name or '(unnamed)'} is not one nodeflow runs "
            f"(it runs {', '.join(TRANSFORMERS)})"
        )
    return name


def _eval(model: Any) -> Any:
    return model.eval().requires_grad_(False)


def _clip(folder: Path, cls_name: str, dtype: Any) -> Any:
    cls = getattr(hf.transformers(), cls_name)
    return _eval(cls.from_pretrained(folder, dtype=dtype, local_files_only=True))


def _clip_tokenizer(folder: Path) -> Any:
    return hf.transformers().CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _t5(folder: Path, dtype: Any) -> Any:
    cls = hf.transformers().T5EncoderModel
    return _eval(cls.from_pretrained(folder, dtype=dtype, local_files_only=True))


def _present(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def load_transformer_folder(folder: Path, dtype: Any) -> tuple[UNet, TextEncoder, VAE]:
    """(denoiser, text encoders, VAE) of an SD3 or Flux diffusers folder."""
    from nodes.loaders import _autoencoder_folder, quiet_hub_libraries

    diffusers = hf.diffusers()
    kind = _transformer_class(folder)
    quiet_hub_libraries()
    model = _eval(
        getattr(diffusers, kind).from_pretrained(
            folder, subfolder="transformer", torch_dtype=dtype, local_files_only=True
        )
    )
    vae = VAE(_autoencoder_folder(folder / "vae", dtype), source=str(folder))
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if kind == "SD3Transformer2DModel":
        family: Any = SD3Transformer()
        text_encoder = TextEncoder(
            _clip_tokenizer(folder / "tokenizer"),
            _clip(folder / "text_encoder", "CLIPTextModelWithProjection", dtype),
            tokenizer_2=_clip_tokenizer(folder / "tokenizer_2"),
            model_2=_clip(folder / "text_encoder_2", "CLIPTextModelWithProjection", dtype),
            tokenizer_3=t5_tokenizer_in(folder / "tokenizer_3"),
            model_3=_t5(folder / "text_encoder_3", dtype)
            if _present(folder / "text_encoder_3")
            else None,
            prompt_format=SD3Prompt(joint_width=int(model.config.joint_attention_dim)),
            source=str(folder),
        )
    else:
        family = FluxTransformer(guidance_embedded=bool(model.config.guidance_embeds))
        text_encoder = TextEncoder(
            _clip_tokenizer(folder / "tokenizer"),
            _clip(folder / "text_encoder", "CLIPTextModel", dtype),
            tokenizer_3=t5_tokenizer_in(folder / "tokenizer_2"),
            model_3=_t5(folder / "text_encoder_2", dtype),
            prompt_format=FluxPrompt(),
            source=str(folder),
        )
    unet = UNet(
        model,
        scheduler_config,
        latent_scale=vae.scale_factor,
        source=str(folder),
        family=family,
    )
    return unet, text_encoder, vae
