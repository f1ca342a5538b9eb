"""Empty latents: a picture size and a batch, before any model has said what shape it needs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodeflow import node
from nodes.types import Latent

Size = Annotated[int, Field(ge=8, le=8192, multiple_of=8)]


@node("EmptyLatent", category="latent", aliases=("EmptyLatentImage",))
def empty_latent(
    width: Size = 512,
    height: Size = 512,
    batch_size: Annotated[int, Field(ge=1, le=64)] = 1,
) -> Latent:
    """A blank latent of the given picture size; Denoise fills it with seeded noise."""
    return Latent(samples=None, width=width, height=height, batch_size=batch_size)
