"""Tiny, randomly initialised Stable Diffusion models (SD 1.x, SD 2.x v-prediction, SDXL), built
offline in about a second each.

Tests and examples need models that go through exactly the same code paths as real checkpoints
without downloading gigabytes. The factories here write diffusers folders with the real layout
(``model_index.json``, one subfolder per component, fp32 safetensors) and, through
``write_single_file``, the same weights as an original CompVis/SGM single-file checkpoint, so the
single-file loader is tested on the format users download. The weights are random, so the models
draw noise, but every key, config field and file name is the real thing.

Each tiny model follows the rules its real family follows wherever a loader must infer what a
single file does not record (attention heads, activation, tokenizer): SD 1.x U-Nets have 8 heads;
SD 2.x and SDXL U-Nets and all CLIP encoders have one head per 64 channels (at least one);
OpenCLIP encoders use GELU, CLIP ViT-L quick-GELU. All tokenizers are the real CLIP BPE tokenizer.

One deliberate difference from the real models: the VAEs have two blocks instead of four, so they
downsample by 2, not 8. Code that hard-codes 8 breaks on these models, which is the point: the
factor must be read from the VAE config as ``2 ** (len(vae.config.block_out_channels) - 1)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from nodes.clip_vocab import (
    BOS_TOKEN,
    EOS_TOKEN,
    MODEL_MAX_LENGTH,
    clip_vocab,
    write_clip_tokenizer,
)

__all__ = ["make_tiny_sd", "make_tiny_sd2", "make_tiny_sdxl", "write_single_file"]

CONFIGS = Path(__file__).parent / "configs"
TEXT_HIDDEN_SIZE = 32
"""The text encoders' width; the U-Net's cross-attention takes vectors of this size (two for XL)."""


def family_config(family: str, part: str) -> dict[str, Any]:
    """A shipped architecture config (``nodes/configs/<family>/<part>.json``)."""
    return json.loads((CONFIGS / family / f"{part}.json").read_text())


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Build fp32 modules on the CPU from a fixed seed, leaving the caller's RNG state untouched.

    Seeding before each component (rather than once for all) makes each component's weights depend
    only on ``seed`` and its own config. Forcing the CPU and fp32 keeps the weights identical even
    when the caller has changed torch's defaults: CUDA draws different random numbers, and casting
    afterwards would round them (diffusers also warns about casting a model with ``.to(dtype)``).
    """
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_default_dtype(default_dtype)


def _tiny_unet(family: str) -> UNet2DConditionModel:
    """A U-Net of ``family``'s shape with two resolution levels, the lower one with attention."""
    common: dict[str, Any] = {
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
    }
    if family == "sd1":
        return UNet2DConditionModel(
            **common, cross_attention_dim=TEXT_HIDDEN_SIZE, attention_head_dim=8
        )
    if family == "sd2":
        return UNet2DConditionModel(
            **common,
            cross_attention_dim=TEXT_HIDDEN_SIZE,
            attention_head_dim=(1, 1),
            use_linear_projection=True,
            upcast_attention=True,
        )
    time_dim = 8
    return UNet2DConditionModel(
        **common,
        cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
        attention_head_dim=(1, 1),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_HIDDEN_SIZE,
    )


def _tiny_vae(scaling_factor: float = 0.18215, force_upcast: bool = False) -> AutoencoderKL:
    """A two-block KL autoencoder: 4 latent channels like SD, but a downsampling factor of 2."""
    return AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=32,
        scaling_factor=scaling_factor,
        force_upcast=force_upcast,
    )


def _text_config(*, layers: int = 5, openclip: bool = False, pad_token: str = EOS_TOKEN) -> Any:
    """A small CLIP text config over the real 49,408-token vocabulary.

    The special-token ids matter beyond bookkeeping: ``CLIPTextModel`` pools the hidden state at
    the first ``eos_token_id`` in each sequence (unless ``eos_token_id == 2``, the legacy rule).
    """
    vocab = clip_vocab()
    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=37,
        num_attention_heads=max(1, TEXT_HIDDEN_SIZE // 64),
        num_hidden_layers=layers,
        max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=TEXT_HIDDEN_SIZE,
        hidden_act="gelu" if openclip else "quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[pad_token],
    )


