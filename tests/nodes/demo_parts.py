"""The shipped demo model's parts and a direct sampler, for the attention and p2p tests.

The tests call ``nodes.denoise.sample`` on guiders they build, so two computations that must be
bit-identical differ only in what the test changes (a patch, a prompt), nothing else.
"""

from __future__ import annotations

from typing import Any

import torch

from nodes.attention import Sampling
from nodes.denoise import sample
from nodes.loaders import _load_diffusers_folder, demo_model
from nodes.schedulers import make_scheduler
from nodes.text import encode_text
from nodes.types import Conditioning, Guider, Latent, UNet

STEPS = 10
SOURCE = "a large red circle on a blue background"
EDIT = "a large green circle on a blue background"


def load_demo() -> Any:
    """(unet, text_encoder, vae) of the shipped demo model, fp32 on the CPU."""
    return _load_diffusers_folder(demo_model(), torch.float32, "auto")


def encode(parts: Any, *texts: str) -> Conditioning:
    """The prompts' conditioning as one batch (one prompt: TextEncode's result)."""
    encoded = [encode_text(parts.text_encoder, t, None) for t in texts]
    return Conditioning(embeds=torch.cat([c.embeds for c in encoded]))


def generate(
    parts: Any,
    positive: Conditioning,
    unet: UNet | None = None,
    *,
    seed: int = 1,
    steps: int = STEPS,
    batch: int = 1,
    sampling: Sampling | None = None,
) -> torch.Tensor:
    """Latents from ``sample`` with CFG 7.5, negative "", euler ``steps``, a 64x64 latent."""
    unet = unet or parts.unet
    guider = Guider(unet=unet, positive=positive, negative=encode(parts, ""), scale=7.5)
    recipe = make_scheduler("euler", unet.scheduler_config, steps, "default", False)
    latent = Latent(samples=None, width=64, height=64, batch_size=batch)
    return sample(guider, recipe, latent, seed, sampling=sampling)


def decode(parts: Any, latents: torch.Tensor) -> torch.Tensor:
    """Pictures [batch, 64, 64, 3] in 0..1."""
    from nodes.vae import decode as vae_decode

    return vae_decode(parts.vae, Latent(latents, 64, 64, latents.shape[0])).pixels
