"""A tiny, randomly initialised Stable Diffusion model, built offline in about a second.

Tests and examples need a model that goes through exactly the same code paths as a real Stable
Diffusion 1.x checkpoint (a diffusers folder with a UNet, a VAE, a CLIP text encoder, a CLIP
tokenizer and a PNDM scheduler) without downloading gigabytes of weights. ``make_tiny_sd`` builds
such a folder from scratch, with components about as small as the fixtures in diffusers' own test
suite. The weights are random, so the model draws noise, but every shape, config field and file
name is the real thing.

One deliberate difference from SD 1.x: the VAE has two blocks instead of four, so it downsamples
by 2, not 8. Code that hard-codes 8 breaks on this model, which is the point: the factor must be
read from the VAE config as ``2 ** (len(vae.config.block_out_channels) - 1)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from nodes.clip_vocab import BOS_TOKEN, EOS_TOKEN, MODEL_MAX_LENGTH, write_clip_tokenizer

__all__ = ["make_tiny_sd"]

# Stable Diffusion 1.5's scheduler config, so sampling code sees the real noise schedule.
# PNDMScheduler takes no `clip_sample`, but SD 1.5's config carries it and `from_config` keeps it,
# so that a scheduler built from this config (DDIM defaults to clipping) does not clip either.
SD15_SCHEDULER_CONFIG: dict[str, object] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
}

# The text encoder's width; the UNet's cross-attention layers must take vectors of the same size.
TEXT_HIDDEN_SIZE = 32


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


def _tiny_unet() -> UNet2DConditionModel:
    """An SD-1.x-shaped UNet with two resolution levels, the lower one with cross-attention."""
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        norm_num_groups=32,
    )


def _tiny_vae() -> AutoencoderKL:
    """A two-block KL autoencoder: 4 latent channels like SD 1.x, but a downsampling factor of 2."""
    return AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=32,
        scaling_factor=0.18215,
    )


def _tiny_text_encoder(vocab: dict[str, int]) -> CLIPTextModel:
    """A five-layer CLIP text encoder sized to ``vocab``, with its special-token ids.

    The ids matter beyond bookkeeping: ``CLIPTextModel`` pools the hidden state at the first
    ``eos_token_id`` in each sequence, unless ``eos_token_id == 2``, in which case it falls back to
    the legacy rule of pooling at the highest token id. Our ``<|endoftext|>`` has the highest id in
    the vocabulary (as in real CLIP), so both rules agree, but we rely on the real one.
    """
    eos_token_id = vocab[EOS_TOKEN]
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=TEXT_HIDDEN_SIZE,
        layer_norm_eps=1e-5,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,  # the tokenizer pads with <|endoftext|>, as SD 1.x does
    )
    return CLIPTextModel(config)


def _model_index() -> dict[str, object]:
    """The pipeline's ``model_index.json``, with the safety checker and image encoder left out.

    ``[null, null]`` marks an optional component as absent, so ``from_pretrained`` neither expects
    a folder for it nor asks for one to be passed in.
    """
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def make_tiny_sd(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Stable-Diffusion-architecture model as a diffusers folder at `path`.

    The folder has the layout of an SD 1.x checkpoint on the hub (``model_index.json`` and one
    subfolder per component, weights as fp32 safetensors), so it loads with
    ``StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None,
    requires_safety_checker=False)`` and each component loads on its own from its subfolder.

    Nothing is downloaded, and the same ``seed`` always gives byte-identical weight files, so tests
    can compare outputs across runs and machines. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    vocab = write_clip_tokenizer(path / "tokenizer")
    PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG).save_pretrained(path / "scheduler")

    with _seeded(seed):
        unet = _tiny_unet()
    unet.save_pretrained(path / "unet", safe_serialization=True)

    with _seeded(seed):
        vae = _tiny_vae()
    vae.save_pretrained(path / "vae", safe_serialization=True)

    with _seeded(seed):
        text_encoder = _tiny_text_encoder(vocab)
    # transformers always writes safetensors (since 4.35 by default, since 5.0 with no opt-out).
    text_encoder.save_pretrained(path / "text_encoder")

    with open(path / "model_index.json", "w", encoding="utf-8") as f:
        json.dump(_model_index(), f, indent=2, sort_keys=True)
        f.write("\n")
    return path