def _model_index(pipeline: str, components: dict[str, list[str]]) -> dict[str, object]:
    """The pipeline's ``model_index.json``; ``[null, null]`` marks optional parts as absent."""
    return {
        "_class_name": pipeline,
        "_diffusers_version": diffusers.__version__,
        **components,
        **(
            {
                "feature_extractor": [None, None],
                "image_encoder": [None, None],
                "requires_safety_checker": False,
                "safety_checker": [None, None],
            }
            if pipeline != "StableDiffusionXLPipeline"
            else {"feature_extractor": [None, None], "image_encoder": [None, None]}
        ),
    }


def _write_json(path: Path, content: dict[str, object]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")


def _write_scheduler(path: Path, family: str) -> str:
    config = family_config(family, "scheduler")
    cls = getattr(diffusers, config["_class_name"])
    cls.from_config(config).save_pretrained(path / "scheduler")
    return str(config["_class_name"])


def _write_common(path: Path, family: str, seed: int, **vae_options: Any) -> dict[str, list[str]]:
    path.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(path / "tokenizer")
    scheduler = _write_scheduler(path, family)
    with _seeded(seed):
        _tiny_unet(family).save_pretrained(path / "unet", safe_serialization=True)
    with _seeded(seed):
        _tiny_vae(**vae_options).save_pretrained(path / "vae", safe_serialization=True)
    return {
        "scheduler": ["diffusers", scheduler],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def make_tiny_sd(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny SD-1.x-architecture model as a diffusers folder at ``path``.

    It loads with ``StableDiffusionPipeline.from_pretrained(path, local_files_only=True)`` and
    each component loads on its own from its subfolder. The same ``seed`` always gives
    byte-identical weight files. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    components = _write_common(path, "sd1", seed)
    with _seeded(seed):
        CLIPTextModel(_text_config()).save_pretrained(path / "text_encoder")
    components["text_encoder"] = ["transformers", "CLIPTextModel"]
    _write_json(path / "model_index.json", _model_index("StableDiffusionPipeline", components))
    return path


def _sd2_text_encoder(seed: int) -> CLIPTextModel:
    """The OpenCLIP-style encoder with all its layers; SD 2.x uses all but the last.

    The diffusers folder keeps only the layers SD 2.x uses (as the real one does, 23 of 24), while
    the single file keeps them all, as the original OpenCLIP checkpoint does.
    """
    with _seeded(seed):
        return CLIPTextModel(_text_config(layers=6, openclip=True, pad_token="!"))


def make_tiny_sd2(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny SD-2.x-architecture (v-prediction, OpenCLIP text encoder) diffusers folder."""
    path = Path(path)
    components = _write_common(path, "sd2", seed)
    write_clip_tokenizer(path / "tokenizer", pad_token="!")
    full = _sd2_text_encoder(seed)
    with _seeded(seed):
        used = CLIPTextModel(_text_config(layers=5, openclip=True, pad_token="!"))
    used.load_state_dict(full.state_dict(), strict=False)
    used.save_pretrained(path / "text_encoder")
    components["text_encoder"] = ["transformers", "CLIPTextModel"]
    _write_json(path / "model_index.json", _model_index("StableDiffusionPipeline", components))
    return path


def make_tiny_sdxl(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny SDXL-architecture diffusers folder: two text encoders, size conditioning."""
    path = Path(path)
    components = _write_common(path, "sdxl", seed, scaling_factor=0.13025, force_upcast=True)
    write_clip_tokenizer(path / "tokenizer_2", pad_token="!")
    with _seeded(seed):
        CLIPTextModel(_text_config()).save_pretrained(path / "text_encoder")
    with _seeded(seed + 1):
        CLIPTextModelWithProjection(_text_config(openclip=True, pad_token="!")).save_pretrained(
            path / "text_encoder_2"
        )
    components |= {
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "force_zeros_for_empty_prompt": True,
    }
    _write_json(path / "model_index.json", _model_index("StableDiffusionXLPipeline", components))
    return path


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (file,) = folder.glob("*.safetensors")
    return load_file(file)


def _schedule_buffers(folder: Path) -> dict[str, torch.Tensor]:
    """The noise-schedule buffers original checkpoints carry (loaders must ignore them)."""
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    betas = (
        torch.linspace(
            config["beta_start"] ** 0.5,
            config["beta_end"] ** 0.5,
            config["num_train_timesteps"],
            dtype=torch.float64,
        )
        ** 2
    ).float()
    return {"betas": betas, "alphas_cumprod": torch.cumprod(1 - betas, dim=0)}


def write_single_file(
    folder: str | Path, out: str | Path, *, seed: int = 0, architecture: bool = False
) -> Path:
    """Write a tiny model folder as an original (CompVis / SGM layout) single-file checkpoint.

    The key layout is that of the files on model sites: the U-Net under ``model.diffusion_model.``,
    the VAE under ``first_stage_model.``, and the text encoders under ``cond_stage_model.`` (SD 1.x:
    transformers layout; SD 2.x: OpenCLIP layout) or ``conditioner.embedders.N.`` (SDXL).

    Such files carry weights only, so a loader takes what shapes cannot tell from the family's
    config. ``architecture`` also stores each component's ``config.json`` in the metadata key
    ``nodeflow.architecture``, for models (like the trained demo) whose norm groups, heads or
    latent scaling differ from their family's; off by default so the tiny files keep testing the
    derivation from shapes.
    """
    from nodes.ldm_layout import hf_to_openclip, unet_to_ldm, vae_to_ldm
    from nodes.single_file import ARCHITECTURE_KEY, hf_text_state

    folder, out = Path(folder), Path(out)
    index = json.loads((folder / "model_index.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(_load_state(folder / "unet")).items():
        state[f"model.diffusion_model.{key}"] = value
    for key, value in vae_to_ldm(_load_state(folder / "vae")).items():
        state[f"first_stage_model.{key}"] = value
    text = hf_text_state(_load_state(folder / "text_encoder"))
    if index["_class_name"] == "StableDiffusionXLPipeline":
        for key, value in text.items():
            state[f"conditioner.embedders.0.transformer.{key}"] = value
        text_2 = hf_text_state(_load_state(folder / "text_encoder_2"))
        for key, value in hf_to_openclip(text_2).items():
            state[f"conditioner.embedders.1.model.{key}"] = value
    elif json.loads((folder / "text_encoder" / "config.json").read_text())["hidden_act"] == "gelu":
        full = hf_text_state(_sd2_text_encoder(seed).state_dict())
        if any(not torch.equal(full[key], value) for key, value in text.items()):
            raise ValueError(f"{folder} is not a tiny SD 2 model made with seed {seed}")
        with _seeded(seed + 2):
            full["text_projection.weight"] = torch.randn(TEXT_HIDDEN_SIZE, TEXT_HIDDEN_SIZE)
        for key, value in hf_to_openclip(full).items():
            state[f"cond_stage_model.model.{key}"] = value
    else:
        for key, value in text.items():
            state[f"cond_stage_model.transformer.{key}"] = value
    state |= _schedule_buffers(folder)
    metadata = {"format": "pt"}
    if architecture:
        parts = ["unet", "vae", "text_encoder"]
        if index["_class_name"] == "StableDiffusionXLPipeline":
            parts.append("text_encoder_2")
        metadata[ARCHITECTURE_KEY] = json.dumps(
            {part: _component_config(folder / part) for part in parts}, sort_keys=True
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out, metadata=metadata)
    return out


def _component_config(folder: Path) -> dict[str, Any]:
    """A component's ``config.json`` without its bookkeeping (``_class_name``, versions)."""
    config = json.loads((folder / "config.json").read_text())
    return {key: value for key, value in config.items() if not key.startswith("_")}
