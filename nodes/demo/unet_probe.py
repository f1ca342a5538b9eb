"""How much a caption's position words change the demo U-Net's first guess of the picture.

``text_probe`` asks whether the text encoder tells two captions apart; this asks whether the
U-Net then draws them differently where it matters for layout: from pure noise, at the first,
noisiest timesteps of sampling, where a shape's place is decided. For each noise and each pair of
captions differing only in the attribute, it compares the predicted clean latents
``x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)`` (relative norm of the difference). A model that draws
position as it draws colour moves its guess about as much for "left" vs "right" as for "red" vs
"green"; the v2 demo at step 500 moved its noise prediction 40 times less (TRAINING.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nodes.clip_vocab import MODEL_MAX_LENGTH, clip_tokenizer
from nodes.demo.dataset import POSITION_PHRASES
from nodes.demo.text_probe import COLOR_TEMPLATE, TEMPLATE

__all__ = ["folder_layout_response", "layout_response"]


@torch.no_grad()
def _x0_guesses(
    unet: Any, text_encoder: Any, alphas: torch.Tensor, captions: Sequence[str],
    timestep: int, noise: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """``[captions, noises, C, H, W]`` predicted clean latents from ``noise`` at ``timestep``."""
    tokenizer: Any = clip_tokenizer()
    ids = torch.tensor([
        tokenizer(text, padding="max_length", max_length=MODEL_MAX_LENGTH).input_ids
        for text in captions
    ])  # fmt: skip
    device = next(unet.parameters()).device
    context = text_encoder(ids.to(device))[0]
    a = alphas[timestep].to(device)
    guesses = []
    for states in context:
        batch = states[None].expand(noise.shape[0], -1, -1)
        t = torch.full((noise.shape[0],), timestep, device=device)
        eps = unet(noise.to(device), t, encoder_hidden_states=batch).sample
        guesses.append((noise.to(device) - (1 - a).sqrt() * eps) / a.sqrt())
    return torch.stack(guesses).float().cpu()


def _mean_pair_distance(guesses: torch.Tensor) -> float:
    distances = [
        float((guesses[i] - guesses[j]).flatten(1).norm(dim=1).div(
            guesses[i].flatten(1).norm(dim=1).clamp(min=1e-12)).mean())
        for i, j in itertools.combinations(range(guesses.shape[0]), 2)
    ]  # fmt: skip
    return sum(distances) / len(distances)


def layout_response(
    unet: Any,
    text_encoder: Any,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int] = (999, 900),
    noises: int = 8,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per timestep: ``{"position": d, "color": d, "ratio": position / color}``, ``d`` the mean
    relative distance between the x0 guesses for captions differing only in that attribute
    (the five position phrases; red vs green), over ``noises`` seeded noises (``x_t ~ N(0, 1)``,
    the sampler's start; at t = 900 the true x_t holds 0.12 of the picture, ignored here)."""
    channels = unet.config.in_channels
    size = unet.config.sample_size
    noise = torch.randn(noises, channels, size, size, generator=torch.Generator().manual_seed(seed))
    positions = [TEMPLATE.format(" " + phrase) for phrase in POSITION_PHRASES.values()]
    colors = [COLOR_TEMPLATE.format(color) for color in ("red", "green")]
    result: dict[str, dict[str, float]] = {}
    for timestep in timesteps:
        args = (unet, text_encoder, alphas_cumprod)
        position = _mean_pair_distance(_x0_guesses(*args, positions, timestep, noise))
        color = _mean_pair_distance(_x0_guesses(*args, colors, timestep, noise))
        ratio = position / color if color > 0 else float("nan")
        result[str(timestep)] = {"position": position, "color": color, "ratio": ratio}
    return result


def folder_layout_response(folder: Path, **kwargs: Any) -> dict[str, dict[str, float]]:
    """``layout_response`` of a saved demo diffusers folder (loaded in float32 on the CPU)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    return layout_response(unet.eval(), encoder.eval(), scheduler.alphas_cumprod, **kwargs)
