"""Pixel-space denoisers: a ``UNet2DModel`` whose "latent" is the picture itself.

DDPM (Ho et al., 2020), DDIM and consistency models (Song et al., 2023) were released as
pixel-space models: no VAE, the sample is the image in [-1, 1] with 3 channels, and the model is
conditioned on nothing or on a class index (``num_class_embeds``). The loader gives such a model
latent scale 1, so EmptyLatent sizes it in pixels and Denoise runs it unchanged; ``LatentToImage``
turns the result into a picture as the pipelines do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodes.families.base import Family
from nodes.families.batching import cat

if TYPE_CHECKING:
    from nodes.types import Conditioning, Guider, UNet


def class_count(unet: UNet) -> int | None:
    """How many classes the model is conditioned on; ``None`` for an unconditional model."""
    count = getattr(unet.model.config, "num_class_embeds", None)
    return None if count is None else int(count)


class PixelUNet(Family):
    """``UNet2DModel`` called as ``model(sample, timestep, class_labels=...)``."""

    name = "pixel-unet"

    def check_conditioning(self, unet: UNet, conditioning: Conditioning, name: str) -> None:
        if conditioning.embeds is not None or conditioning.image_embeds is not None:
            raise ValueError(
                f"{name}: this pixel-space model takes no prompt or image embeddings; "
                "condition it with ClassLabel (class-conditional) or Unconditional"
            )
        classes = class_count(unet)
        labels = conditioning.class_labels
        if classes is None:
            if labels is not None:
                raise ValueError(
                    f"{name}: this pixel-space model is unconditional; use Unconditional, "
                    "not ClassLabel"
                )
            return
        if labels is None:
            raise ValueError(
                f"{name}: this pixel-space model is class-conditional ({classes} classes); "
                "give it a ClassLabel"
            )
        if int(labels.min()) < 0 or int(labels.max()) >= classes:
            raise ValueError(
                f"{name}: class {int(labels.max())} is out of range; this model has classes "
                f"0 to {classes - 1}"
            )

    def model_inputs(
        self, guider: Guider, conditionings: list[Conditioning], latents: Any
    ) -> dict[str, Any]:
        if class_count(guider.unet) is None:
            return {}
        labels = cat([c.class_labels for c in conditionings], int(latents.shape[0]))
        return {"class_labels": labels.to(latents.device)}
