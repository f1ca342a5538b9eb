"""Blending image embeddings: DALL-E 2's interpolation between two pictures (or prompts).

DALL-E 2 (Ramesh et al. 2022, section 3.2) blends two images by spherical interpolation of their
CLIP image embeddings: CLIP embeddings live near a sphere, so the straight line between two of them
cuts through the inside, where no picture's embedding is, while the arc stays among them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from nodeflow import node
from nodes.types import ImageEmbeds

PARALLEL = 0.9995
"""Above this cosine the arc is a line to float precision (and sin(angle) ~ 0): interpolate
linearly there."""


def slerp(a: Any, b: Any, weight: float) -> Any:
    """Spherical interpolation, row by row, from ``a`` (weight 0) to ``b`` (weight 1).

    The angle comes from the directions; the vectors themselves are combined, so norms blend
    smoothly too. A batch of one is paired with every row of the other.
    """
    import torch

    a, b = torch.broadcast_tensors(a, b)
    high = torch.float64 if a.dtype == torch.float64 else torch.float32
    x, y = a.to(high), b.to(high)
    cosine = torch.nn.functional.cosine_similarity(x, y, dim=-1).clamp(-1, 1).unsqueeze(-1)
    angle = torch.arccos(cosine)
    sin = torch.sin(angle)
    near = cosine.abs() > PARALLEL
    safe = torch.where(near, torch.ones_like(sin), sin)
    w0 = torch.where(near, 1 - weight, torch.sin((1 - weight) * angle) / safe)
    w1 = torch.where(near, torch.full_like(sin, weight), torch.sin(weight * angle) / safe)
    return (w0 * x + w1 * y).to(a.dtype)


@node("BlendEmbeds", category="conditioning")
def blend_embeds(
    a: ImageEmbeds, b: ImageEmbeds, weight: Annotated[float, Field(ge=0, le=1)] = 0.5
) -> ImageEmbeds:
    """Blend two image embeddings along the sphere (0 = all ``a``, 1 = all ``b``), as DALL-E 2
    blends two pictures."""
    if a.embeds.shape[-1] != b.embeds.shape[-1]:
        raise ValueError(
            f"embeddings of width {a.embeds.shape[-1]} and {b.embeds.shape[-1]} cannot be blended;"
            " make both with the same model"
        )
    if a.batch_size != b.batch_size and 1 not in (a.batch_size, b.batch_size):
        raise ValueError(f"batches of {a.batch_size} and {b.batch_size} cannot be paired")
    return ImageEmbeds(slerp(a.embeds, b.embeds.to(a.embeds), weight))
