"""Tiny, randomly initialised unCLIP models: a Kandinsky 2.2 prior, a Kandinsky 2.2 decoder with its
MoVQ autoencoder, and a Stable unCLIP model, each written as the real diffusers folder.

They exist for the same reason as ``nodes.tiny``: tests and the example workflows need models that
go through exactly the code real ones do, without downloads. The pipelines themselves write the
folders (``save_pretrained``), so ``model_index.json`` and every subfolder are what diffusers
expects, and ``KandinskyV22PriorPipeline``, ``KandinskyV22Pipeline`` and ``StableUnCLIPPipeline``
load them with ``local_files_only=True``. All CLIP encoders use the real 49,408-token tokenizer.

The CLIP embedding (text projection, image projection, prior) is ``TEXT_HIDDEN_SIZE`` wide, so
text, prior and image embeddings all live in one space, as in real unCLIP models. Parameters that
a freshly built model sets to constants (the prior's CLIP mean/std, the Stable unCLIP embedding
normaliser) are randomised: with their zero/one defaults, a mistake in applying them would go
unnoticed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from nodes.clip_vocab import EOS_TOKEN, clip_tokenizer, write_clip_tokenizer
from nodes.tiny import TEXT_HIDDEN_SIZE, _seeded, _text_config, _tiny_vae, family_config

__all__ = ["make_tiny_kandinsky_decoder", "make_tiny_kandinsky_prior", "make_tiny_stable_unclip"]

EMBED_DIM = TEXT_HIDDEN_SIZE
"""The CLIP embedding width shared by the text projection, the image projection and the prior."""
VISION_IMAGE_SIZE = 32
"""The tiny image encoder's input size (real CLIP ViT: 224); pictures are resized to it."""
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _quiet(pipeline: Any) -> Any:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _tiny_prior() -> Any:
    from diffusers import PriorTransformer

    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=12, embedding_dim=EMBED_DIM, num_layers=1
    )
    with torch.no_grad():  # real priors un-normalise with CLIP's statistics, never 0 and 1
        prior.clip_mean.copy_(0.1 * torch.randn_like(prior.clip_mean))
        prior.clip_std.copy_(0.5 + torch.rand_like(prior.clip_std))
    return prior


def _tiny_image_encoder() -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=EMBED_DIM,
        intermediate_size=37,
        num_attention_heads=1,
        num_hidden_layers=2,
        image_size=VISION_IMAGE_SIZE,
        patch_size=8,
        projection_dim=EMBED_DIM,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    return CLIPVisionModelWithProjection(config)


def tiny_image_processor() -> Any:
    """CLIP's preprocessing (bicubic resize of the short side, centre crop, CLIP normalisation),
    built with explicit settings rather than fetched, at the tiny encoder's input size."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": VISION_IMAGE_SIZE},
        resample=3,
        do_center_crop=True,
        crop_size={"height": VISION_IMAGE_SIZE, "width": VISION_IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )


def make_tiny_kandinsky_prior(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Kandinsky 2.2 prior folder (``KandinskyV22PriorPipeline`` layout): prior,
    CLIP text encoder with projection, CLIP image encoder with projection, tokenizer, UnCLIP
    scheduler and image processor."""
    from diffusers import KandinskyV22PriorPipeline, UnCLIPScheduler
    from transformers import CLIPTextModelWithProjection

    path = Path(path)
    with _seeded(seed):
        prior = _tiny_prior()
    with _seeded(seed + 1):
        text_encoder = CLIPTextModelWithProjection(_text_config())
    with _seeded(seed + 2):
        image_encoder = _tiny_image_encoder()
    scheduler = UnCLIPScheduler(
        variance_type="fixed_small_log",
        prediction_type="sample",
        num_train_timesteps=1000,
        clip_sample=True,
        clip_sample_range=10.0,
    )
    pipeline = KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        scheduler=scheduler,
        image_processor=tiny_image_processor(),
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    _write_tokenizers(path, {"tokenizer": EOS_TOKEN})
    _name_processor_as_released(path)
    return path


