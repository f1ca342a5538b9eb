"""A cheap look at latents while they denoise: a linear projection to RGB, no VAE decode.

The factors are the well-known least-squares fit from Stable Diffusion 1.x latents to RGB (also
used by ComfyUI and A1111 for their live previews). Other channel counts fall back to showing
the first three channels.
"""

from __future__ import annotations

from typing import Any

SD_LATENT_RGB = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]


def latent_preview(latents: Any) -> Any:
    """A PIL image (the batch's first picture) at latent resolution."""
    import torch
    from PIL import Image

    sample = latents[0].detach().float().cpu()
    if sample.shape[0] == len(SD_LATENT_RGB):
        rgb = torch.einsum("chw,cr->hwr", sample, torch.tensor(SD_LATENT_RGB))
    else:
        rgb = sample[:3].permute(1, 2, 0) / 4
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")
