"""Sampling fixed prompts while a model trains, and the labelled grid of those samples.

The seed's advice for fine-tuning is to watch pictures, not the loss, and stop when the style
has arrived but the prompts are still followed. So a trainer samples the same prompts from the
same noise at every preview step, through the pack's own sampling loop (``nodes.denoise.sample``,
euler, CFG), and the grid puts the rows side by side: one row per step, one column per prompt.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import torch

from nodes.denoise import sample
from nodes.schedulers import make_scheduler
from nodes.text import encode_text
from nodes.types import VAE, Guider, Latent, TextEncoder, UNet
from nodes.vae import decode

PREVIEW_SCHEDULER = "euler"
PREVIEW_STEPS = 20
PREVIEW_CFG = 7.5
LABEL_WIDTH = 72
HEADER_HEIGHT = 34


def sample_prompts(
    unet: UNet, text_encoder: TextEncoder, vae: VAE, prompts: Sequence[str], size: int,
    seed: int, steps: int = PREVIEW_STEPS,
) -> torch.Tensor:  # fmt: skip
    """uint8 [prompts, size, size, 3]: each prompt drawn from seed ``seed`` (the same noise for
    every prompt and every call), with whatever patches the U-Net is running with."""
    device = unet.model.device
    negative = encode_text(text_encoder, "", device)
    recipe = make_scheduler(PREVIEW_SCHEDULER, unet.scheduler_config, steps)
    rows = []
    for prompt in prompts:
        guider = Guider(unet, encode_text(text_encoder, prompt, device), negative, PREVIEW_CFG)
        latents = sample(guider, recipe, Latent(None, size, size, 1), seed)
        pixels = decode(vae, Latent(latents, size, size, 1)).pixels
        rows.append((pixels[0] * 255).round().clamp(0, 255).to(torch.uint8))
    return torch.stack(rows)


def row_picture(row: torch.Tensor) -> Any:
    """One preview row as a PIL picture (what goes out as a preview event)."""
    from PIL import Image as PILImage

    return PILImage.fromarray(torch.cat(list(row), dim=1).numpy())


def labelled_grid(rows: torch.Tensor, steps: Sequence[int], prompts: Sequence[str]) -> Any:
    """A PIL grid: a header naming each prompt's column, a ``step N`` label on each row."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    count, columns, height, width = rows.shape[:4]
    grid = PILImage.new(
        "RGB", (LABEL_WIDTH + columns * width, HEADER_HEIGHT + count * height), "white"
    )
    draw = ImageDraw.Draw(grid)
    chars = max(6, width // 6)
    for column, prompt in enumerate(prompts):
        text = "\n".join(textwrap.wrap(prompt, chars)[:3])
        draw.multiline_text((LABEL_WIDTH + column * width + 2, 1), text, fill="black", spacing=0)
    for index in range(count):
        top = HEADER_HEIGHT + index * height
        draw.text((4, top + height // 2 - 6), f"step {steps[index]}", fill="black")
        for column in range(columns):
            picture = PILImage.fromarray(rows[index, column].numpy())
            grid.paste(picture, (LABEL_WIDTH + column * width, top))
    return grid
