"""Tiny, randomly initialised rectified-flow models (SD3 / SD3.5 and Flux), built offline.

Like ``nodes.tiny`` for Stable Diffusion: every component is the real diffusers/transformers class
with a tiny config, saved as the real diffusers folder (``model_index.json``, ``transformer/``,
``text_encoder*/``, ``tokenizer*/``, ``vae/``, ``scheduler/``), so the loaders and the diffusers
pipelines read the same files users download. The CLIP tokenizers are the real CLIP BPE
(``nodes.clip_vocab``), the T5 tokenizer the real T5 vocabulary shipped in ``nodes/assets``; the
T5 encoder is a tiny T5 v1.1 (gated GELU) over that 32,128-row vocabulary.

Shapes follow the real models where code depends on them: 16 latent channels, a VAE with
``shift_factor`` and no quant convs, CLIP hidden states narrower than T5's (so the SD3 sequence
pads CLIP to T5's width), Flux's 2x2 packing (64 transformer input channels) and guidance
embedding. As in ``nodes.tiny`` the VAEs downsample by 2, not 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nodes.clip_vocab import write_clip_tokenizer
from nodes.single_file import family_config
from nodes.t5 import t5_tokenizer
from nodes.tiny import TEXT_HIDDEN_SIZE, _model_index, _seeded, _text_config, _write_json

__all__ = ["make_tiny_flux", "make_tiny_sd3"]

T5_WIDTH = 96
"""The tiny T5's width: wider than SD3's two CLIPs side by side (80), as 4096 is wider than 2048."""
CLIP_G_WIDTH = 48
"""SD3's OpenCLIP bigG is wider than its CLIP-L (1280 vs 768); so is the tiny one (48 vs 32), so
that nothing can mix the two up unnoticed."""
T5_VOCAB = 32128
"""T5 v1.1's embedding rows: the tokenizer's 32,100 tokens rounded up, as in the real model."""


def _tiny_t5() -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=T5_VOCAB,
        d_model=T5_WIDTH,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def _tiny_flow_vae(family: str) -> Any:
    """A two-block, 16-channel KL autoencoder with the family's real scaling and shift."""
    from diffusers import AutoencoderKL

    real = family_config(family, "vae")
    return AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=real["latent_channels"],
        norm_num_groups=32,
        scaling_factor=real["scaling_factor"],
        shift_factor=real["shift_factor"],
        use_quant_conv=real["use_quant_conv"],
        use_post_quant_conv=real["use_post_quant_conv"],
    )


def _write_scheduler(path: Path, family: str) -> list[str]:
    import diffusers

    config = family_config(family, "scheduler")
    cls = getattr(diffusers, config["_class_name"])
    cls.from_config(config).save_pretrained(path / "scheduler")
    return ["diffusers", config["_class_name"]]


def _write_t5(path: Path, encoder: str, tokenizer: str, seed: int) -> dict[str, list[str]]:
    with _seeded(seed):
        _tiny_t5().save_pretrained(path / encoder)
    t5_tokenizer().save_pretrained(path / tokenizer)
    return {
        encoder: ["transformers", "T5EncoderModel"],
        tokenizer: ["transformers", "T5TokenizerFast"],
    }


def make_tiny_sd3(
    path: str | Path, *, seed: int = 0, t5: bool = True, sd35: bool = False
) -> Path:
    """Write a tiny SD3-architecture diffusers folder (``StableDiffusion3Pipeline``).

    ``t5=False`` leaves T5 out (``text_encoder_3``/``tokenizer_3`` absent, as SD3 allows; the
    other weights are the same for the same ``seed``). ``sd35`` gives the transformer SD3.5
    Medium's additions: RMS qk-norm and MMDiT-X dual attention in its first block.
    """
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(path / "tokenizer")
    write_clip_tokenizer(path / "tokenizer_2", pad_token="!")
    extra: dict[str, Any] = {"qk_norm": "rms_norm", "dual_attention_layers": (0,)} if sd35 else {}
    with _seeded(seed):
        SD3Transformer2DModel(
            sample_size=32,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=T5_WIDTH,
            caption_projection_dim=32,
            pooled_projection_dim=TEXT_HIDDEN_SIZE + CLIP_G_WIDTH,
            pos_embed_max_size=32,
            **extra,
        ).save_pretrained(path / "transformer", safe_serialization=True)
    with _seeded(seed):
        _tiny_flow_vae("sd3").save_pretrained(path / "vae", safe_serialization=True)
    with _seeded(seed):
        clip_l = CLIPTextModelWithProjection(_text_config())
    # SD3 uses CLIP-L's pooled output as it is: its projection is the identity (single files
    # carry none, and loaders put the identity there)
    torch.nn.init.eye_(clip_l.text_projection.weight)
    clip_l.save_pretrained(path / "text_encoder")
    clip_g = _text_config(openclip=True, pad_token="!")
    clip_g.hidden_size = clip_g.projection_dim = CLIP_G_WIDTH
    with _seeded(seed + 1):
        CLIPTextModelWithProjection(clip_g).save_pretrained(path / "text_encoder_2")
    components: dict[str, Any] = {
        "scheduler": _write_scheduler(path, "sd3"),
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder_3": [None, None],
        "tokenizer_3": [None, None],
    }
    if t5:
        components |= _write_t5(path, "text_encoder_3", "tokenizer_3", seed + 2)
    _write_json(path / "model_index.json", _flow_index("StableDiffusion3Pipeline", components))
    return path


def make_tiny_flux(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Flux.1-dev-architecture diffusers folder (``FluxPipeline``): CLIP-L pooled
    and T5 conditioning, 2x2-packed latents, guidance embedding, resolution-dependent shift."""
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer(path / "tokenizer")
    with _seeded(seed):
        FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=T5_WIDTH,
            pooled_projection_dim=TEXT_HIDDEN_SIZE,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        ).save_pretrained(path / "transformer", safe_serialization=True)
    with _seeded(seed):
        _tiny_flow_vae("flux").save_pretrained(path / "vae", safe_serialization=True)
    with _seeded(seed):
        CLIPTextModel(_text_config()).save_pretrained(path / "text_encoder")
    components: dict[str, Any] = {
        "scheduler": _write_scheduler(path, "flux"),
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        **_write_t5(path, "text_encoder_2", "tokenizer_2", seed + 2),
    }
    _write_json(path / "model_index.json", _flow_index("FluxPipeline", components))
    return path


def _flow_index(pipeline: str, components: dict[str, Any]) -> dict[str, object]:
    index = _model_index(pipeline, components)
    for key in ("requires_safety_checker", "safety_checker"):  # SD 1.x/2.x pipelines only
        index.pop(key, None)
    return index