def _write_tokenizers(path: Path, pads: dict[str, str]) -> None:
    """Tokenizer folders as released (``vocab.json``, ``merges.txt``), not as transformers 5
    saves them (``tokenizer.json`` only), so loaders are tested on what users download."""
    for name, pad in pads.items():
        shutil.rmtree(path / name)
        write_clip_tokenizer(path / name, pad_token=pad)


def _name_processor_as_released(path: Path) -> None:
    """Without torchvision, transformers saves the processor under its PIL class name; released
    folders say ``CLIPImageProcessor`` (which loads either way), so write that."""
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text())
    index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def _tiny_kandinsky_unet() -> Any:
    """A Kandinsky 2.2 decoder U-Net: conditioned on an image embedding only (projected to
    cross-attention tokens and added to the time embedding), predicting noise and variance."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=8,
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=EMBED_DIM,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=EMBED_DIM,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    )


def _tiny_movq() -> Any:
    """A two-block MoVQ (VQ autoencoder with spatial norm): downsampling factor 2, like the tiny
    KL VAEs, so code that hard-codes real MoVQ's 8 breaks here."""
    from diffusers import VQModel

    return VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )


def kandinsky_decoder_scheduler() -> Any:
    """DDPM with a learned variance range: the decoder's second half of output channels is used."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type="epsilon",
        variance_type="learned_range",
        steps_offset=1,
        timestep_spacing="leading",
    )


def make_tiny_kandinsky_decoder(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Kandinsky 2.2 decoder folder (``KandinskyV22Pipeline`` layout): U-Net,
    scheduler and MoVQ."""
    from diffusers import KandinskyV22Pipeline

    path = Path(path)
    with _seeded(seed + 3):
        unet = _tiny_kandinsky_unet()
    with _seeded(seed + 4):
        movq = _tiny_movq()
    pipeline = KandinskyV22Pipeline(unet=unet, scheduler=kandinsky_decoder_scheduler(), movq=movq)
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def _tiny_unclip_unet() -> Any:
    """An SD-2-style U-Net that also takes a class embedding: the noise-augmented image embedding
    side by side with the sinusoidal embedding of its noise level."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        attention_head_dim=(1, 1),
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * EMBED_DIM,
        cross_attention_dim=TEXT_HIDDEN_SIZE,
        layers_per_block=1,
        upcast_attention=True,
        use_linear_projection=True,
        norm_num_groups=32,
    )


def make_tiny_stable_unclip(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Stable unCLIP (text-to-image) folder (``StableUnCLIPPipeline`` layout): the
    prior's components (``prior_*``), the image-embedding noiser, and an SD 2.x-style decoder."""
    from diffusers import DDIMScheduler, DDPMScheduler, StableUnCLIPPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    with _seeded(seed):
        prior = _tiny_prior()
    with _seeded(seed + 1):
        prior_text_encoder = CLIPTextModelWithProjection(_text_config())
    with _seeded(seed + 2):
        normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM)
        with torch.no_grad():
            normalizer.mean.copy_(0.1 * torch.randn_like(normalizer.mean))
            normalizer.std.copy_(0.5 + torch.rand_like(normalizer.std))
    with _seeded(seed + 3):
        text_encoder = CLIPTextModel(_text_config(layers=5, openclip=True, pad_token="!"))
    with _seeded(seed + 4):
        unet = _tiny_unclip_unet()
    with _seeded(seed + 5):
        vae = _tiny_vae()
    pipeline = StableUnCLIPPipeline(
        prior_tokenizer=clip_tokenizer(),
        prior_text_encoder=prior_text_encoder,
        prior=prior,
        prior_scheduler=DDPMScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            num_train_timesteps=1000,
            clip_sample=True,
            clip_sample_range=5.0,
            beta_schedule="squaredcos_cap_v2",
        ),
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=clip_tokenizer("!"),
        text_encoder=text_encoder,
        unet=unet,
        scheduler=DDIMScheduler.from_config(family_config("sd2", "scheduler")),
        vae=vae,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    _write_tokenizers(path, {"prior_tokenizer": EOS_TOKEN, "tokenizer": "!"})
    return path
